"""Fixtures for leases on a shared server: a postgres:17 container, and client "machines" in network namespaces.

Each client is a network namespace made here (`ip netns add` and a veth pair) with its own address
in a private 10.203.X.0/24 the fixture picked unused; the server's port is published on the host
end of every veth (and on 127.0.0.1 for the test's own checks), so a client reaches it over its
own link, as another machine would. Traffic goes only to loopback and to these namespaces.
Everything is removed at the end, however the session ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import yaml

from tests.conftest import IMAGE, NAME_PREFIX

CLIENTS = 4
SUPER_PASSWORD = "super-" + secrets.token_hex(4)
CI_PASSWORD = "ci-" + secrets.token_hex(6)
KEEP = ("postgres", "template0", "template1")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def _free_subnet() -> int:
    """A third octet X such that nothing on this host uses 10.203.X.0/24 yet."""
    used = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True, check=True).stdout
    for _ in range(200):
        octet = secrets.randbelow(200) + 20
        if all(f"10.203.{octet + i}." not in used for i in range(CLIENTS)):
            return octet
    raise RuntimeError("no free 10.203.X.0/24 subnets")


@dataclass
class Machine:
    """One client: a network namespace with its own address, reaching the server at `server_addr`."""

    ns: str
    addr: str
    server_addr: str


@pytest.fixture(scope="session")
def machines() -> Iterator[list[Machine]]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        message = "needs root and iproute2 (`ip`) for network namespaces"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    tag = secrets.token_hex(2)
    base = _free_subnet()
    made: list[Machine] = []
    links: list[str] = []
    try:
        for i in range(CLIENTS):
            ns, host_end, ns_end = f"pvl{tag}{i}", f"pvh{tag}{i}", f"pvn{tag}{i}"
            server_addr, addr = f"10.203.{base + i}.1", f"10.203.{base + i}.2"
            _ip("netns", "add", ns)
            made.append(Machine(ns, addr, server_addr))
            _ip("link", "add", host_end, "type", "veth", "peer", "name", ns_end)
            links.append(host_end)
            _ip("link", "set", ns_end, "netns", ns)
            _ip("addr", "add", f"{server_addr}/24", "dev", host_end)
            _ip("link", "set", host_end, "up")
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", ns_end)
            _ip("-n", ns, "link", "set", ns_end, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield made
    finally:
        for machine in made:
            with contextlib.suppress(subprocess.CalledProcessError):
                _ip("netns", "del", machine.ns)
        for link in links:
            with contextlib.suppress(subprocess.CalledProcessError):
                _ip("link", "del", link)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SharedServer:
    """The shared server: a postgres:17 container; `ci` is the non-superuser role clients lease as."""

    port: int
    container: Any

    def connect(self, dbname: str = "postgres", user: str = "postgres") -> Any:
        password = SUPER_PASSWORD if user == "postgres" else CI_PASSWORD
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=user, password=password, dbname=dbname)
        conn.autocommit = True
        return conn

    def query(self, sql: str, params: Any = None, dbname: str = "postgres") -> list[tuple[Any, ...]]:
        conn = self.connect(dbname)
        try:
            cur = conn.cursor()
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def databases(self) -> set[str]:
        return {r[0] for r in self.query("SELECT datname FROM pg_database")}

    def ci_endpoint(self) -> Any:
        """Where the test process itself reaches the server as `ci` (through loopback)."""
        from provision.endpoint import Endpoint

        return Endpoint("127.0.0.1", self.port, "ci", CI_PASSWORD)

    def reset(self) -> None:
        """Drop every database but the built-in ones: each test starts from an empty server."""
        for name in self.databases() - set(KEEP):
            self.query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                [name],
            )
            self.query(f'ALTER DATABASE "{name}" IS_TEMPLATE false')
            self.query(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def shared_server(machines: list[Machine], docker_client: Any) -> Iterator[SharedServer]:
    port = _free_port()
    bindings = [("127.0.0.1", port)] + [(m.server_addr, port) for m in machines]
    container = docker_client.containers.run(
        IMAGE,
        name=NAME_PREFIX + "lease-" + secrets.token_hex(3),
        detach=True,
        environment={"POSTGRES_PASSWORD": SUPER_PASSWORD},
        ports={"5432/tcp": bindings},
        labels={"provision.managed": "true"},
        tmpfs={"/var/lib/postgresql/data": "rw"},
    )
    server = SharedServer(port, container)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                # Through a veth address: the final server (not the init one, which listens on the socket only).
                server.query("SELECT 1")
                break
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        # As on a managed server: a login role with CREATEDB, no superuser.
        server.query(f"CREATE ROLE ci LOGIN CREATEDB PASSWORD '{CI_PASSWORD}'")
        yield server
    finally:
        with contextlib.suppress(Exception):
            container.remove(force=True, v=True)


@dataclass
class Client:
    """provision as run on one machine: `ip netns exec NS python -m provision -c CONFIG ...`."""

    machine: Machine
    config: Path

    def argv(self, *args: str) -> list[str]:
        return [
            "ip",
            "netns",
            "exec",
            self.machine.ns,
            sys.executable,
            "-m",
            "provision",
            "-c",
            str(self.config),
            *args,
        ]

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISION_")}
        env["PROVISION_PASSWORD"] = CI_PASSWORD  # never in argv
        # No spares made ahead unless a test asks: they would make the disk arithmetic depend on timing.
        env["PROVISION_LEASE_SPARES"] = "0"
        env.update(extra)
        return env

    def run(self, *args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args), capture_output=True, text=True, env=self.env(**env), cwd=self.config.parent,
            timeout=timeout,
        )  # fmt: skip

    def popen(self, *args: str, **env: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.argv(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env(**env),
            cwd=self.config.parent, start_new_session=True,
        )  # fmt: skip

    def json(self, *args: str, **env: str) -> Any:
        result = self.run(*args, "--json", **env)
        assert result.returncode == 0, f"{args}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
        return json.loads(result.stdout)


@dataclass
class LeaseWorld:
    """The shared server, an app's sources in a directory, and one client per machine."""

    server: SharedServer
    clients: list[Client]
    sources: Path
    started: list[subprocess.Popen[str]] = field(default_factory=list)

    def start(self, client: Client, *args: str, **env: str) -> subprocess.Popen[str]:
        """A client process running in the background (killed at the end of the test if still running)."""
        proc = client.popen(*args, **env)
        self.started.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[str], sig: int = signal.SIGKILL) -> None:
        """Send `sig` to a process this test started, by its pid, and reap it."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)
            proc.wait(timeout=60)

    def write_sources(self, sql: str) -> None:
        self.sources.write_text(sql)

    def registry(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        return self.server.query(sql, params, dbname="provision_registry")

    def copy_rows(self, copy: str) -> list[tuple[Any, ...]]:
        conn = self.server.connect(copy, user="ci")
        try:
            cur = conn.cursor()
            cur.execute("SELECT name FROM items ORDER BY id")
            return cur.fetchall()
        finally:
            conn.close()

    def wait_until_expired(self, name: str, timeout: float = 120) -> None:
        """Until the server's clock passes the lease's expiry (the server's clock alone decides)."""
        deadline = time.monotonic() + timeout
        while self.registry("SELECT expires > clock_timestamp() FROM leases WHERE name = %s", [name]) == [(True,)]:
            assert time.monotonic() < deadline, f"lease {name} did not expire within {timeout}s"
            time.sleep(0.2)


APP_SQL = (
    "CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL);\nINSERT INTO items (name) VALUES ('a'), ('b');\n"
)


@pytest.fixture
def lease_world(tmp_path: Path, machines: list[Machine], shared_server: SharedServer) -> Iterator[LeaseWorld]:
    shared_server.reset()
    sources = tmp_path / "app.sql"
    # Unique per test, so no template of an earlier test's sources can serve this one.
    sources.write_text(f"-- {secrets.token_hex(4)}\n" + APP_SQL)
    clients = []
    for machine in machines:
        config = tmp_path / machine.ns / "provision.yaml"
        config.parent.mkdir()
        data = {
            "target": "server",
            "host": machine.server_addr,
            "port": shared_server.port,
            "user": "ci",
            "timeout": 60,
            "databases": {"app": {"sql": str(sources), "tables": ["items"]}},
        }
        config.write_text(yaml.safe_dump(data, sort_keys=False))
        clients.append(Client(machine, config))
    world = LeaseWorld(shared_server, clients, sources)
    yield world
    for proc in world.started:
        # No client process of a test outlives it (by pid: only the ones this test started).
        world.stop(proc)
    shared_server.reset()
