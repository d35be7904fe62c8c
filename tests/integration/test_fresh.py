"""`provision fresh` end to end against real containers, real psql and real Alembic (issue 3, issue 5 cache)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from provision.config import CHATBI_TABLES, DEMO_TABLES, builtin_sql_dir
from tests.conftest import Project, databases, fresh, query, run_cli

pytestmark = pytest.mark.integration

CHATBI_ONLY = {
    "chatbi": {
        "sql": ["builtin:chatbi/init_app_tables.sql"],
        "alembic_revision": "0001_initial_schema",
        "tables": list(CHATBI_TABLES),
    }
}


def assert_chatbi_complete(project: Project) -> None:
    tables = {r[0] for r in query(project, "chatbi", "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert set(CHATBI_TABLES) <= tables
    assert tables - set(CHATBI_TABLES) == {"alembic_version"}
    assert query(project, "chatbi", "SELECT version_num FROM alembic_version") == [("0001_initial_schema",)]


def test_fresh_builds_both_databases_from_nothing_and_again(project: Project) -> None:
    first = fresh(project, "--yes")
    assert first.returncode == 0, first.stderr
    assert_chatbi_complete(project)
    demo = {r[0] for r in query(project, "chatbi_demo", "SELECT tablename FROM pg_tables WHERE schemaname='public'")}
    assert set(DEMO_TABLES) <= demo
    orders = query(project, "chatbi_demo", "SELECT count(*) FROM orders")[0][0]
    assert 9000 <= orders <= 11000

    query(project, "chatbi", "INSERT INTO app_users (email) VALUES ('dev@example.com')")
    second = fresh(project, "--yes", "--json")
    assert second.returncode == 0, second.stderr
    result = json.loads(second.stdout)
    assert {d["name"]: d["action"] for d in result["databases"]} == {"chatbi": "spare", "chatbi_demo": "spare"}
    assert_chatbi_complete(project)
    assert query(project, "chatbi", "SELECT count(*) FROM app_users") == [(0,)]
    assert query(project, "chatbi_demo", "SELECT count(*) FROM orders")[0][0] == orders
    leftovers = [d for d in databases(project) if "__stage_" in d or "__old_" in d]
    assert leftovers == []


def test_demo_scale_is_linear_and_skip_demo_and_only(project: Project) -> None:
    assert fresh(project, "--yes", "--demo-scale", "2").returncode == 0
    assert 18000 <= query(project, "chatbi_demo", "SELECT count(*) FROM orders")[0][0] <= 22000
    query(project, "chatbi_demo", "CREATE TABLE keep_me (id int)")
    query(project, "chatbi", "CREATE TABLE scratch (id int)")
    assert fresh(project, "--yes", "--skip-demo").returncode == 0
    assert query(project, "chatbi_demo", "SELECT to_regclass('keep_me') IS NOT NULL") == [(True,)]
    assert query(project, "chatbi", "SELECT to_regclass('scratch')") == [(None,)]
    assert fresh(project, "--yes", "--only", "chatbi_demo").returncode == 0
    assert query(project, "chatbi_demo", "SELECT to_regclass('keep_me')") == [(None,)]
    unknown = fresh(project, "--yes", "--only", "chatbi_dmo")
    assert unknown.returncode == 2 and "did you mean 'chatbi_demo'" in unknown.stderr


ALEMBIC_INI = """[alembic]
script_location = %(here)s/migrations

[loggers]
keys = root,alembic
[handlers]
keys = console
[formatters]
keys = generic
[logger_root]
level = WARNING
handlers = console
[logger_alembic]
level = INFO
handlers =
qualname = alembic
[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic
[formatter_generic]
format = %(levelname)s [%(name)s] %(message)s
"""

ALEMBIC_ENV = """
import os
from logging.config import fileConfig
from alembic import context
from sqlalchemy import create_engine

fileConfig(context.config.config_file_name)

def run_migrations_online():
    engine = create_engine(os.environ["ALEMBIC_URL"])
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=None)
        with context.begin_transaction():
            context.run_migrations()

