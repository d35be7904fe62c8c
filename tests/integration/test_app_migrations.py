"""Real apps' migrations, safely (issue 19): the live database is never reached by a build, `env:`, the seed step.

Two real Alembic apps: examples/fastapi-settings, whose env.py builds its URL from its own
POSTGRES_* settings and a `.env` file, and examples/chatbi-alembic, whose env.py reads
DATABASE_URL. Each misdirected case checks the live database by its schema, its
alembic_version and a marker row, and that it accepts connections again afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import HEAD, REPO, Project, connect, query, run_cli, use_alembic_example

pytestmark = pytest.mark.integration

FASTAPI_EXAMPLE = REPO / "examples" / "fastapi-settings"
FASTAPI_HEAD = "1a31ce608336"
MARKER = "marker@example.com"
# The seed runs `python -m app.initial_data`: the python that has SQLAlchemy is this venv's.
VENV_PATH = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}

ADD_PRIORITY = '''"""Add item.priority."""
import sqlalchemy as sa
from alembic import op

revision = "3c5e1f2a9b7d"
down_revision = "1a31ce608336"


def upgrade() -> None:
    op.add_column("item", sa.Column("priority", sa.Integer()))


def downgrade() -> None:
    op.drop_column("item", "priority")
'''


def cli(project: Project, *args: str, env: dict[str, str] | None = None) -> Any:
    return run_cli("-c", str(project.path), *args, cwd=project.dir, env={**VENV_PATH, **(env or {})})


def fastapi_app(project: Project) -> Project:
    """examples/fastapi-settings in the project's directory, its config on the project's container, and
    a `.env` that points the app at the live `app` database of that container (as a developer's would)."""
    for entry in FASTAPI_EXAMPLE.iterdir():
        if entry.is_dir():
            shutil.copytree(entry, project.dir / entry.name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(entry, project.dir / entry.name)
    example = yaml.safe_load((FASTAPI_EXAMPLE / "provision.yaml").read_text())
    project.write(databases=example["databases"])
    up = cli(project, "up")
    assert up.returncode == 0, up.stderr
    port = cli(project, "url").stdout.strip().rsplit(":", 1)[1].split("/")[0]
    env = (FASTAPI_EXAMPLE / ".env.example").read_text().replace("POSTGRES_PORT=5432", f"POSTGRES_PORT={port}")
    (project.dir / ".env").write_text(env)
    return project


def columns(project: Project, database: str, table: str) -> list[str]:
    rows = query(project, database, "SELECT column_name FROM information_schema.columns WHERE table_name = %s", [table])
    return sorted(r[0] for r in rows)


def live_state(project: Project, database: str, table: str, marker_sql: str) -> tuple[list[str], list[str], int]:
    """What a misdirected build must not change: the columns, alembic_version and the marker row."""
    versions = [r[0] for r in query(project, database, "SELECT version_num FROM alembic_version")]
    return columns(project, database, table), versions, query(project, database, marker_sql)[0][0]


def allows_connections(project: Project, database: str) -> bool:
    rows = query(project, "postgres", "SELECT datallowconn FROM pg_database WHERE datname = %s", [database])
    return bool(rows[0][0])


def without_env(project: Project, step: str) -> None:
    data = project.data["databases"]["app"]
    data[step] = {k: v for k, v in data[step].items() if k != "env"}
    project.write()


@pytest.fixture
def app(project: Project) -> Project:
    return fastapi_app(project)


def test_env_builds_a_settings_app_with_no_shell_wrapper(app: Project) -> None:
    result = cli(app, "fresh", "--yes", "--json")
    assert result.returncode == 0, result.stderr
    built = json.loads(result.stdout)["databases"][0]
    assert built["action"] == "built" and built["alembic_revision"] == FASTAPI_HEAD
    assert query(app, "app", "SELECT version_num FROM alembic_version") == [(FASTAPI_HEAD,)]
    assert "description" in columns(app, "app", "item")
    # The seed ran against the copy, with the app's other settings still read from .env.
    assert query(app, "app", 'SELECT email, is_superuser FROM "user"') == [("admin@example.com", True)]
    # The password reached the command only through its environment.
    assert "chatbi@" not in result.stdout + result.stderr


@pytest.mark.parametrize("verb", [("fresh", "--yes"), ("check", "--live")])
def test_a_misdirected_migration_never_touches_the_live_database(app: Project, verb: tuple[str, ...]) -> None:
    """`fresh`, and `check --live`, which also builds a copy with the migrations."""
    assert cli(app, "fresh", "--yes").returncode == 0
    query(app, "app", 'INSERT INTO "user" (email) VALUES (%s)', [MARKER])
    marker_sql = f"SELECT count(*) FROM \"user\" WHERE email = '{MARKER}'"
    before = live_state(app, "app", "item", marker_sql)
    # The user forgets `env:`: the app's settings (.env) point its migrations at the live `app`.
    without_env(app, "migrations")
    (app.dir / "app" / "alembic" / "versions" / "3c5e1f2a9b7d_add_item_priority.py").write_text(ADD_PRIORITY)

    result = cli(app, *verb)
    assert result.returncode == 7, result.stderr
    assert "tried to connect to database 'app' instead of the private copy" in result.stderr
    assert "$DATABASE_URL" in result.stderr and "app was not changed" in result.stderr
    assert "migrations.env:" in result.stderr and "POSTGRES_DB: '{database}'" in result.stderr
    assert "is not currently accepting connections" in result.stderr  # the app's own error, shown
    after = live_state(app, "app", "item", marker_sql)
    assert after == before and "priority" not in after[0] and after[1] == [FASTAPI_HEAD] and after[2] == 1
    assert allows_connections(app, "app")
    assert not [
        name
        for (name,) in query(app, "postgres", "SELECT datname FROM pg_database")
        if "__" in name and "tpl" not in name and "spare" not in name
    ]


def test_a_misdirected_seed_never_touches_the_live_database(app: Project) -> None:
    assert cli(app, "fresh", "--yes").returncode == 0
    query(app, "app", 'DELETE FROM "user"')
    without_env(app, "seed")
    result = cli(app, "fresh", "--yes")
    assert result.returncode == 7, result.stderr
    assert "the seed command tried to connect to database 'app'" in result.stderr
    assert "seed.env:" in result.stderr
    assert query(app, "app", 'SELECT count(*) FROM "user"') == [(0,)], "the seed wrote into the live database"
    assert allows_connections(app, "app")


def test_an_app_that_reads_database_url_from_the_callers_shell(project: Project) -> None:
    """chatbi-alembic's env.py reads DATABASE_URL; the config hands the copy to another variable,
    and the caller's shell exports DATABASE_URL for the live database."""
    app = use_alembic_example(project)
    assert cli(app, "fresh", "--yes").returncode == 0
    query(app, "chatbi", "INSERT INTO app_users (username, email) VALUES ('marker', 'm@example.com')")
    marker_sql = "SELECT count(*) FROM app_users WHERE username = 'marker'"
    before = live_state(app, "chatbi", "saved_queries", marker_sql)
    app.data["databases"]["chatbi"]["migrations"]["url_env"] = "CHATBI_COPY_URL"
    app.write()
    (app.dir / "migrations" / "versions" / "0003_saved_queries_shared.py").write_text(
        '"""Add saved_queries.shared_at."""\nimport sqlalchemy as sa\nfrom alembic import op\n\n'
        f'revision = "0003_saved_queries_shared"\ndown_revision = "{HEAD}"\n\n\n'
        'def upgrade() -> None:\n    op.add_column("saved_queries", sa.Column("shared_at", sa.Text()))\n'
    )
    live_url = run_cli("-c", str(app.path), "url", "chatbi", "--show-password", cwd=app.dir).stdout.strip()
    result = cli(app, "fresh", "--yes", env={"DATABASE_URL": live_url})
    assert result.returncode == 7, result.stderr
    assert "tried to connect to database 'chatbi' instead of the private copy" in result.stderr
    assert "$CHATBI_COPY_URL" in result.stderr
    assert live_state(app, "chatbi", "saved_queries", marker_sql) == before
    assert allows_connections(app, "chatbi")


def test_an_app_connected_to_the_live_database_keeps_its_session(app: Project) -> None:
    """The seal refuses new connections only: a session the app holds open goes on working."""
    assert cli(app, "fresh", "--yes").returncode == 0
    (app.dir / "app" / "alembic" / "versions" / "3c5e1f2a9b7d_add_item_priority.py").write_text(ADD_PRIORITY)
    held = connect(app, "app")
    try:
        cli(app, "check", "--live")  # builds a copy with the migrations while `held` is open
        with held.cursor() as cur:
            cur.execute('SELECT count(*) FROM "user"')
            assert cur.fetchone() == (1,)
    finally:
        held.close()


def test_editing_the_seed_script_rebuilds(app: Project) -> None:
    assert cli(app, "fresh", "--yes").returncode == 0
    again = cli(app, "fresh", "--yes", "--json")
    assert json.loads(again.stdout)["databases"][0]["action"] in ("spare", "cloned"), again.stdout
    script = app.dir / "app" / "initial_data.py"
    script.write_text(script.read_text().replace('"name": "Admin"', '"name": "Root"'))
    status = json.loads(cli(app, "status", "--json").stdout)["databases"][0]
    assert status["stale"] is True
    rebuilt = cli(app, "fresh", "--yes", "--json")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert json.loads(rebuilt.stdout)["databases"][0]["action"] == "built"
    assert query(app, "app", 'SELECT full_name FROM "user"') == [("Root",)]


def test_a_stray_file_beside_the_migrations_does_not_mark_the_database_stale(app: Project) -> None:
    assert cli(app, "fresh", "--yes").returncode == 0
    migrations = app.dir / "app" / "alembic"
    for stray in (".DS_Store", "alembic.log", ".env.py.swp", "versions/notes.txt"):
        (migrations / stray).write_text("noise\n")
    status = json.loads(cli(app, "status", "--json").stdout)["databases"][0]
    assert status["stale"] is False, status
    again = cli(app, "fresh", "--yes", "--json")
    assert json.loads(again.stdout)["databases"][0]["action"] in ("spare", "cloned")
    # An edited migration still does.
    version = migrations / "versions" / "1a31ce608336_add_item_description.py"
    version.write_text(version.read_text().replace("sa.String(255))", "sa.String(500))"))
    status = json.loads(cli(app, "status", "--json").stdout)["databases"][0]
    assert status["stale"] is True and "migrations changed" in status["stale_reason"]


def test_a_fresh_right_after_a_fresh_does_not_run_the_migrations_again(app: Project) -> None:
    """With the background tidy-up (the default), the template used to be built only later, so a
    second `fresh` at once ran the migrations again."""
    app.write(cleanup="background")
    first = cli(app, "fresh", "--yes", "--json")
    assert json.loads(first.stdout)["databases"][0]["action"] == "built"
    second = cli(app, "fresh", "--yes", "--json")
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["databases"][0]["action"] in ("spare", "cloned"), second.stdout


def test_check_on_a_migrations_only_database_offers_live(app: Project) -> None:
    result = cli(app, "check")
    assert result.returncode == 2, result.stderr
    assert "app: built by migrations alone (no `sql:`)" in result.stderr
    assert "provision check --live" in result.stderr


def test_a_module_the_command_cannot_import_gets_a_hint_about_the_interpreter(app: Project) -> None:
    env_py = app.dir / "app" / "alembic" / "env.py"
    env_py.write_text("import app_models_not_installed\n" + env_py.read_text())
    result = cli(app, "fresh", "--yes")
    assert result.returncode == 7, result.stderr
    assert "ModuleNotFoundError: No module named 'app_models_not_installed'" in result.stderr
    assert "could not import" in result.stderr and "uv run" in result.stderr and "PYTHONPATH" in result.stderr
    assert "fix the migrations" not in result.stderr
