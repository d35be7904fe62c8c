"""target: server — provision against a Postgres it does not manage, with a local psql over TCP.

A plain Postgres container started here stands in for a CI service or a managed server. The same
`provision fresh` must give the same end state and the same errors as the Docker target, keep the
password out of argv and output, and refuse a non-local host unless --allow-remote is given.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import yaml

from provision import api
from provision.config import CHATBI_TABLES, DEMO_TABLES
from tests.conftest import HEAD, Project, use_alembic_example

pytestmark = pytest.mark.integration

Cli = Callable[..., subprocess.CompletedProcess[str]]

REPO = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("PROVISION_TEST_IMAGE", "postgres:17")
USER = "chatbi"
# Everything a careless shell, URL or conninfo string would break on.
PASSWORD = "p@ss w'rd\"$\\é:/?#%"
_SQL_ERROR = re.compile(r"SQL error in (\S+):(\d+): ")


@dataclass(frozen=True)
class PlainServer:
    """A Postgres that provision did not create: reachable on 127.0.0.1 and on its bridge address."""

    container: Any
    port: int
    bridge_ip: str

    def connect(self, database: str = "postgres") -> Any:
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=USER, password=PASSWORD, dbname=database)
        conn.autocommit = True
        return conn

    def flags(self) -> list[str]:
        return ["--target", "server", "--host", "127.0.0.1", "--port", str(self.port), "--user", USER]

    def connections_logged(self) -> int:
        """Connection attempts the server has seen so far (it runs with log_connections=on)."""
        return self.container.logs().decode("utf-8", "replace").count("connection received:")


@pytest.fixture(scope="session")
def name_prefix(request: pytest.FixtureRequest) -> str:
    """tests/conftest.py's per-session prefix: its cleanup removes leftovers named with it, and only those."""
    conftest = request.config.pluginmanager.get_plugin(str(REPO / "tests" / "conftest.py"))
    return str(getattr(conftest, "NAME_PREFIX", "provtest-"))


@pytest.fixture(scope="module")
def server(docker_client: Any, name_prefix: str) -> Iterator[PlainServer]:
    name = name_prefix + "server-" + secrets.token_hex(4)
    container = docker_client.containers.run(
        IMAGE,
        ["postgres", "-c", "log_connections=on"],
        name=name,
        detach=True,
        labels={"provision.managed": "true"},  # so the session cleanup in conftest removes it too
        environment={"POSTGRES_USER": USER, "POSTGRES_PASSWORD": PASSWORD, "POSTGRES_DB": "postgres"},
        ports={"5432/tcp": ("127.0.0.1", None)},
    )
    try:
        deadline = time.monotonic() + 90
        port = None
        while port is None:
            container.reload()
            bindings = (container.attrs["NetworkSettings"]["Ports"] or {}).get("5432/tcp") or []
            port = int(bindings[0]["HostPort"]) if bindings else None
            assert container.status != "exited", container.logs().decode()
            assert time.monotonic() < deadline, "no host port published"
            if port is None:
                time.sleep(0.1)
        bridge_ip = next(iter(container.attrs["NetworkSettings"]["Networks"].values()))["IPAddress"]
        plain = PlainServer(container, port, bridge_ip)
        while True:  # a TCP login works only once the init phase (unix socket only) is over
            try:
                plain.connect().close()
                break
            except psycopg2.OperationalError:
                container.reload()
                assert container.status != "exited", container.logs().decode()
                assert time.monotonic() < deadline, container.logs().decode()[-2000:]
                time.sleep(0.2)
        yield plain
    finally:
        container.remove(force=True, v=True)


def _env(**extra: str) -> dict[str, str]:
    return {"PROVISION_PASSWORD": PASSWORD, **extra}


def _no_password(*results: subprocess.CompletedProcess[str]) -> None:
    for result in results:
        for text in (result.stdout, result.stderr):
            assert PASSWORD not in text, text
            assert "p@ss" not in text, text  # not even a prefix, quoted or escaped


