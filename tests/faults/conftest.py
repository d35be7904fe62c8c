"""Fixtures for the fault-injection suite (issue 6): shared containers, database inspection, a Docker
socket proxy that can be killed, and a session-wide tally of what was tried.

Test modules cannot import this file (the suite runs with --import-mode=importlib), so every helper
is reached through a fixture: `faults` (running provision, inspecting databases), `shared_project`
(module-scoped containers), `docker_proxy` and `tally`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from provision.config import CHATBI_TABLES, DEMO_TABLES
from tests.conftest import NAME_PREFIX, Project, project_data, remove_test_objects

ALEMBIC_REVISION = "0001_initial_schema"
MARKER = "fault-marker"
LEFTOVER = re.compile(r"__(stage|old)_")


# ---------------------------------------------------------------- the tally


@dataclass
class Tally:
    """What the suite tried and found; printed at the end of the run and written to faults-summary.json."""

    kills: list[dict[str, Any]] = field(default_factory=list)
    concurrent_runs: int = 0
    concurrent_waited: int = 0
    bad_inputs: list[str] = field(default_factory=list)
    outputs_checked: int = 0
    cmdline_scans: int = 0
    cmdlines_read: int = 0
    leaks: list[str] = field(default_factory=list)
    restarts: list[dict[str, Any]] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)
    json_path: Path | None = None

    def kill(self, case: str, checkpoint: str, databases: dict[str, str], killed: bool = True, **extra: Any) -> None:
        """Record one kill attempt and the state each database was found in afterwards."""
        state = next(iter(databases.values()))
        self.kills.append(
            {"case": case, "checkpoint": checkpoint, **extra, "killed": killed, "state": state, "databases": databases}
        )

    def summary(self) -> dict[str, Any]:
        killed = [k for k in self.kills if k["killed"]]
        states: dict[str, int] = {"old": 0, "new": 0}
        for kill in self.kills:
            states[kill["state"]] += 1
        return {
            "kills_tried": len(self.kills),
            "kills_landed": len(killed),
            "kills_at_checkpoints": sum(1 for k in killed if k["checkpoint"] != "random"),
            "kills_at_random_times": sum(1 for k in killed if k["checkpoint"] == "random"),
            "states_found": states,
            "databases_checked_after_kills": sum(len(k["databases"]) for k in self.kills),
            "concurrent_runs": self.concurrent_runs,
            "concurrent_runs_that_waited": self.concurrent_waited,
            "bad_inputs_tried": len(self.bad_inputs),
            "outputs_checked_for_the_password": self.outputs_checked,
            "proc_cmdline_scans": self.cmdline_scans,
            "proc_cmdlines_read": self.cmdlines_read,
            "leaks_found": len(self.leaks),
            "restarts_during_wait": self.restarts,
            **self.notes,
        }


TALLY = Tally()


@pytest.fixture(scope="session")
def tally(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tally]:
    TALLY.json_path = tmp_path_factory.getbasetemp() / "faults-summary.json"
    yield TALLY
    detail = {"summary": TALLY.summary(), "kills": TALLY.kills, "bad_inputs": TALLY.bad_inputs, "leaks": TALLY.leaks}
    TALLY.json_path.write_text(json.dumps(detail, indent=2))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if TALLY.json_path is None:
        return
    terminalreporter.section("fault-injection summary (issue 6)")
    for key, value in TALLY.summary().items():
        terminalreporter.write_line(f"{key}: {value}")
    terminalreporter.write_line(f"details: {TALLY.json_path}")


# ---------------------------------------------------------------- running provision


def provision_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without PROVISION_* (like tests/conftest.py's run_cli), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISION_")}
    env.update(extra or {})
    return env


def run(
    config: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 240, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """`provision -c CONFIG ARGS...` to completion. stdin is a pipe, so never a terminal."""
    return subprocess.run(
        [sys.executable, "-m", "provision", "-c", str(config), *args],
        capture_output=True,
        text=True,
        env=provision_env(env),
        timeout=timeout,
        input=stdin,
    )


def popen(config: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`provision -c CONFIG ARGS...` in the background; stdin is /dev/null."""
    return subprocess.Popen(
        [sys.executable, "-m", "provision", "-c", str(config), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=provision_env(env),
    )


def describe(result: subprocess.CompletedProcess[str] | tuple[int | None, str, str]) -> str:
    if isinstance(result, tuple):
        code, out, err = result
    else:
        code, out, err = result.returncode, result.stdout, result.stderr
    return f"exit {code}\n--- stdout\n{out}\n--- stderr\n{err}"


# ---------------------------------------------------------------- projects that live for a whole module


@pytest.fixture(scope="module")
def shared_project(tmp_path_factory: pytest.TempPathFactory, docker_client: Any) -> Iterator[Callable[..., Project]]:
    """Like make_project, but the container lives for the whole module (one server for many tests)."""
    made: list[str] = []

    def make(**data: Any) -> Project:
        name = NAME_PREFIX + secrets.token_hex(4)
        made.append(name)
        directory = tmp_path_factory.mktemp(name)
        return Project(directory / "provision.yaml", name, project_data(name, **data)).write()

    yield make
    for name in made:
        remove_test_objects(docker_client, name)


# ---------------------------------------------------------------- looking at the server


class Faults:
    """Runs provision and inspects a project's server directly (psycopg2 over the published port)."""

    run = staticmethod(run)
    popen = staticmethod(popen)
    describe = staticmethod(describe)

    def __init__(self, docker_client: Any) -> None:
        self.docker = docker_client

    def port(self, project: Any) -> int:
        attrs = self.docker.api.inspect_container(project.name)
        bindings = (attrs["NetworkSettings"]["Ports"] or {}).get("5432/tcp") or []
        for binding in bindings:
            if binding.get("HostPort"):
                return int(binding["HostPort"])
        raise AssertionError(f"container {project.name} publishes no port: {bindings}")

    @staticmethod
    def password(project: Any) -> str:
        """The project's password as the server knows it (in YAML, `$$` is a literal `$`)."""
        return str(project.data.get("password", "chatbi")).replace("$$", "$")

    def connect(self, project: Any, dbname: str = "postgres", password: str | None = None) -> Any:
        conn = psycopg2.connect(
            host="127.0.0.1",
            port=self.port(project),
            user=project.data.get("user", "chatbi"),
            password=self.password(project) if password is None else password,
            dbname=dbname,
            connect_timeout=10,
            application_name="faults-suite",
        )
        conn.autocommit = True
        return conn

    def query(self, project: Any, dbname: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        conn = self.connect(project, dbname)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def databases(self, project: Any) -> dict[str, int]:
        """Every database on the server, with its oid (a rebuilt database gets a new oid)."""
        return {name: int(oid) for name, oid in self.query(project, "postgres", "SELECT datname, oid FROM pg_database")}

    def leftovers(self, project: Any) -> list[str]:
        return sorted(name for name in self.databases(project) if LEFTOVER.search(name))

    def insert_marker(self, project: Any, database: str) -> None:
        if database == "chatbi":
            sql = "INSERT INTO app_users (email, username) VALUES (%s, %s)"
            params: tuple[str, ...] = (MARKER + "@example.invalid", MARKER)
        else:
            sql, params = "INSERT INTO categories (name) VALUES (%s)", (MARKER,)
        self.query(project, database, sql, params)

    def classify(self, project: Any, database: str, revision: str = ALEMBIC_REVISION) -> str:
        """'old' (marker present) or 'new' (marker absent); AssertionError if missing or incomplete.

        chatbi must hold exactly `revision` in alembic_version (the stamp, or the migrations' head)."""
        names = self.databases(project)
        assert database in names, f"{database} is MISSING; databases on the server: {sorted(names)}"
        conn = self.connect(project, database)
        try:
            with conn.cursor() as cur:
                expected = CHATBI_TABLES if database == "chatbi" else DEMO_TABLES
                cur.execute("SELECT t FROM unnest(%s::text[]) AS t WHERE to_regclass(t) IS NULL", [list(expected)])
                missing = [r[0] for r in cur.fetchall()]
                assert not missing, f"{database} is half-built: tables missing: {missing}"
                cur.execute("SELECT to_regclass('alembic_version') IS NOT NULL")
                has_alembic = cur.fetchone()[0]
                if database == "chatbi":
                    assert has_alembic, "chatbi has no alembic_version table"
                    cur.execute("SELECT version_num FROM alembic_version")
                    versions = [r[0] for r in cur.fetchall()]
                    assert versions == [revision], f"chatbi alembic_version holds {versions}, expected {revision}"
                    cur.execute(
                        "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
                    )
                    count = cur.fetchone()[0]
                    assert count == len(CHATBI_TABLES) + 1, f"chatbi has {count} tables, expected 15 + alembic_version"
                    cur.execute("SELECT count(*) FROM app_users WHERE username = %s", [MARKER])
                else:
                    assert not has_alembic, f"{database} unexpectedly has alembic_version"
                    cur.execute("SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM order_items)")
                    orders, items = cur.fetchone()
                    assert orders > 0 and items > 0, f"{database} holds no demo data ({orders} orders)"
                    cur.execute("SELECT count(*) FROM categories WHERE name = %s", [MARKER])
                marked = cur.fetchone()[0]
        finally:
            conn.close()
        assert marked in (0, 1), f"{database} holds {marked} marker rows"
        return "old" if marked else "new"

    @staticmethod
    def pids_with_env(marker: str) -> list[int]:
        """Processes whose environment holds `marker` (NAME=value): finds detached children by what they inherit."""
        needle = marker.encode()
        pids = []
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                environ = Path(entry.path, "environ").read_bytes()
            except OSError:
                continue
            if needle in environ.split(b"\x00"):
                pids.append(int(entry.name))
        return pids

    def container(self, project: Any) -> dict[str, Any] | None:
        """docker inspect of a project's container (or of a container name); None when there is none."""
        name = project if isinstance(project, str) else project.name
        try:
            return dict(self.docker.api.inspect_container(name))
        except Exception:  # noqa: BLE001 - docker.errors.NotFound, without importing docker here
            return None


@pytest.fixture(scope="session")
def faults(docker_client: Any) -> Faults:
    return Faults(docker_client)


# ---------------------------------------------------------------- a Docker socket we can take away


class DockerSocketProxy:
    """Forwards a private unix socket to the real Docker socket, until close() takes it away.

    close() removes the socket file and cuts every forwarded connection, so a client that was
    talking to the engine through it sees the engine vanish, as if dockerd had stopped.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.dir = tempfile.mkdtemp(prefix="pfx-", dir="/tmp")  # unix socket paths must stay short
        self.path = os.path.join(self.dir, "docker.sock")
        self.url = "unix://" + self.path
        self.requests = 0
        self.closed = False
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(self.path)
        self._server.listen(64)
        self._server.settimeout(0.1)
        threading.Thread(target=self._accept, name="docker-proxy", daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(self.upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self.closed:
                    client.close()
                    upstream.close()
                    return
                self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        try:
            while data := src.recv(65536):
                if count:
                    with self._lock:
                        self.requests += len(re.findall(rb"(?:GET|POST|DELETE|PUT|HEAD) /", data))
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        with self._lock:
            self.closed = True
            sockets, self._sockets = self._sockets, []
        self._server.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def real_docker_socket() -> str | None:
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        return None
    path = host[len("unix://") :]
    return path if os.path.exists(path) else None


@pytest.fixture
def docker_proxy() -> Iterator[Callable[[], DockerSocketProxy]]:
    upstream = real_docker_socket()
    if upstream is None:
        pytest.skip("the Docker engine is not on a local unix socket; cannot put a proxy in front of it")
    made: list[DockerSocketProxy] = []

    def make() -> DockerSocketProxy:
        assert upstream is not None
        proxy = DockerSocketProxy(upstream)
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.close()
        with contextlib.suppress(OSError):
            os.rmdir(proxy.dir)


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


@pytest.fixture(scope="session")
def poll() -> Callable[..., bool]:
    """poll(predicate, timeout): True once predicate() is true, False when time runs out."""
    return wait_until
