"""The installed `provision` command with its forkserver: same results as in-process, faster start-up."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import Launcher, Project, databases, fresh, output_of, query, served_by_forkserver

pytestmark = pytest.mark.integration

IN_PROCESS = {"PROVISION_FORKSERVER": "0"}


def write_config(folder: Path, port: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "provision.yaml"
    path.write_text(yaml.safe_dump({"container": "provtest-no-such-container", "port": port}))
    return path


def test_the_first_command_starts_a_forkserver_and_the_next_goes_through_it(launcher: Launcher, tmp_path: Path) -> None:
    write_config(tmp_path, 6101)
    first = launcher.run("url", "chatbi", cwd=tmp_path, importtime=True)
    assert first.returncode == 0, first.stderr
    assert not served_by_forkserver(first)  # nobody was listening yet
    launcher.start_server(cwd=tmp_path)
    second = launcher.run("url", "chatbi", cwd=tmp_path, importtime=True)
    assert served_by_forkserver(second), second.stderr
    assert output_of(second) == output_of(first)
    assert second.stdout == "postgresql://chatbi:***@127.0.0.1:6101/chatbi\n"


@pytest.mark.parametrize(
    "args",
    [
        ["url", "chatbi", "--show-password"],
        ["-c", "missing.yaml", "status"],
        ["no-such-command"],
        ["url", "no_such_db"],
        ["--version"],
        ["fresh", "--dry-run", "--skip-demo"],
    ],
)
def test_output_and_exit_codes_match_in_process(launcher: Launcher, tmp_path: Path, args: list[str]) -> None:
    write_config(tmp_path, 6102)
    launcher.start_server(cwd=tmp_path)
    served = launcher.run(*args, cwd=tmp_path, importtime=True)
    here = launcher.run(*args, cwd=tmp_path, importtime=True, env=IN_PROCESS)
    assert served_by_forkserver(served) and not served_by_forkserver(here)
    assert output_of(served) == output_of(here)


def test_each_command_gets_its_callers_environment_and_folder(launcher: Launcher, tmp_path: Path) -> None:
    write_config(tmp_path / "a", 6103)
    write_config(tmp_path / "b", 6104)
    # The forkserver starts with the first caller's environment; later callers must not see it.
    launcher.start_server(cwd=tmp_path, env={"PROVISION_PORT": "6199"})
    runs = [
        (tmp_path / "a", {}, "6103"),
        (tmp_path / "b", {}, "6104"),
        (tmp_path / "a", {"PROVISION_PORT": "6105"}, "6105"),
        (tmp_path / "a", {}, "6103"),  # nothing of the run before stays behind
    ]
    for cwd, env, port in runs:
        result = launcher.run("url", "chatbi", cwd=cwd, env=env, importtime=True)
        assert served_by_forkserver(result), result.stderr
        assert result.stdout == f"postgresql://chatbi:***@127.0.0.1:{port}/chatbi\n", (cwd, env)


def test_switched_off_or_psql_runs_in_process(launcher: Launcher, tmp_path: Path) -> None:
    write_config(tmp_path, 6106)
    launcher.start_server(cwd=tmp_path)
    assert not served_by_forkserver(launcher.run("url", cwd=tmp_path, env=IN_PROCESS, importtime=True))
    psql = launcher.run("psql", "chatbi", cwd=tmp_path, importtime=True)
    assert not served_by_forkserver(psql)
    assert psql.returncode != 0 and "provtest-no-such-container" in psql.stderr


def test_an_idle_forkserver_exits_and_a_second_one_for_the_same_socket_does_not_start(tmp_path: Path) -> None:
    path = Path("/tmp") / f"pv-idle-{os.getpid()}.sock"
    serve = "import sys; from provision.forkserver import serve; serve(sys.argv[1], idle=float(sys.argv[2]))"
    path.unlink(missing_ok=True)
    path.write_text("left by a server that was killed")  # replaced: nobody holds the lock
    server = subprocess.Popen([sys.executable, "-c", serve, str(path), "3"])
    try:
        deadline = time.monotonic() + 20
        while not path.is_socket() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert path.is_socket()
        second = subprocess.run([sys.executable, "-c", serve, str(path), "60"], timeout=20)
        assert second.returncode == 0 and path.is_socket()  # returned at once, the first still serves
        assert server.wait(timeout=30) == 0
        assert not path.exists() and not Path(str(path)[: -len(".sock")] + ".lock").exists()
    finally:
        server.kill()
        path.unlink(missing_ok=True)
        Path(str(path)[: -len(".sock")] + ".lock").unlink(missing_ok=True)


# ---------------------------------------------------------------- with a real server


def test_a_fault_checkpoint_kills_the_command_as_in_process(launcher: Launcher, project: Project) -> None:
    assert fresh(project, "--yes").returncode == 0
    launcher.start_server(cwd=project.dir)
    killed = launcher.run(
        "fresh", "--yes", "--no-cache", cwd=project.dir, env={"PROVISION_KILL_AT": "stage-created"}, importtime=True
    )
    assert served_by_forkserver(killed)
    assert killed.returncode == -signal.SIGKILL
    assert any("__stage_" in name for name in databases(project))
    again = launcher.run("fresh", "--yes", cwd=project.dir)
    assert again.returncode == 0, again.stderr
    assert "dropped leftovers" in again.stdout + again.stderr
    assert not any("__stage_" in name for name in databases(project))


class Prompting:
    """`provision fresh` through the forkserver, stopped at its question on a real terminal."""

    def __init__(self, launcher: Launcher, project: Project) -> None:
        self.primary, secondary = pty.openpty()
        self.proc = subprocess.Popen(
            launcher.argv("fresh"),
            stdin=secondary,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=launcher.env(),
            cwd=project.dir,
        )
        os.close(secondary)
        assert self.proc.stdout is not None
        seen = b""
        while b"Replace" not in seen:
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            assert chunk, f"no question asked; stderr: {self.proc.stderr.read() if self.proc.stderr else ''}"
            seen += chunk
        self.launcher = launcher

    def worker_pids(self) -> list[int]:
        children = []
        for server in self.launcher.server_pids():
            task = Path(f"/proc/{server}/task/{server}/children")
            children += [int(pid) for pid in task.read_text().split()]
        return children

    def finish(self, timeout: float = 60) -> tuple[int, str]:
        _, err = self.proc.communicate(timeout=timeout)
        os.close(self.primary)
        return self.proc.returncode, err.decode()


@pytest.fixture
def asked(launcher: Launcher, project: Project) -> Prompting:
    """A built project whose chatbi holds a table of the user's (keep_me), and `provision fresh`
    asking, through a listening forkserver, whether to replace it."""
    assert fresh(project, "--yes").returncode == 0
    query(project, "chatbi", "CREATE TABLE keep_me (id int)")
    launcher.start_server(cwd=project.dir)
    return Prompting(launcher, project)


def kept(project: Project) -> bool:
    return query(project, "chatbi", "SELECT to_regclass('keep_me') IS NOT NULL") == [(True,)]


def test_the_question_is_asked_and_answered_on_the_callers_terminal(asked: Prompting, project: Project) -> None:
    assert asked.worker_pids(), "the forkserver runs the command"
    os.write(asked.primary, b"y\n")
    code, err = asked.finish()
    assert code == 0, err
    assert not kept(project)


def test_ctrl_c_reaches_the_command(asked: Prompting, project: Project) -> None:
    asked.proc.send_signal(signal.SIGINT)  # what the terminal sends to its foreground process
    code, err = asked.finish()
    assert code == 130, err
    assert "Interrupted" in err
    assert kept(project)


def test_killing_the_command_kills_its_worker(asked: Prompting, project: Project, launcher: Launcher) -> None:
    workers = asked.worker_pids()
    assert len(workers) == 1
    asked.proc.kill()
    code, _ = asked.finish()
    assert code == -signal.SIGKILL
    deadline = time.monotonic() + 10
    while asked.worker_pids() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert asked.worker_pids() == []
    assert not Path(f"/proc/{workers[0]}").exists()  # dead and reaped
    assert kept(project)
    assert launcher.server_pids(), "the forkserver itself lives on"


def test_a_forkserver_killed_mid_command_is_reported_not_guessed(
    asked: Prompting, project: Project, launcher: Launcher
) -> None:
    for server in launcher.server_pids():
        os.kill(server, signal.SIGKILL)
    os.write(asked.primary, b"n\n")  # the orphaned worker still finishes: it declines
    code, err = asked.finish()
    assert code == 1
    assert "its outcome is unknown" in err and "PROVISION_FORKSERVER=0" in err
    assert "not replacing databases that hold data without confirmation" in err  # the worker's own words
    assert kept(project)
    again = launcher.run("url", cwd=project.dir, importtime=True)  # a stale socket: run here, start anew
    assert again.returncode == 0 and not served_by_forkserver(again)
    launcher.wait_for_server()
