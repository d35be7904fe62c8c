"""The `provision` command as typed: the tidy-up runs provision's own code, no process outlives a command."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Project, databases
from tests.integration.test_fresh import CHATBI_ONLY

pytestmark = pytest.mark.integration

PROVISION_COMMAND = Path(sys.executable).parent / "provision"  # the installed console script


def provision(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("PROVISION_")}
    full.update(env or {})
    return subprocess.run(
        [str(PROVISION_COMMAND), *args], capture_output=True, text=True, cwd=cwd, env=full, timeout=300
    )


def test_the_tidy_up_runs_provision_not_a_provision_folder_in_the_callers_folder(
    project: Project, tmp_path: Path
) -> None:
    """Issue 20 item 5: the caller's folder holds another `provision` package (a checkout); the
    detached tidy-up must still run this installation's code, and finish its work."""
    caller = tmp_path / "another-checkout"
    marker = tmp_path / "the-decoy-ran"
    decoy = caller / "provision"
    decoy.mkdir(parents=True)
    for module in ("__init__.py", "__main__.py", "cli.py"):
        (decoy / module).write_text(f"open({str(marker)!r}, 'a').write({module!r} + '\\n')\n")
    project.write(cleanup="background", databases=CHATBI_ONLY)

    built = provision("-c", str(project.path), "fresh", "--yes", cwd=caller)
    assert built.returncode == 0, built.stderr
    from provision import api

    api.wait_for_housekeeping(project.config())
    assert not marker.exists(), f"the decoy ran: {marker.read_text()}"
    # The tidy-up did its job: the next run's spare copy is ready.
    assert any("__spare_" in name for name in databases(project))


def provision_processes(token: str) -> list[str]:
    """Processes started (directly or not, detached or not) by a command run with `token` in its
    environment, which every descendant inherits however it was reparented."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = Path(entry.path, "environ").read_bytes()
            cmdline = Path(entry.path, "cmdline").read_bytes()
        except OSError:
            continue  # ended meanwhile, or not ours to read
        if f"PV_LEFTOVER_PROBE={token}".encode() in environ.split(b"\0"):
            argv = cmdline.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"pid {entry.name}: {argv[:200]}")
    return found


def test_no_provision_process_outlives_a_command(project: Project, tmp_path: Path) -> None:
    """A command leaves nothing running once it returns (no daemon, no worker); the detached
    tidy-up of `cleanup: background` ends once its work is done."""
    token = secrets.token_hex(8)
    env = {"PV_LEFTOVER_PROBE": token}
    commands = [
        ("--version",),
        ("--help",),
        ("-c", str(project.path), "up"),
        ("-c", str(project.path), "url"),
        ("-c", str(project.path), "fresh", "--yes"),
        ("-c", str(project.path), "status"),
        ("-c", str(project.path), "doctor"),
        ("-c", str(project.path), "fresh", "--yes", "--no-wait"),
    ]
    for args in commands:
        result = provision(*args, cwd=tmp_path, env=env)
        assert result.returncode in ((0, 12) if "doctor" in args else (0,)), (args, result.stderr)
        assert provision_processes(token) == [], f"left running after `provision {' '.join(args)}`"
    # cleanup: background spawns the tidy-up on purpose; once it has finished, nothing is left.
    project.write(cleanup="background")
    result = provision("-c", str(project.path), "fresh", "--yes", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    from provision import api

    api.wait_for_housekeeping(project.config())
    assert provision_processes(token) == []