class ArgvWatcher:
    """Samples every process's argv (Linux /proc) while provision runs: psql must get the password elsewhere."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    try:
                        argv = (entry / "cmdline").read_bytes().replace(b"\x00", b" ").decode("utf-8", "replace")
                    except OSError:
                        continue
                    if "psql" in argv or "provision" in argv or "alembic" in argv:
                        self.seen.add(argv)
            time.sleep(0.02)

    def __enter__(self) -> ArgvWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _tables(conn: Any) -> set[str]:
    with conn.cursor() as cur:
        cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r[0] for r in cur.fetchall()}


def _rows(conn: Any, query: str) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(query)
        return list(cur.fetchall())


def _snapshot(connect: Callable[[str], Any]) -> dict[str, Any]:
    """What `fresh` leaves behind, per database: tables, Alembic rows, row counts of the demo data."""
    out: dict[str, Any] = {}
    for name in ("chatbi", "chatbi_demo"):
        conn = connect(name)
        try:
            tables = _tables(conn)
            out[name] = {
                "tables": tables,
                "alembic": _rows(conn, "SELECT version_num FROM alembic_version")
                if "alembic_version" in tables
                else [],
                "orders": _rows(conn, "SELECT count(*) FROM orders") if name == "chatbi_demo" else [],
                "columns": _rows(
                    conn,
                    "SELECT table_name, column_name, data_type, is_nullable, column_default"
                    " FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2",
                ),
            }
        finally:
            conn.close()
    return out


def _status(cli: Cli, *args: str, cwd: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = cli(*args, "status", "--json", env=env, cwd=cwd)
    assert result.returncode == 0, result.stderr
    _no_password(result)
    return {d["name"]: d for d in json.loads(result.stdout)["databases"]}


def test_fresh_on_a_server_matches_the_docker_target(
    server: PlainServer, project: Any, cli: Cli, tmp_path: Path
) -> None:
    config = tmp_path / "server.yaml"
    config.write_text(yaml.safe_dump({"cleanup": "sync", "timeout": 60}))
    args = ["-c", str(config), *server.flags()]

    with ArgvWatcher() as argv:
        built = cli(*args, "fresh", "--yes", env=_env(), cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    psql_runs = [a for a in argv.seen if "/psql " in a and f"-p {server.port}" in a]
    assert psql_runs, f"no local psql seen running against the server: {sorted(argv.seen)}"
    assert not [a for a in argv.seen if "p@ss" in a], "the password appeared in a process's argv"
    assert "chatbi: built" in built.stdout and "chatbi_demo: built" in built.stdout, built.stdout
    # Again: now from the cached template, through the same lock, swap and verification.
    again = cli(*args, "fresh", "--yes", "--json", env=_env(), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    actions = {d["name"]: d for d in json.loads(again.stdout)["databases"]}
    assert {d["action"] for d in actions.values()} <= {"cloned", "spare"}, actions
    assert all(d["replaced"] for d in actions.values()), actions
    _no_password(built, again)

    docker = cli("-c", str(project.path), "fresh", "--yes", cwd=tmp_path)
    assert docker.returncode == 0, docker.stderr

    on_server = _snapshot(server.connect)
    on_docker = _snapshot(_docker_connect(project))
    assert set(CHATBI_TABLES) <= on_server["chatbi"]["tables"]
    assert len(on_server["chatbi"]["tables"]) >= 15
    assert set(DEMO_TABLES) <= on_server["chatbi_demo"]["tables"]
    assert on_server["chatbi"]["alembic"] == [("0001_initial_schema",)]
    assert on_server["chatbi_demo"]["orders"][0][0] > 0
    assert on_server == on_docker

    # Stamped with the same provenance: same content hash, up to date, same Alembic revision.
    server_status = _status(cli, *args, cwd=tmp_path, env=_env())
    docker_status = _status(cli, "-c", str(project.path), cwd=tmp_path)
    for name in ("chatbi", "chatbi_demo"):
        assert server_status[name]["content_hash"], server_status[name]
        assert server_status[name]["stale"] is False, server_status[name]
        for key in ("content_hash", "tables", "alembic_versions", "sources"):
            assert server_status[name][key] == docker_status[name][key], (name, key)


def _docker_connect(project: Any) -> Callable[[str], Any]:
    """Connections to the `project` fixture's container (the Docker target), like PlainServer.connect."""

    def connect(name: str) -> Any:
        cfg = project.config()
        return api.connect_admin(cfg) if name == "postgres" else api.connect(cfg, name)

    return connect


def _ledger(tmp_path: Path) -> tuple[dict[str, Any], Path]:
    """A two-file database `ledger`: its config and the path of its second file."""
    sql = tmp_path / "ledger"
    sql.mkdir()
    (sql / "01_schema.sql").write_text(
        "-- ledger schema\nCREATE TABLE accounts (\n    id serial PRIMARY KEY,\n    name text NOT NULL\n);\n"
    )
    second = sql / "02_entries.sql"
    second.write_text(
        "CREATE TABLE entries (\n    id serial PRIMARY KEY,\n    account_id int REFERENCES accounts (id)\n);\n"
    )
    config = {"ledger": {"sql": ["ledger/01_schema.sql", "ledger/02_entries.sql"], "tables": ["accounts", "entries"]}}
    return config, second


