"""Bad inputs: each is refused with exit code 2 and a clear message, and nothing is touched:
no container is created, and an existing server's databases stay exactly as they were.

Passwords with `$ ' " \\ space` and non-ASCII characters, on the other hand, work end to end.
"""

from __future__ import annotations

import secrets
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import yaml

pytestmark = [pytest.mark.faults, pytest.mark.integration]


@dataclass(frozen=True)
class BadInput:
    id: str
    yaml: str = ""  # appended to the base config (which has no port: key when this sets one)
    env: dict[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()  # global options, before the verb
    expect: tuple[str, ...] = ()  # substrings of stderr


def _db(name: str, sql: str = "ok.sql") -> str:
    return f"databases:\n  {name}:\n    sql: {sql}\n"


LONG_NAME = "a" * 64
BAD_INPUTS = (
    BadInput("yaml-unclosed-bracket", "databases: [chatbi\n", expect=("invalid YAML", "line 7")),
    BadInput("yaml-bad-indentation", "timeout: 60\n  image: x\n", expect=("invalid YAML", "line 7")),
    BadInput("yaml-tab-indent", "databases:\n\tchatbi: {}\n", expect=("invalid YAML", "line 7")),
    BadInput("type-port-abc", "port: abc\n", expect=("port must be a whole number", "line 6")),
    BadInput("type-timeout-list", "timeout: [1, 2]\n", expect=("timeout must be", "line 6")),
    BadInput("type-cache-text", "cache: maybe\n", expect=("cache must be true or false", "line 6")),
    BadInput("type-databases-list", "databases: [chatbi]\n", expect=("databases must be a mapping", "line 6")),
    BadInput("unknown-key", "timout: 60\n", expect=("unknown key 'timout'", "line 6", "did you mean 'timeout'")),
    BadInput(
        "unknown-database-key",
        _db("app") + "    tabels: [a]\n",
        expect=("unknown key 'tabels'", "line 9", "did you mean 'tables'"),
    ),
    BadInput("sql-missing", _db("app", "missing.sql"), expect=("SQL file not found", "missing.sql")),
    BadInput("sql-empty", _db("app", "empty.sql"), expect=("SQL file is empty", "empty.sql")),
    BadInput("sql-binary", _db("app", "binary.sql"), expect=("binary", "binary.sql")),
    BadInput("sql-not-utf8", _db("app", "latin1.sql"), expect=("not UTF-8", "latin1.sql")),
    BadInput("db-name-double-quote", _db('"chat\\"bi"'), expect=("invalid database name", "line 7")),
    BadInput("db-name-single-quote", _db('"chat\'bi"'), expect=("invalid database name", "line 7")),
    BadInput("db-name-semicolon", _db('"chatbi; DROP DATABASE chatbi"'), expect=("invalid database name", "line 7")),
    BadInput("db-name-64-bytes", _db(LONG_NAME), expect=("64 bytes", "63")),
    BadInput("db-name-non-ascii", _db("d" + "é" * 31 + "x"), expect=("invalid database name",)),
    BadInput("port-70000", "port: 70000\n", expect=("port must be a port number", "line 6")),
    BadInput("port-negative", "port: -1\n", expect=("port must be a port number", "line 6")),
    BadInput("port-flag-70000", args=("--port", "70000"), expect=("port must be a port number", "--port")),
    BadInput("port-flag-abc", args=("--port", "abc"), expect=("'abc' is not a valid integer",)),
    BadInput("env-port-abc", env={"PROVISION_PORT": "abc"}, expect=("PROVISION_PORT", "whole number")),
    BadInput("env-port-70000", env={"PROVISION_PORT": "70000"}, expect=("PROVISION_PORT", "port number")),
    BadInput("env-unknown", env={"PROVISION_PROT": "5432"}, expect=("PROVISION_PROT", "did you mean 'PROVISION_PORT'")),
)


def _write_inputs(directory: Path) -> None:
    (directory / "ok.sql").write_text("CREATE TABLE t (id int);\n")
    (directory / "empty.sql").write_text("  \n\n")
    (directory / "binary.sql").write_bytes(b"CREATE TABLE t (id int);\n\x00\x01\x02\x89PNG\r\n")
    (directory / "latin1.sql").write_bytes("CREATE TABLE caf\u00e9 (id int);\n".encode("latin-1") * 4)


def _config_text(name: str, bad: BadInput) -> str:
    lines = [f"container: {name}", f"volume: {name}-data", "image: postgres:17", "cleanup: sync"]
    if not bad.yaml.startswith("port:"):
        lines.append("port: 0")
    text = "\n".join(lines) + "\n"
    # Keep every bad line at the same place (line 6 onwards), so the expected line numbers hold.
    while text.count("\n") < 5:
        text += "# padding\n"
    return text + bad.yaml


@dataclass
class Built:
    project: Any
    snapshot: dict[str, Any]


@pytest.fixture(scope="module")
def built(shared_project: Any, faults: Any) -> Built:
    """An existing server with chatbi and chatbi_demo built and holding a marker row each."""
    project = shared_project()
    result = faults.run(project.path, "fresh", "--yes")
    assert result.returncode == 0, faults.describe(result)
    for db in ("chatbi", "chatbi_demo"):
        faults.insert_marker(project, db)
    _write_inputs(project.dir)
    return Built(project, _snapshot(faults, project))


def _snapshot(faults: Any, project: Any) -> dict[str, Any]:
    info = faults.container(project)
    assert info is not None
    return {
        "container": (info["Id"], info["State"]["Status"], info["State"]["StartedAt"], info["RestartCount"]),
        "databases": faults.databases(project),
        "markers": {db: faults.classify(project, db) for db in ("chatbi", "chatbi_demo")},
    }


@pytest.mark.parametrize("bad", BAD_INPUTS, ids=[b.id for b in BAD_INPUTS])
def test_bad_input_is_refused_and_touches_nothing(
    built: Built, faults: Any, docker_client: Any, tally: Any, bad: BadInput
) -> None:
    project = built.project
    absent = "provtest-" + secrets.token_hex(4)  # a container that must not come into being
    for target in (project.name, absent):
        config = project.dir / f"bad-{bad.id}-{target}.yaml"
        config.write_text(_config_text(target, bad))
        result = faults.run(config, *bad.args, "fresh", "--yes", env=bad.env)
        shown = f"{bad.id} (container {target}):\n{config.read_text()}\n" + faults.describe(result)
        assert result.returncode == 2, shown
        assert result.stderr.startswith(("Error: ", "Usage: ")), shown
        for text in bad.expect:
            assert text in result.stderr, f"expected {text!r} in the message\n" + shown
        assert "Traceback" not in result.stdout + result.stderr, shown
    tally.bad_inputs.append(bad.id)

    assert _snapshot(faults, project) == built.snapshot, "a refused input changed the server"
    assert faults.container(absent) is None, f"container {absent} was created"
    assert not docker_client.volumes.list(filters={"name": absent}), f"volume {absent}-data was created"


# ---------------------------------------------------------------- awkward passwords work

PASSWORD = "p$a'ss\"w\\ord é中"


def test_awkward_password_works_end_to_end(make_project: Any, faults: Any, tally: Any) -> None:
    # In YAML a literal `$` is written `$$` (the config interpolates ${VAR}).
    project = make_project(password=PASSWORD.replace("$", "$$"))
    assert "$$" in yaml.safe_load(project.path.read_text())["password"]

    result = faults.run(project.path, "fresh", "--yes")
    assert result.returncode == 0, faults.describe(result)
    assert "chatbi: built" in result.stdout

    # The same password through PROVISION_PASSWORD, which is taken literally (no interpolation).
    for env in ({}, {"PROVISION_PASSWORD": PASSWORD}):
        url = faults.run(project.path, "url", "--show-password", env=env)
        assert url.returncode == 0, faults.describe(url)
        parsed = urllib.parse.urlparse(url.stdout.strip())
        assert parsed.password is not None
        assert urllib.parse.unquote(parsed.password) == PASSWORD, url.stdout
        conn = psycopg2.connect(
            host=parsed.hostname,
            port=parsed.port,
            user=urllib.parse.unquote(parsed.username or ""),
            password=urllib.parse.unquote(parsed.password),
            dbname=parsed.path.lstrip("/"),
        )
        conn.close()

    conn = faults.connect(project, "chatbi", password=PASSWORD)
    conn.close()
    status = faults.run(project.path, "status", env={"PROVISION_PASSWORD": PASSWORD})
    assert status.returncode == 0 and "chatbi" in status.stdout and "not reachable" not in status.stdout, (
        faults.describe(status)
    )
    # A second run over the built state (drift check compares the password) is fine too.
    again = faults.run(project.path, "fresh", "--yes", env={"PROVISION_PASSWORD": PASSWORD})
    assert again.returncode == 0, faults.describe(again)
