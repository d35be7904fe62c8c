"""The tidy-up after `fresh`, in a detached process: spawning it, running it, and waiting for it.

The parent hands the child its resolved Config as a pickle on stdin. A pickle of the frozen
dataclass round-trips every field exactly (no second serialiser to keep in step with Config),
stays out of argv (it holds the password), and comes from this same program, so unpickling it
trusts nothing new.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

from .config import Config
from .endpoint import Endpoint
from .errors import NotReady
from .events import EventFn, ignore
from .postgres import dbops


@dataclass(frozen=True)
class Job:
    """What the detached tidy-up needs: the config, the server it was given, which databases, and
    whether to refresh their templates (after `fresh`) or only tidy up (after a snapshot restore)."""

    config: Config
    endpoint: Endpoint
    databases: tuple[str, ...]
    use_cache: bool
    templates: bool = True


def log_path() -> str:
    return os.path.join(tempfile.gettempdir(), "provision-housekeeping.log")


def _pids_path(endpoint: Endpoint) -> str:
    return os.path.join(tempfile.gettempdir(), f"provision-housekeeping-{endpoint.host}-{endpoint.port}.pids")


# The folder that holds this provision package, first on the child's search path, and the
# caller's working directory ('') dropped from it: `python -m provision` from the caller's folder
# would run whatever `provision/` (another checkout) or `yaml.py` lies there instead.
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_RUN_CHILD = (
    "import sys; sys.path[:] = [sys.argv.pop(1), *filter(None, sys.path)]; from provision.cli import main; main()"
)


def spawn(cfg: Config, endpoint: Endpoint, names: Sequence[str], use_cache: bool, templates: bool = True) -> None:
    """Drop the old copies and prepare the next run's spare in a detached process.

    The caller's databases are already in place; this work only makes the next run fast, and
    is safe to kill at any point (the next run finishes it). Its pid is recorded so that
    wait() can wait for it.
    """
    pid = detach("_housekeep", pickle.dumps(Job(cfg, endpoint, tuple(names), use_cache, templates)))
    with open(_pids_path(endpoint), "a") as pids:
        pids.write(f"{pid}\n")


def detach(command: str, payload: bytes) -> int:
    """Start `provision <command>` (a hidden CLI command) in a detached process of its own session,
    reading `payload` on stdin and logging to log_path(); its pid."""
    with open(log_path(), "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", _RUN_CHILD, _PACKAGE_PARENT, command],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=log,
            start_new_session=True,
            close_fds=True,
        )
        assert proc.stdin is not None
        proc.stdin.write(payload)
        proc.stdin.close()
    return proc.pid


def run(payload: bytes, on_event: EventFn = ignore) -> None:
    """The detached half of `fresh` and `snapshot restore` (see spawn)."""
    # Written by spawn() of this same program (see the module docstring).
    job: Job = pickle.loads(payload)
    lock_conn = dbops.connect(job.endpoint, application_name="provision housekeeping")
    try:
        dbops.acquire_lock(lock_conn, wait=True)
        tidy_up(job, int(lock_conn.server_version), on_event)
    finally:
        lock_conn.close()


def tidy_up(job: Job, server_version: int, on_event: EventFn = ignore) -> None:
    """Under the lock: drop the replaced copies; refresh templates and spares (after `fresh`), and
    clone the snapshots' standbys, so the next fresh or restore is a rename."""
    from .builds.pipeline import Server, cleanup_leftovers, housekeep, plan_database
    from .builds.snapshots import ensure_standbys
    from .postgres.sqlstream import BUILD_APP
    from .targets import make_target

    cfg = job.config
    if job.templates:
        runner = make_target(cfg).psql_runner(job.endpoint)
        plans = [plan_database(cfg, cfg.database(name)) for name in job.databases]
        housekeep(Server(job.endpoint, runner, server_version), plans, cfg.keep_templates, job.use_cache, on_event)
    with dbops.connection(job.endpoint, application_name=BUILD_APP) as admin:
        if not job.templates:
            cleanup_leftovers(admin, job.databases, on_event, what="the replaced copies")
        ensure_standbys(admin, job.databases, on_event)


def wait(endpoint: Endpoint, timeout: float = 120.0) -> None:
    """Block until the background tidy-up of earlier `fresh` runs against `endpoint` has finished
    and no provisioner holds the server-wide lock (benchmarks and tests use it)."""
    deadline = time.monotonic() + timeout
    path = _pids_path(endpoint)
    try:
        with open(path) as fh:
            pids = [int(line) for line in fh if line.strip().isdigit()]
    except FileNotFoundError:
        pids = []
    for pid in pids:
        while _alive(pid):
            if time.monotonic() > deadline:
                raise NotReady(
                    f"the background tidy-up (pid {pid}) did not finish within {timeout:g} s",
                    hint=f"see {log_path()}",
                )
            time.sleep(0.02)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    conn = dbops.connect(endpoint, application_name="provision wait-for-housekeeping")
    try:
        dbops.acquire_lock(conn, wait=True)
        dbops.release_lock(conn)
    finally:
        conn.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        # A finished child of this process lingers as a zombie until reaped.
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return _not_zombie(pid)


def _not_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True