_BROKEN = (
    "CREATE TABLE entries (\n"  # 1
    "    id serial PRIMARY KEY,\n"  # 2
    "    account_id int REFERENCES accounts (id),\n"  # 3
    "    amount numeric(12, 2) NOT NULL,\n"  # 4
    "    booked_at timestamptz NOT NULL DEFAULT now()\n"  # 5
    "    memo text,\n"  # 6: the missing comma on line 5 makes this a syntax error at "memo"
    ");\n"  # 7
)
_BROKEN_LINE = 6


def _break_and_rebuild(
    cli: Cli, args: list[str], env: dict[str, str] | None, cwd: Path, second: Path, connect: Callable[[str], Any]
) -> tuple[subprocess.CompletedProcess[str], tuple[str, int]]:
    """Build ledger, add a marker row, break the second file, rebuild; the marker must survive."""
    first = cli(*args, "fresh", "--yes", env=env, cwd=cwd)
    assert first.returncode == 0, first.stderr
    conn = connect("ledger")
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE marker (note text)")
            cur.execute("INSERT INTO marker VALUES ('still here')")
            cur.execute("INSERT INTO accounts (name) VALUES ('kept')")
        conn.commit()
    finally:
        conn.close()

    good = second.read_text()
    second.write_text(_BROKEN)
    try:
        failed = cli(*args, "fresh", "--yes", env=env, cwd=cwd)
    finally:
        second.write_text(good)
    assert failed.returncode == 7, (failed.returncode, failed.stderr)
    found = _SQL_ERROR.search(failed.stderr)
    assert found, failed.stderr
    assert f"{second}:{_BROKEN_LINE}:" in failed.stderr, failed.stderr
    assert "memo" in failed.stderr, failed.stderr

    conn = connect("ledger")
    try:
        assert _rows(conn, "SELECT note FROM marker") == [("still here",)]
        assert _rows(conn, "SELECT name FROM accounts") == [("kept",)]
    finally:
        conn.close()
    conn = connect("postgres")
    try:
        leftovers = _rows(conn, "SELECT datname FROM pg_database WHERE datname LIKE 'ledger\\_\\_stage%'")
    finally:
        conn.close()
    assert leftovers == [], leftovers
    return failed, (found.group(1), int(found.group(2)))


def test_bad_sql_fails_the_same_way_on_both_targets(
    server: PlainServer, project: Any, cli: Cli, tmp_path: Path
) -> None:
    databases, second = _ledger(tmp_path)
    server_config = tmp_path / "server.yaml"
    server_config.write_text(
        yaml.safe_dump(
            {
                "target": "server",
                "host": "127.0.0.1",
                "port": server.port,
                "user": USER,
                "cleanup": "sync",
                "timeout": 60,
                "databases": databases,
            },
            sort_keys=False,
        )
    )
    project.write(databases=databases)

    on_server, server_at = _break_and_rebuild(cli, ["-c", str(server_config)], _env(), tmp_path, second, server.connect)
    on_docker, docker_at = _break_and_rebuild(
        cli, ["-c", str(project.path)], None, tmp_path, second, _docker_connect(project)
    )
    assert server_at == docker_at == (str(second), _BROKEN_LINE)
    assert on_server.returncode == on_docker.returncode == 7
    # The same error text, word for word (the first line; later lines may name the container).
    assert on_server.stderr.splitlines()[0] == on_docker.stderr.splitlines()[0]
    _no_password(on_server, on_docker)


@pytest.mark.parametrize("host", ["10.255.255.1", "db.example.com"])
@pytest.mark.parametrize("how", ["flags", "env", "yaml"])
def test_non_local_host_is_refused_before_anything_happens(cli: Cli, tmp_path: Path, host: str, how: str) -> None:
    args: list[str] = []
    env = _env()
    if how == "flags":
        args = ["--target", "server", "--host", host, "--port", "5432"]
    elif how == "env":
        env.update(PROVISION_TARGET="server", PROVISION_HOST=host, PROVISION_PORT="5432")
    else:
        (tmp_path / "provision.yaml").write_text(yaml.safe_dump({"target": "server", "host": host, "port": 5432}))
    started = time.monotonic()
    result = cli(*args, "fresh", "--yes", env=env, cwd=tmp_path, timeout=30)
    elapsed = time.monotonic() - started
    assert result.returncode == 9, (result.returncode, result.stderr)
    assert host in result.stderr and "--allow-remote" in result.stderr, result.stderr
    assert elapsed < 5, f"refusal took {elapsed:.1f}s: something was attempted first"
    _no_password(result)


