"""Fault-injection checkpoints: PROVISION_KILL_AT=<name> kills this process with SIGKILL at that step."""

from __future__ import annotations

import os
import signal

# Every checkpoint, in the order a build passes them; the kill -9 tests try each one.
NAMES = (
    "stage-created",
    "sql-loaded",
    "stamped",
    "live-sealed",  # the live databases refuse connections; the app's command has not started
    "migration-started",
    "migrated",
    "seed-started",
    "seeded",
    "template-frozen",
    "before-swap",
    "swapped",
    "housekeeping-leftovers-dropped",
    "template-built",
    "spare-created",
)


# Other verbs' checkpoints are tried by their own kill -9 tests: snapshot-staged, snapshot-saved,
# restore-staged, standby-cloned (tests/faults/test_kill_snapshots.py); branch-staged (a switch's
# copies ready, nothing renamed yet) and branch-swapped (its one transaction committed)
# (tests/faults/test_kill_branch.py).


def checkpoint(name: str) -> None:
    """Kill this process here when PROVISION_KILL_AT names this checkpoint. Read at call time, never at import."""
    if os.environ.get("PROVISION_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
