"""kill -9 during `snapshot save`, `snapshot restore` and the background standby clone (issue 11).

One server for the module. The snapshot `base` holds a marker row in chatbi; the database in
place either holds it too or not, so after each kill `classify` tells which copy is in place,
and that it is whole. Afterwards the snapshot must still restore, and the next run must leave
no staging or swapped-out copies behind.
"""

from __future__ import annotations

import json
import secrets
import signal
from typing import Any

import pytest

pytestmark = [pytest.mark.faults, pytest.mark.integration]


@pytest.fixture(scope="module")
def server(shared_project: Any, faults: Any) -> Any:
    project = shared_project(cleanup="sync")
    assert faults.run(project.path, "fresh", "--yes").returncode == 0
    faults.insert_marker(project, "chatbi")
    saved = faults.run(project.path, "snapshot", "save", "base", "--db", "chatbi")
    assert saved.returncode == 0, faults.describe(saved)
    return project


def _without_marker(faults: Any, project: Any) -> None:
    faults.query(project, "chatbi", "DELETE FROM app_users")


def _snapshots(faults: Any, project: Any) -> dict[str, bool]:
    listed = faults.run(project.path, "snapshot", "list", "--json")
    assert listed.returncode == 0, faults.describe(listed)
    return {s["name"]: s["standby"] for s in json.loads(listed.stdout)["snapshots"]}


def _base_still_restores(faults: Any, project: Any) -> None:
    restored = faults.run(project.path, "snapshot", "restore", "base", "--yes")
    assert restored.returncode == 0, faults.describe(restored)
    assert faults.classify(project, "chatbi") == "old", "the snapshot lost its marker row"
    assert faults.leftovers(project) == []


@pytest.mark.parametrize("checkpoint", ["snapshot-staged", "snapshot-saved"])
def test_kill_during_save(server: Any, faults: Any, tally: Any, checkpoint: str) -> None:
    _without_marker(faults, server)
    name = "s-" + secrets.token_hex(3)
    result = faults.run(server.path, "snapshot", "save", name, "--db", "chatbi", env={"PROVISION_KILL_AT": checkpoint})
    assert result.returncode == -signal.SIGKILL, f"never reached {checkpoint}:\n" + faults.describe(result)
    state = faults.classify(server, "chatbi")
    tally.kill("snapshot/save", checkpoint, {"chatbi": state})
    assert state == "new", "a save must never change the database it copies"
    assert (name in _snapshots(faults, server)) == (checkpoint == "snapshot-saved")
    # The next run tidies the killed one's staging copy, and saving again works.
    again = faults.run(server.path, "snapshot", "save", name, "--db", "chatbi", "--force")
    assert again.returncode == 0, faults.describe(again)
    assert faults.leftovers(server) == []
    _base_still_restores(faults, server)


@pytest.mark.parametrize(
    ("checkpoint", "expected"),
    [("restore-staged", "new"), ("before-swap", "new"), ("swapped", "old")],
)
def test_kill_during_restore(server: Any, faults: Any, tally: Any, checkpoint: str, expected: str) -> None:
    _without_marker(faults, server)
    result = faults.run(server.path, "snapshot", "restore", "base", "--yes", env={"PROVISION_KILL_AT": checkpoint})
    assert result.returncode == -signal.SIGKILL, f"never reached {checkpoint}:\n" + faults.describe(result)
    state = faults.classify(server, "chatbi")
    tally.kill("snapshot/restore", checkpoint, {"chatbi": state})
    assert state == expected, f"killed at {checkpoint}: expected the {expected} copy in place"
    assert "base" in _snapshots(faults, server), "the snapshot must survive a killed restore"
    _base_still_restores(faults, server)


def test_kill_in_the_background_standby_clone(server: Any, faults: Any, tally: Any, poll: Any) -> None:
    """`cleanup: background`: the detached tidy-up inherits PROVISION_KILL_AT and dies after cloning."""
    background = server.dir / "background.yaml"
    type(server)(background, server.name, dict(server.data)).write(cleanup="background")
    marker = "FAULTS_STANDBY=" + secrets.token_hex(6)
    key, value = marker.split("=")
    result = faults.run(
        background, "snapshot", "restore", "base", "--yes", env={"PROVISION_KILL_AT": "standby-cloned", key: value}
    )
    assert result.returncode == 0, faults.describe(result)
    assert poll(lambda: not faults.pids_with_env(marker), 60), "the tidy-up is still running"
    state = faults.classify(server, "chatbi")
    tally.kill("snapshot/standby", "standby-cloned", {"chatbi": state})
    assert state == "old", "the restore itself had finished"
    assert _snapshots(faults, server)["base"] is True, "the standby was cloned whole before the kill"
    _base_still_restores(faults, server)
