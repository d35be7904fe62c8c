"""Progress of a long load on a terminal, and silence without one (issue 13)."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys

import pytest

from tests.conftest import Project, fresh

pytestmark = pytest.mark.integration


def big_source(project: Project, mib: int = 60) -> None:
    row = "INSERT INTO t VALUES ('" + "x" * 200 + "');\n"
    with (project.dir / "big.sql").open("w") as fh:
        fh.write("CREATE TABLE t (v text);\n")
        fh.write(row * (mib * 1024 * 1024 // len(row)))
    project.write(databases={"big": {"sql": "big.sql", "tables": ["t"]}})


def run_on_a_terminal(project: Project, *args: str) -> tuple[int, str]:
    """Run provision with its stdout on a pseudo-terminal, as a person at a shell would."""
    leader, follower = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISION_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "provision", "-c", str(project.path), *args],
        stdout=follower, stderr=follower, stdin=subprocess.DEVNULL, cwd=project.dir, env=env,
    )  # fmt: skip
    os.close(follower)
    output = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 1)
        if ready:
            try:
                data = os.read(leader, 65536)
            except OSError:
                break
            if not data:
                break
            output += data
        elif proc.poll() is not None:
            break
    os.close(leader)
    return proc.wait(), output.decode("utf-8", "replace")


def test_a_long_load_shows_bytes_rate_and_eta_on_a_terminal(project: Project) -> None:
    big_source(project)
    code, output = run_on_a_terminal(project, "fresh", "--yes", "--no-cache")
    assert code == 0, output
    updates = [part for part in output.split("\r") if "load big.sql:" in part]
    assert len(updates) >= 2, output  # at least one update on the way, and the last one
    assert "MB/s" in updates[0] and "ETA" in updates[0], updates[0]
    assert "of 6" in updates[-1] and "done" in updates[-1], updates[-1]  # 60-some MB, all read


def test_no_progress_without_a_terminal_or_with_quiet(project: Project) -> None:
    big_source(project, mib=20)
    piped = fresh(project, "--yes", "--no-cache")
    assert piped.returncode == 0 and "MB/s" not in piped.stdout + piped.stderr
    code, output = run_on_a_terminal(project, "fresh", "--yes", "--no-cache", "-q")
    assert code == 0 and "MB/s" not in output, output
    as_json = fresh(project, "--yes", "--no-cache", "--json")
    assert as_json.returncode == 0 and as_json.stdout.lstrip().startswith("{") and "MB/s" not in as_json.stdout