def test_a_reachable_remote_server_is_untouched_without_allow_remote(
    server: PlainServer, cli: Cli, tmp_path: Path
) -> None:
    """The bridge address of the same server is a real, reachable, non-local host."""
    args = ["--target", "server", "--host", server.bridge_ip, "--port", "5432", "--user", USER]
    before = server.connections_logged()
    refused = cli(*args, "fresh", "--yes", "--only", "chatbi", env=_env(), cwd=tmp_path)
    assert refused.returncode == 9, refused.stderr
    # The server logs connections in the order they arrive: once our own marker connection is in
    # the log, any connection provision made before it would be there too.
    server.connect().close()
    deadline = time.monotonic() + 10
    while server.connections_logged() == before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.connections_logged() == before + 1, "provision connected although it refused"
    before += 1

    config = tmp_path / "remote.yaml"
    config.write_text(yaml.safe_dump({"cleanup": "sync"}))
    allowed = cli("-c", str(config), *args, "fresh", "--yes", "--only", "chatbi", env=_env(PROVISION_ALLOW_REMOTE="1"))
    assert allowed.returncode == 0, allowed.stderr
    assert server.connections_logged() > before
    _no_password(refused, allowed)


def test_migrations_run_against_a_server_target_with_the_password_only_in_their_environment(
    server: PlainServer, cli: Cli, tmp_path: Path
) -> None:
    """The example's Alembic migrations reach head on an existing server; the URL they get carries a
    password full of URL-special characters, which must survive quoting and never show in argv."""
    project = use_alembic_example(Project(tmp_path / "server.yaml", "unused", {"cleanup": "sync"}).write())
    args = ["-c", str(project.path), *server.flags()]
    with ArgvWatcher() as argv:
        built = cli(*args, "fresh", "--yes", env=_env(), cwd=tmp_path)
        checked = cli(*args, "check", env=_env(), cwd=tmp_path)
    assert built.returncode == 0, built.stdout + built.stderr
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert any("alembic" in seen for seen in argv.seen), "the watcher never saw the migrations run"
    for seen in argv.seen:
        assert PASSWORD not in seen and "p@ss" not in seen, seen
    _no_password(built, checked)
    conn = server.connect("chatbi")
    try:
        assert _rows(conn, "SELECT version_num FROM alembic_version") == [(HEAD,)]
    finally:
        conn.close()


def test_snapshots_on_a_server_target(server: PlainServer, cli: Cli, tmp_path: Path) -> None:
    """save and restore against a server provision did not create; export names what it needs."""
    config = tmp_path / "server.yaml"
    config.write_text(yaml.safe_dump({"cleanup": "sync"}))
    args = ["-c", str(config), *server.flags()]
    assert cli(*args, "fresh", "--yes", "--only", "chatbi", env=_env(), cwd=tmp_path).returncode == 0
    conn = server.connect("chatbi")
    try:
        with conn.cursor() as cur:
            cur.execute("INSERT INTO app_users (email) VALUES ('server-snap@example.com')")
    finally:
        conn.close()
    saved = cli(*args, "snapshot", "save", "srv", "--db", "chatbi", env=_env(), cwd=tmp_path)
    assert saved.returncode == 0, saved.stderr
    again = cli(*args, "fresh", "--yes", "--only", "chatbi", env=_env(), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    restored = cli(*args, "snapshot", "restore", "srv", "--yes", "--json", env=_env(), cwd=tmp_path)
    assert restored.returncode == 0, restored.stderr
    assert json.loads(restored.stdout)["databases"][0]["how"] == "standby"
    conn = server.connect("chatbi")
    try:
        assert _rows(conn, "SELECT email FROM app_users") == [("server-snap@example.com",)]
    finally:
        conn.close()
    exported = cli(*args, "snapshot", "export", "srv", str(tmp_path / "srv.dump"), env=_env(), cwd=tmp_path)
    if exported.returncode != 0:
        # A local pg_dump older than the server refuses; the error must say so, and leave no file.
        assert exported.returncode == 10 and "version mismatch" in exported.stderr, exported.stderr
        assert not (tmp_path / "srv.dump").exists()
    else:
        assert (tmp_path / "srv.dump").read_bytes()[:5] == b"PGDMP"
    _no_password(saved, restored, exported)
    assert cli(*args, "snapshot", "rm", "srv", env=_env(), cwd=tmp_path).returncode == 0
