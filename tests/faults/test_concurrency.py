"""Four `fresh --yes` at once on the same server: all succeed (queueing behind the lock with a
'waiting for' message), the final databases are complete, and nothing is left behind.

Round 1 starts from nothing (the four race to create the container); round 2 rebuilds with
--no-cache over existing databases, so the four really build and swap one after another.
"""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = [pytest.mark.faults, pytest.mark.integration]

RUNS = 4


def _race(faults: Any, project: Any, *args: str) -> list[tuple[int | None, str, str]]:
    procs = [faults.popen(project.path, "fresh", "--yes", *args) for _ in range(RUNS)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        results.append((proc.returncode, out, err))
    return results


def _check_final_state(faults: Any, project: Any) -> None:
    for db in ("chatbi", "chatbi_demo"):
        assert faults.classify(project, db) == "new"
    assert faults.leftovers(project) == [], "staging or old copies were left behind"


def test_four_fresh_runs_at_once(make_project: Any, faults: Any, tally: Any) -> None:
    project = make_project()

    cold = _race(faults, project)
    for result in cold:
        assert result[0] == 0, faults.describe(result)
        assert "Traceback" not in result[2]
    created = sum("created container" in out for _, out, _ in cold)
    assert created == 1, f"{created} runs say they created the container"
    _check_final_state(faults, project)

    for db in ("chatbi", "chatbi_demo"):
        faults.insert_marker(project, db)
    warm = _race(faults, project, "--no-cache")
    for result in warm:
        assert result[0] == 0, faults.describe(result)
        assert "Traceback" not in result[2]
    _check_final_state(faults, project)

    waited = sum("waiting for" in err for _, _, err in cold + warm)
    tally.concurrent_runs += len(cold) + len(warm)
    tally.concurrent_waited += waited
    # Each round holds the lock for a second or more, so some runs must have queued, and said so.
    assert waited >= 1, "no run reported waiting for the lock"
