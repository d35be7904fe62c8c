"""Ctrl-C (SIGINT) during a fresh that builds two databases in parallel: it stops at once and loses nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import Project, databases, fresh, query

pytestmark = [pytest.mark.faults, pytest.mark.integration]


@pytest.mark.parametrize("delay", [0.8, 2.0])
def test_ctrl_c_during_parallel_builds(project: Project, delay: float) -> None:
    assert fresh(project, "--yes").returncode == 0
    query(project, "chatbi", "INSERT INTO app_users (email) VALUES ('before-ctrl-c@example.com')")
    orders = query(project, "chatbi_demo", "SELECT count(*) FROM orders")[0][0]

    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISION_")}
    # A large demo scale keeps the builds busy for several seconds.
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "provision",
            "-c",
            str(project.path),
            "fresh",
            "--yes",
            "--no-cache",
            "--demo-scale",
            "30",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=project.dir,
    )
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    interrupted = time.monotonic()
    _, err = proc.communicate(timeout=60)
    stopped_after = time.monotonic() - interrupted

    assert proc.returncode == 130, err
    assert "Interrupted" in err and "Traceback" not in err
    # Not a speed check: the scale-30 build takes over 20 s, so this tells "stopped" from "ran to the end".
    assert stopped_after < 10, f"took {stopped_after:.1f} s to stop after Ctrl-C"
    assert query(project, "chatbi", "SELECT email FROM app_users") == [("before-ctrl-c@example.com",)]
    assert query(project, "chatbi_demo", "SELECT count(*) FROM orders")[0][0] == orders
    assert not [d for d in databases(project) if "__stage_" in d or "__old_" in d]
    assert fresh(project, "--yes").returncode == 0