run_migrations_online()
"""

REVISION = """
from alembic import op
import sqlalchemy as sa

revision = {rev!r}
down_revision = {down!r}
branch_labels = None
depends_on = None

def upgrade():
    {body}

def downgrade():
    pass
"""


def _alembic_project(root: Path) -> Path:
    (root / "migrations" / "versions").mkdir(parents=True)
    (root / "alembic.ini").write_text(ALEMBIC_INI)
    (root / "migrations" / "env.py").write_text(ALEMBIC_ENV)
    (root / "migrations" / "script.py.mako").write_text("")
    (root / "migrations" / "versions" / "0001_initial_schema.py").write_text(
        REVISION.format(
            rev="0001_initial_schema",
            down=None,
            body='op.execute("SELECT 1")  # the real 0001 creates the tables provision bootstraps',
        )
    )
    (root / "migrations" / "versions" / "0002_feature_flags.py").write_text(
        REVISION.format(
            rev="0002_feature_flags",
            down="0001_initial_schema",
            body='op.create_table("feature_flags", sa.Column("id", sa.Integer, primary_key=True))',
        )
    )
    return root / "alembic.ini"


def _alembic(ini: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    alembic = Path(sys.executable).parent / "alembic"
    return subprocess.run(
        [str(alembic), "-c", str(ini), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "ALEMBIC_URL": url},
        timeout=120,
    )


def test_real_alembic_sees_the_stamp_and_upgrades_only_what_is_new(project: Project, tmp_path: Path) -> None:
    project.write(databases=CHATBI_ONLY)
    assert fresh(project, "--yes").returncode == 0
    url = run_cli("-c", str(project.path), "url", "chatbi", "--show-password", cwd=project.dir).stdout.strip()
    url = url.replace("postgresql://", "postgresql+psycopg2://", 1)
    ini = _alembic_project(tmp_path / "app")

    current = _alembic(ini, url, "current")
    assert current.returncode == 0, current.stderr
    assert "0001_initial_schema" in current.stdout

    upgrade = _alembic(ini, url, "upgrade", "head")
    assert upgrade.returncode == 0, upgrade.stderr
    assert "Running upgrade 0001_initial_schema -> 0002_feature_flags" in upgrade.stderr
    assert "-> 0001_initial_schema" not in upgrade.stderr
    assert query(project, "chatbi", "SELECT version_num FROM alembic_version") == [("0002_feature_flags",)]
    assert query(project, "chatbi", "SELECT to_regclass('feature_flags') IS NOT NULL") == [(True,)]

    # The hand-typed INSERT ... ON CONFLICT DO NOTHING leaves two rows; Alembic then refuses.
    query(project, "chatbi", "INSERT INTO alembic_version VALUES ('0001_initial_schema')")
    assert len(query(project, "chatbi", "SELECT * FROM alembic_version")) == 2
    assert fresh(project, "--yes").returncode == 0
    assert query(project, "chatbi", "SELECT version_num FROM alembic_version") == [("0001_initial_schema",)]
    current = _alembic(ini, url, "current")
    assert current.returncode == 0 and "0001_initial_schema" in current.stdout


def test_a_broken_sql_file_names_file_and_line_and_loses_nothing(project: Project) -> None:
    project.write(databases=CHATBI_ONLY)
    assert fresh(project, "--yes").returncode == 0
    query(project, "chatbi", "INSERT INTO app_users (email) VALUES ('marker@example.com')")

    broken = project.dir / "patches.sql"
    broken.write_text("-- patches\nCREATE TABLE fine (id int);\n\nCREAT TABLE broken (id int);\n")
    dbs = dict(CHATBI_ONLY)
    dbs["chatbi"] = {**CHATBI_ONLY["chatbi"], "sql": ["builtin:chatbi/init_app_tables.sql", "patches.sql"]}
    project.write(databases=dbs)
    result = fresh(project, "--yes")
    assert result.returncode == 7
    assert "patches.sql:4" in result.stderr
    assert "CREAT TABLE broken" in result.stderr
    assert "Traceback" not in result.stderr
    assert query(project, "chatbi", "SELECT email FROM app_users") == [("marker@example.com",)]
    assert not [d for d in databases(project) if "__stage_" in d]

    # A multi-line statement: the error is on the statement's third line.
    broken.write_text("-- patches\nSELECT 1\n  FROM pg_class\n  WHERE nosuchcolumn = 2;\n")
    result = fresh(project, "--yes")
    assert result.returncode == 7
    assert "patches.sql:4" in result.stderr
    assert "nosuchcolumn" in result.stderr
    assert query(project, "chatbi", "SELECT email FROM app_users") == [("marker@example.com",)]


PSQL_FEATURES = r"""-- a bootstrap that uses what psql -f understands
\set ON_ERROR_STOP on
CREATE TABLE items (id int PRIMARY KEY, label text, note text);
COPY items (id, label, note) FROM stdin;
1	alpha	has a ; semicolon
2	beta	\N
3	gamma	tab\tinside
\.
CREATE FUNCTION add_one(x int) RETURNS int LANGUAGE plpgsql AS $body$
BEGIN
  -- a ; inside a dollar-quoted body
  RETURN x + 1;
