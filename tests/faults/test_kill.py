"""kill -9 during `fresh`: at every checkpoint, and at random times.

One server serves the whole module. Before each kill, a marker row goes into every database in
place (the "old" copy); the killed run rebuilds them for real. Afterwards each database must exist
and be complete: either the old one (marker present) or the new one (marker absent), never missing
or half-built; when several databases are rebuilt, all are old or all are new (one swap). Then a
plain `fresh --yes` must succeed and leave no staging (`__stage_`) or swapped-out (`__old_`) copies.

Variants, on the same server:
- solo/nocache:  only chatbi, `--no-cache` (a real build; housekeeping only drops old copies);
- solo/changed:  only chatbi, its SQL changed since the last run (a real build, then housekeeping
                 builds the new template and spare: every checkpoint is reached);
- solo/cached:   only chatbi, SQL unchanged (the spare copy is taken; housekeeping re-clones one);
- pair/changed:  chatbi and chatbi_demo together, SQL changed;
- solo-bg:       `cleanup: background`, killed inside the detached `_housekeep` process (which
                 inherits PROVISION_KILL_AT) after the run itself has swapped and exited 0;
- random:        both databases, SQL changed, SIGKILL after a seeded-random delay.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import time
from dataclasses import dataclass
from typing import Any

import pytest

from provision.config import CHATBI_TABLES, DEMO_TABLES, builtin_sql_dir

pytestmark = [pytest.mark.faults, pytest.mark.integration]

CHECKPOINTS = (
    "stage-created",
    "sql-loaded",
    "stamped",
    "template-frozen",  # a synchronous run templates its new copy before the swap
    "before-swap",
    "swapped",
    "housekeeping-leftovers-dropped",
    "template-built",
    "spare-created",
)
# Killed at these, the swap has not happened: the old databases must still be in place.
BEFORE_SWAP = frozenset(CHECKPOINTS[:5])
AFTER_SWAP = CHECKPOINTS[5:]
REACHABLE = {
    # --no-cache: no template, no spare
    "nocache": ("stage-created", "sql-loaded", "stamped", "before-swap", *AFTER_SWAP[:2]),
    "changed": CHECKPOINTS,
    # The spare is taken: nothing is built before the swap, and the template already exists.
    "cached": ("before-swap", *AFTER_SWAP),
}
CASES = (
    [("solo", "nocache", cp) for cp in REACHABLE["nocache"]]
    + [("solo", "changed", cp) for cp in REACHABLE["changed"]]
    + [("solo", "cached", cp) for cp in REACHABLE["cached"]]
    + [("pair", "changed", cp) for cp in REACHABLE["changed"]]
)
RANDOM_SEED = 6
RANDOM_KILLS = 3


@dataclass
class KillBench:
    project: Any
    solo: Any  # config path: chatbi only
    pair: Any  # config path: chatbi and chatbi_demo
    solo_bg: Any  # config path: chatbi only, housekeeping in a detached process
    generation: int = 0
    clean: bool = False

    def databases(self, layout: str) -> list[str]:
        return ["chatbi", "chatbi_demo"] if layout == "pair" else ["chatbi"]

    def config(self, layout: str) -> Any:
        return {"solo": self.solo, "pair": self.pair, "solo-bg": self.solo_bg}[layout]

    def change_sql(self) -> None:
        """Give both SQL sources new content (a comment), so their content hash, and template, are new."""
        self.generation += 1
        src = builtin_sql_dir()
        for name, builtin in (("chatbi.sql", "chatbi/init_app_tables.sql"), ("demo.sql", "chatbi_demo/demo_data.sql")):
            text = (src / builtin).read_text(encoding="utf-8")
            (self.project.dir / name).write_text(text + f"\n-- fault-injection generation {self.generation}\n")


def _databases_yaml(with_demo: bool) -> dict[str, Any]:
    dbs: dict[str, Any] = {
        "chatbi": {"sql": "chatbi.sql", "alembic_revision": "0001_initial_schema", "tables": list(CHATBI_TABLES)}
    }
    if with_demo:
        dbs["chatbi_demo"] = {"sql": "demo.sql", "tables": list(DEMO_TABLES), "demo": True}
    return dbs


HOOK_REJECTED = (
    "provision rejects its own fault-injection hook: PROVISION_KILL_AT is refused as an unknown "
    "environment variable (provision/config.py, _ENV_OTHER), so no kill can be injected"
)


def _hook_accepted(faults: Any, config: Any) -> tuple[bool, str]:
    result = faults.run(config, "fresh", "--dry-run", env={"PROVISION_KILL_AT": "stage-created"})
    return result.returncode == 0, faults.describe(result)


def test_kill_hook_is_not_a_config_error(shared_project: Any, faults: Any) -> None:
    """PROVISION_KILL_AT belongs to provision (like PROVISION_DEBUG): setting it must not be a config error."""
    project = shared_project()
    accepted, detail = _hook_accepted(faults, project.path)
    assert accepted, HOOK_REJECTED + "\n" + detail


@pytest.fixture(scope="module")
def bench(shared_project: Any, faults: Any) -> KillBench:
    project = shared_project(databases=_databases_yaml(with_demo=True))
    solo = project.dir / "solo.yaml"
    type(project)(solo, project.name, dict(project.data)).write(databases=_databases_yaml(with_demo=False))
    solo_bg = project.dir / "solo-background.yaml"
    type(project)(solo_bg, project.name, dict(project.data)).write(
        databases=_databases_yaml(with_demo=False), cleanup="background"
    )
    kb = KillBench(project, solo, project.path, solo_bg)
    kb.change_sql()
    accepted, detail = _hook_accepted(faults, kb.pair)
    if not accepted:
        pytest.fail(HOOK_REJECTED + "\n" + detail, pytrace=False)
    result = faults.run(kb.pair, "fresh", "--yes")
    assert result.returncode == 0, faults.describe(result)
    kb.clean = True
    return kb


def _check_after_kill(bench: KillBench, faults: Any, layout: str) -> dict[str, str]:
    states = {db: faults.classify(bench.project, db) for db in bench.databases(layout)}
    assert len(set(states.values())) == 1, f"the databases were not swapped together: {states}"
    return states


def _recover(bench: KillBench, faults: Any, layout: str) -> None:
    """The next run succeeds, leaves no leftovers, and puts complete new databases in place."""
    result = faults.run(bench.config(layout), "fresh", "--yes")
    assert result.returncode == 0, "the run after the kill failed:\n" + faults.describe(result)
    leftovers = faults.leftovers(bench.project)
    assert leftovers == [], f"the run after the kill left copies behind: {leftovers}"
    for db in bench.databases(layout):
        assert faults.classify(bench.project, db) == "new"


def _ensure_clean(bench: KillBench, faults: Any) -> None:
    """Start from complete databases with a template and a spare of the current sources."""
    if not bench.clean:
        _recover(bench, faults, "pair")
    bench.clean = False


@pytest.mark.parametrize(("layout", "variant", "checkpoint"), CASES, ids=["/".join(c) for c in CASES])
def test_kill_at_checkpoint(
    bench: KillBench, faults: Any, tally: Any, layout: str, variant: str, checkpoint: str
) -> None:
    _ensure_clean(bench, faults)
    databases = bench.databases(layout)
    for db in databases:
        faults.insert_marker(bench.project, db)
    args = ["fresh", "--yes"]
    if variant == "nocache":
        args.append("--no-cache")
    elif variant == "changed":
        bench.change_sql()

    result = faults.run(bench.config(layout), *args, env={"PROVISION_KILL_AT": checkpoint})
    assert result.returncode == -signal.SIGKILL, f"the run never reached {checkpoint}:\n" + faults.describe(result)
    assert "Traceback" not in result.stderr

    states = _check_after_kill(bench, faults, layout)
    expected = "old" if checkpoint in BEFORE_SWAP else "new"
    tally.kill(f"{layout}/{variant}", checkpoint, states)
    assert set(states.values()) == {expected}, f"killed at {checkpoint}: expected the {expected} databases, {states}"

    _recover(bench, faults, layout)
    bench.clean = True


def test_kill_at_random_times(bench: KillBench, faults: Any, tally: Any) -> None:
    """kill -9 at seeded-random fractions of a measured run (both databases, SQL changed each time)."""
    rng = random.Random(RANDOM_SEED)
    _ensure_clean(bench, faults)
    bench.change_sql()
    started = time.monotonic()
    result = faults.run(bench.pair, "fresh", "--yes")
    duration = time.monotonic() - started
    assert result.returncode == 0, faults.describe(result)

    for attempt in range(RANDOM_KILLS):
        for db in bench.databases("pair"):
            faults.insert_marker(bench.project, db)
        bench.change_sql()
        delay = rng.uniform(0.15, 0.9) * duration
        proc = faults.popen(bench.pair, "fresh", "--yes")
        time.sleep(delay)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=120)
        killed = proc.returncode == -signal.SIGKILL
        assert killed or proc.returncode == 0, faults.describe((proc.returncode, out, err))
        assert "Traceback" not in err

        states = _check_after_kill(bench, faults, "pair")
        tally.kill(
            f"pair/random#{attempt + 1}",
            "random",
            states,
            killed=killed,
            delay_seconds=round(delay, 3),
            run_seconds=round(duration, 3),
        )
        if not killed:
            assert set(states.values()) == {"new"}, f"a finished run left {states}"
        _recover(bench, faults, "pair")
    bench.clean = True


# Killed in the detached housekeeping process (cleanup: background), which inherits PROVISION_KILL_AT;
# the checkpoints it reaches before anything else does. The run itself has already swapped and exits 0.
BACKGROUND_CASES = ("housekeeping-leftovers-dropped", "template-frozen", "template-built", "spare-created")


@pytest.mark.parametrize("checkpoint", BACKGROUND_CASES)
def test_kill_detached_housekeeping(bench: KillBench, faults: Any, tally: Any, poll: Any, checkpoint: str) -> None:
    _ensure_clean(bench, faults)
    faults.insert_marker(bench.project, "chatbi")
    bench.change_sql()
    marker = "FAULTS_RUN=" + secrets.token_hex(8)  # inherited by the detached child: how we find it
    name, value = marker.split("=")
    result = faults.run(bench.solo_bg, "fresh", "--yes", env={"PROVISION_KILL_AT": checkpoint, name: value})
    assert result.returncode == 0, faults.describe(result)
    assert poll(lambda: not faults.pids_with_env(marker), 120), "the housekeeping process is still running"

    state = faults.classify(bench.project, "chatbi")
    tally.kill("solo/background-housekeeping", checkpoint, {"chatbi": state})
    assert state == "new", "the run swapped before it started its housekeeping"

    # Evidence that the housekeeping process died exactly there.
    status = faults.run(bench.solo_bg, "status", "--json")
    assert status.returncode == 0, faults.describe(status)
    current = [t["name"] for t in json.loads(status.stdout)["templates"] if t["current"]]
    names = faults.databases(bench.project)
    if checkpoint in ("housekeeping-leftovers-dropped", "template-frozen"):
        assert current == [], f"a template was built after the kill point: {current}"
        assert not [n for n in names if "__old_" in n], "the old copy was not dropped before the kill point"
    else:
        assert len(current) == 1, f"no template for the current sources: {current}"
        spare = current[0].replace("__tpl_", "__spare_")
        assert (spare in names) == (checkpoint == "spare-created"), (checkpoint, sorted(names))

    _recover(bench, faults, "solo")
    bench.clean = True