END;
$body$;
\set answer 42
INSERT INTO items VALUES (:answer, 'from a psql variable', $$it's $quoted$$);
DO $$ BEGIN PERFORM add_one(1); END $$;
\echo loaded
"""


def test_dollar_quotes_copy_and_meta_commands_load_as_psql_f_would(project: Project, docker_client: Any) -> None:
    (project.dir / "features.sql").write_text(PSQL_FEATURES)
    project.write(databases={"features": {"sql": ["features.sql"], "tables": ["items"]}})
    result = fresh(project, "--yes")
    assert result.returncode == 0, result.stderr

    container = docker_client.containers.get(project.name)
    container.exec_run(["psql", "-U", "chatbi", "-d", "postgres", "-c", "CREATE DATABASE reference"])
    import io
    import tarfile

    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        body = PSQL_FEATURES.encode()
        info = tarfile.TarInfo("features.sql")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    container.put_archive("/tmp", data.getvalue())
    code, out = container.exec_run(["psql", "-X", "-U", "chatbi", "-d", "reference", "-f", "/tmp/features.sql"])
    assert code == 0, out

    for sql in ["SELECT * FROM items ORDER BY id", "SELECT prosrc FROM pg_proc WHERE proname = 'add_one'"]:
        assert query(project, "features", sql) == query(project, "reference", sql)
    assert len(query(project, "features", "SELECT * FROM items")) == 4


def test_two_runs_at_the_same_moment_both_succeed(project: Project) -> None:
    assert run_cli("-c", str(project.path), "up", cwd=project.dir).returncode == 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISION_")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "provision", "-c", str(project.path), "fresh", "--yes"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=project.dir,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert any("waiting for" in err for _, err in outputs)
    assert_chatbi_complete(project)
    assert not [d for d in databases(project) if "__stage_" in d or "__old_" in d]


def test_an_open_session_does_not_block_fresh_and_is_closed(project: Project) -> None:
    project.write(databases=CHATBI_ONLY)
    assert fresh(project, "--yes").returncode == 0
    holdout = subprocess.Popen(
        ["docker", "exec", "-i", "-e", "PGAPPNAME=holdout", project.name, "psql", "-U", "chatbi", "-d", "chatbi"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert holdout.stdin is not None
        holdout.stdin.write("SELECT 1;\n")
        holdout.stdin.flush()
        deadline = time.monotonic() + 10
        while not query(project, "postgres", "SELECT 1 FROM pg_stat_activity WHERE application_name = 'holdout'"):
            assert time.monotonic() < deadline, "the holdout session never connected"
            time.sleep(0.1)
        result = fresh(project, "--yes")
        assert result.returncode == 0, result.stderr
        assert query(project, "postgres", "SELECT 1 FROM pg_stat_activity WHERE application_name = 'holdout'") == []
        with contextlib.suppress(BrokenPipeError):
            holdout.stdin.write("SELECT 2;\n")
            holdout.stdin.close()
        holdout.wait(timeout=10)
        assert holdout.stderr is not None
        err = holdout.stderr.read()
        assert "terminating connection" in err or "server closed the connection" in err
    finally:
        holdout.kill()
    assert_chatbi_complete(project)


def test_sqlclient_example_builds_from_config_alone(project: Project) -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "sqlclient"
    target = project.dir / "sqlclient"
    shutil.copytree(example, target)
    env = {
        "PROVISION_CONTAINER": project.name,
        "PROVISION_VOLUME": project.name + "-data",
        "PROVISION_PORT": "0",
        "PROVISION_CLEANUP": "sync",
        "PROVISION_IMAGE": project.data["image"],
    }
    result = run_cli("-c", str(target / "provision.yaml"), "fresh", "--yes", env=env, cwd=project.dir)
    assert result.returncode == 0, result.stderr
    url = run_cli("-c", str(target / "provision.yaml"), "url", "--show-password", env=env, cwd=project.dir)
    parsed = urllib.parse.urlparse(url.stdout.strip())
    conn = psycopg2.connect(
        host=parsed.hostname, port=parsed.port, user="postgres", password="postgres", dbname="sqlclient"
    )
    cur = conn.cursor()
    cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
    assert [r[0] for r in cur.fetchall()] == ["database_connections", "query_executions", "sessions", "users"]
    cur.execute(
        "SELECT conrelid::regclass::text, confrelid::regclass::text, confdeltype FROM pg_constraint "
        "WHERE contype = 'f' ORDER BY 1, 2"
    )
    assert cur.fetchall() == [
        ("database_connections", "users", "c"),
        ("query_executions", "database_connections", "c"),
        ("query_executions", "users", "c"),
        ("sessions", "users", "c"),
    ]
    cur.execute("SELECT data_type FROM information_schema.columns WHERE table_name = 'users' AND column_name = 'id'")
    assert cur.fetchall() == [("uuid",)]
    cur.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")
    indexes = {r[0] for r in cur.fetchall()}
    conn.close()
    assert len(indexes) >= 8  # 4 primary keys plus the lookup and foreign-key indexes
    assert any("query_executions" in i and "created_at" in i for i in indexes)


def test_dry_run_touches_nothing(project: Project, docker_client: Any) -> None:
    result = fresh(project, "--dry-run")
    assert result.returncode == 0, result.stderr
    sha = hashlib.sha256((builtin_sql_dir() / "chatbi" / "init_app_tables.sql").read_bytes()).hexdigest()
    assert sha in result.stdout
    assert "stamp alembic_version = 0001_initial_schema" in result.stdout
    assert not docker_client.containers.list(all=True, filters={"name": project.name})
    plan = json.loads(fresh(project, "--dry-run", "--json").stdout)
    assert [d["name"] for d in plan["databases"]] == ["chatbi", "chatbi_demo"]


def test_replacing_data_needs_confirmation_without_a_terminal(project: Project) -> None:
    project.write(databases=CHATBI_ONLY)
    assert fresh(project, "--yes").returncode == 0
    query(project, "chatbi", "INSERT INTO app_users (email) VALUES ('keep@example.com')")
    refused = fresh(project, input="")  # stdin is a pipe, not a terminal
    assert refused.returncode == 9
    assert "--yes" in refused.stderr
    assert query(project, "chatbi", "SELECT email FROM app_users") == [("keep@example.com",)]


def test_cache_provenance_and_staleness(project: Project) -> None:
    sql = project.dir / "schema.sql"
    sql.write_text("CREATE TABLE t (id int);\n")
    project.write(databases={"app": {"sql": ["schema.sql"], "tables": ["t"]}})
    first = json.loads(fresh(project, "--yes", "--json").stdout)
    assert first["databases"][0]["action"] == "built"
    status = json.loads(run_cli("-c", str(project.path), "status", "--json", cwd=project.dir).stdout)
    app = status["databases"][0]
    assert app["stale"] is False
    assert app["sources"][0][0] == "schema.sql"
    assert app["content_hash"] == first["databases"][0]["content_hash"]
    assert [t["current"] for t in status["templates"]] == [True]

    second = json.loads(fresh(project, "--yes", "--json").stdout)
    assert second["databases"][0]["action"] == "spare"
    no_cache = json.loads(fresh(project, "--yes", "--json", "--no-cache").stdout)
    assert no_cache["databases"][0]["action"] == "built"

    sql.write_text("CREATE TABLE t (id int, added text);\n")
    status = json.loads(run_cli("-c", str(project.path), "status", "--json", cwd=project.dir).stdout)
    assert status["databases"][0]["stale"] is True
    changed = json.loads(fresh(project, "--yes", "--json").stdout)
    assert changed["databases"][0]["action"] == "built"
    assert query(project, "app", "SELECT count(*) FROM information_schema.columns WHERE table_name = 't'") == [(2,)]
    status = json.loads(run_cli("-c", str(project.path), "status", "--json", cwd=project.dir).stdout)
    assert status["databases"][0]["stale"] is False
    assert len(status["templates"]) == 2


def test_background_housekeeping_finishes_the_job(project: Project) -> None:
    project.write(cleanup="background", databases=CHATBI_ONLY)
    assert fresh(project, "--yes").returncode == 0
    from provision import api

    cfg = project.config()
    deadline = time.monotonic() + 60
    while True:
        api.wait_for_housekeeping(cfg)
        names = databases(project)
        if any("__spare_" in d for d in names) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert any("__tpl_" in d for d in names)
    assert any("__spare_" in d for d in names)
    second = json.loads(fresh(project, "--yes", "--json").stdout)
    assert second["housekeeping"] == "background"
    assert second["databases"][0]["action"] == "spare"
    # wait_for_housekeeping waits for the recorded pid of the tidy-up, then for the lock: once it
    # returns, the tidy-up has run to its end, so the replaced copy must be gone.
    api.wait_for_housekeeping(cfg)
    assert not [d for d in databases(project) if "__old_" in d]


def test_sql_is_shipped_with_the_package() -> None:
    text = (builtin_sql_dir() / "chatbi" / "init_app_tables.sql").read_text()
    for table in CHATBI_TABLES:
        assert f"CREATE TABLE {table}" in text
    assert "alembic_version" not in text


def test_fresh_and_status_json_are_valid_and_hold_no_password(project: Project) -> None:
    """The real JSON of the real commands, against a real server, with a password worth finding."""
    secret = "Sup3r-Secret-9f2c"
    project.write(password=secret, databases=CHATBI_ONLY)
    built = fresh(project, "--yes", "--json")
    assert built.returncode == 0, built.stderr
    data = json.loads(built.stdout)
    assert [d["name"] for d in data["databases"]] == ["chatbi"]
    assert data["databases"][0]["tables"] == len(CHATBI_TABLES) + 1  # and alembic_version
    assert data["up"]["port"] > 0
    status = run_cli("-c", str(project.path), "status", "--json", cwd=project.dir)
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert shown["container"] == project.name and shown["reachable"] is True
    assert [(d["name"], d["exists"], d["stale"]) for d in shown["databases"]] == [("chatbi", True, False)]
    for output in (built.stdout, built.stderr, status.stdout, status.stderr):
        assert secret not in output
