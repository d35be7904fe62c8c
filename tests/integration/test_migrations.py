"""The app's migrations inside `fresh`, revisions in `status`, and `provision check`, with real Alembic (issue 10)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from provision.config import CHATBI_TABLES
from tests.conftest import (
    ADD_0003,
    HEAD,
    Project,
    alembic_cli,
    databases,
    fresh,
    query,
    run_cli,
    use_alembic_example,
)

pytestmark = pytest.mark.integration

BROKEN_0003 = '''"""A migration that fails."""
from alembic import op

revision = "0003_broken"
down_revision = "0002_chat_sessions_pinned_at"


def upgrade() -> None:
    op.execute("ALTER TABLE no_such_table ADD COLUMN x int")


def downgrade() -> None:
    pass
'''

HANGING_0003 = '''"""A migration that never ends."""
import time

revision = "0003_hangs"
down_revision = "0002_chat_sessions_pinned_at"


def upgrade() -> None:
    time.sleep(600)


def downgrade() -> None:
    pass
'''


def cli(project: Project, *args: str, **kwargs: Any) -> Any:
    return run_cli("-c", str(project.path), *args, cwd=project.dir, **kwargs)


def add_migration(project: Project, name: str, text: str) -> Path:
    path = project.dir / "migrations" / "versions" / f"{name}.py"
    path.write_text(text)
    return path


def revision(project: Project, database: str = "chatbi") -> list[str]:
    return [r[0] for r in query(project, database, "SELECT version_num FROM alembic_version")]


def columns(project: Project, table: str) -> list[str]:
    rows = query(project, "chatbi", "SELECT column_name FROM information_schema.columns WHERE table_name = %s", [table])
    return sorted(r[0] for r in rows)


@pytest.fixture
def app(project: Project) -> Project:
    return use_alembic_example(project)


def test_fresh_reaches_head_and_alembic_agrees(app: Project) -> None:
    result = fresh(app, "--yes", "--json")
    assert result.returncode == 0, result.stderr
    built = json.loads(result.stdout)["databases"][0]
    assert built["alembic_revision"] == HEAD and built["action"] == "built"
    assert revision(app) == [HEAD]
    assert "pinned_at" in columns(app, "chat_sessions")
    current = alembic_cli(app, "current")
    assert current.returncode == 0, current.stderr
    assert f"{HEAD} (head)" in current.stdout
    # Nothing left to run: the app's own `upgrade head` is a no-op.
    upgrade = alembic_cli(app, "upgrade", "head")
    assert upgrade.returncode == 0 and "Running upgrade" not in upgrade.stderr, upgrade.stderr


def test_unchanged_migrations_keep_the_cache_and_a_new_one_rebuilds(app: Project) -> None:
    assert fresh(app, "--yes").returncode == 0
    again = json.loads(fresh(app, "--yes", "--json").stdout)["databases"][0]
    assert again["action"] in ("spare", "cloned") and again["alembic_revision"] == HEAD

    add_migration(app, "0003_saved_queries_shared", ADD_0003)
    changed = fresh(app, "--yes", "--json")
    assert changed.returncode == 0, changed.stderr
    result = json.loads(changed.stdout)["databases"][0]
    assert result["action"] == "built" and result["alembic_revision"] == "0003_saved_queries_shared"
    assert revision(app) == ["0003_saved_queries_shared"]
    assert "shared_at" in columns(app, "saved_queries")

    # Editing a migration (not only adding one) also rebuilds.
    path = app.dir / "migrations" / "versions" / "0003_saved_queries_shared.py"
    path.write_text(path.read_text().replace('"shared_at"', '"shared_on"'))
    edited = json.loads(fresh(app, "--yes", "--json").stdout)["databases"][0]
    assert edited["action"] == "built"
    assert "shared_on" in columns(app, "saved_queries")


def test_status_says_how_far_behind_head_the_database_is(app: Project) -> None:
    assert fresh(app, "--yes").returncode == 0
    add_migration(app, "0003_saved_queries_shared", ADD_0003)
    status = json.loads(cli(app, "status", "--json").stdout)["databases"][0]
    assert status["alembic_versions"] == [HEAD]
    assert status["alembic_head"] == "0003_saved_queries_shared"
    assert status["revisions_behind"] == 1
    assert status["stale_reason"] == "migrations changed; 1 migration pending"
    text = cli(app, "status").stdout
    assert "1 revision behind head 0003_saved_queries_shared" in text


def test_migrations_only_builds_from_empty(project: Project) -> None:
    use_alembic_example(project)
    dbs = dict(project.data["databases"])
    dbs["chatbi"] = {k: v for k, v in dbs["chatbi"].items() if k not in ("sql", "alembic_revision")}
    project.write(databases=dbs)
    dry = cli(project, "fresh", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "run the migrations" in dry.stdout and "SQL file" not in dry.stdout
    result = fresh(project, "--yes")
    assert result.returncode == 0, result.stderr
    assert "load" not in result.stdout  # no SQL step
    assert revision(project) == [HEAD]
    tables = {r[0] for r in query(project, "chatbi", "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert tables == set(CHATBI_TABLES) | {"alembic_version"}


def test_a_failing_migration_is_exit_7_and_leaves_the_old_database(app: Project) -> None:
    assert fresh(app, "--yes").returncode == 0
    query(app, "chatbi", "INSERT INTO app_users (email) VALUES ('kept@example.com')")
    add_migration(app, "0003_broken", BROKEN_0003)
    result = fresh(app, "--yes")
    assert result.returncode == 7, result.stdout + result.stderr
    assert "migrations command exited with code" in result.stderr
    assert "0003_broken" in result.stderr  # Alembic's "Running upgrade ... -> 0003_broken"
    assert "no_such_table" in result.stderr
    assert "Traceback" not in result.stderr.split("output of the migrations command")[0]
    assert query(app, "chatbi", "SELECT email FROM app_users") == [("kept@example.com",)]
    assert revision(app) == [HEAD]
    assert not [d for d in databases(app) if "__stage_" in d]


def test_a_hanging_migration_is_stopped_by_its_time_limit(app: Project) -> None:
    assert fresh(app, "--yes").returncode == 0
    dbs = dict(app.data["databases"])
    dbs["chatbi"] = {**dbs["chatbi"], "migrations": {**dbs["chatbi"]["migrations"], "timeout": 3}}
    app.write(databases=dbs)
    add_migration(app, "0003_hangs", HANGING_0003)
    started = time.monotonic()
    result = fresh(app, "--yes")
    assert result.returncode == 7, result.stdout + result.stderr
    assert "still running after 3 s and was stopped" in result.stderr
    assert time.monotonic() - started < 30
    assert revision(app) == [HEAD]
    assert not [d for d in databases(app) if "__stage_" in d]


def test_another_tool_with_a_command_of_its_own(project: Project) -> None:
    """A migration tool that is not Alembic: a script that applies numbered SQL files with psql."""
    (project.dir / "db").mkdir()
    (project.dir / "db" / "001_users.sql").write_text("CREATE TABLE users (id uuid PRIMARY KEY);\n")
    (project.dir / "db" / "002_sessions.sql").write_text(
        "CREATE TABLE sessions (id uuid PRIMARY KEY, user_id uuid REFERENCES users ON DELETE CASCADE);\n"
    )
    psql = shutil.which("psql") or "psql"
    script = project.dir / "migrate.sh"
    script.write_text(
        "#!/bin/sh\nset -e\n"
        'psql -X -q -v ON_ERROR_STOP=1 -c "CREATE TABLE IF NOT EXISTS schema_migrations (version text PRIMARY KEY)"\n'
        "for f in db/*.sql; do\n"
        '  psql -X -q -v ON_ERROR_STOP=1 --single-transaction -f "$f" '
        "-c \"INSERT INTO schema_migrations VALUES ('$(basename $f)')\"\n"
        "done\n"
    )
    script.chmod(0o755)
    project.write(
        databases={
            "app": {"migrations": {"command": "./migrate.sh", "inputs": ["db/"]}, "tables": ["users", "sessions"]}
        }
    )
    assert Path(psql).exists() or shutil.which("psql"), "the test runs the real psql"
    result = fresh(project, "--yes", "--json")
    assert result.returncode == 0, result.stderr
    assert query(project, "app", "SELECT version FROM schema_migrations ORDER BY 1") == [
        ("001_users.sql",),
        ("002_sessions.sql",),
    ]
    assert json.loads(fresh(project, "--yes", "--json").stdout)["databases"][0]["action"] in ("spare", "cloned")
    (project.dir / "db" / "003_index.sql").write_text("CREATE INDEX sessions_user_id_idx ON sessions (user_id);\n")
    assert json.loads(fresh(project, "--yes", "--json").stdout)["databases"][0]["action"] == "built"
    assert len(query(project, "app", "SELECT 1 FROM pg_indexes WHERE indexname = 'sessions_user_id_idx'")) == 1


# ---------------------------------------------------------------- provision check


def test_check_finds_no_drift_in_the_example(app: Project) -> None:
    result = cli(app, "check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "chatbi: no drift: bootstrap SQL stamped at 0001_initial_schema" in result.stdout
    data = json.loads(cli(app, "check", "--json").stdout)
    assert data["drift"] is False and data["databases"][0]["differences"] == []
    assert not [d for d in databases(app) if "__check_" in d], "check leaves nothing behind"


def test_check_names_drift_between_the_bootstrap_and_the_migrations(app: Project) -> None:
    bootstrap = (Path(__file__).resolve().parents[2] / "sql" / "chatbi" / "init_app_tables.sql").read_text()
    drifted = bootstrap.replace("    ssl_mode            text,", "    ssl_mode            varchar(16),")
    assert drifted != bootstrap
    (app.dir / "boot.sql").write_text(drifted)
    dbs = dict(app.data["databases"])
    dbs["chatbi"] = {**dbs["chatbi"], "sql": "boot.sql"}
    app.write(databases=dbs)
    result = cli(app, "check")
    assert result.returncode == 11, result.stdout + result.stderr
    assert "column public.datasources.ssl_mode: type: character varying(16) vs text" in result.stdout
    assert not [d for d in databases(app) if "__check_" in d]


MUTATIONS = [
    (
        "ALTER TABLE app_users ALTER COLUMN display_name TYPE varchar(80)",
        "column public.app_users.display_name: type: character varying(80) vs text",
    ),
    ("DROP INDEX user_sessions_expires_at_idx", "index public.user_sessions.user_sessions_expires_at_idx: only in"),
    (
        "ALTER TABLE user_sessions DROP CONSTRAINT user_sessions_user_id_fkey, "
        "ADD CONSTRAINT user_sessions_user_id_fkey FOREIGN KEY (user_id) REFERENCES app_users (id) ON DELETE SET NULL",
        "constraint public.user_sessions.user_sessions_user_id_fkey: ON DELETE: SET NULL vs CASCADE",
    ),
    ("ALTER TABLE app_users ALTER COLUMN role SET DEFAULT 'viewer'", "column public.app_users.role: default:"),
    (
        "ALTER TABLE user_sessions ALTER COLUMN user_agent SET NOT NULL",
        "column public.user_sessions.user_agent: nullable: NOT NULL vs NULL",
    ),
    ("CREATE TABLE scratch_notes (id int)", "table public.scratch_notes: only in the live database"),
]


def test_check_live_names_each_hand_made_change(app: Project) -> None:
    assert fresh(app, "--yes").returncode == 0
    clean = cli(app, "check", "--live")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    for statement, expected in MUTATIONS:
        query(app, "chatbi", statement)
        result = cli(app, "check", "--live")
        assert result.returncode == 11, result.stdout + result.stderr
        assert expected in result.stdout, (statement, result.stdout)
    data = json.loads(cli(app, "check", "--live", "--json").stdout)
    kinds = sorted({d["kind"] for d in data["databases"][0]["differences"]})
    assert kinds == ["column", "constraint", "index", "table"]
    assert len(data["databases"][0]["differences"]) == len(MUTATIONS)
    assert not [d for d in databases(app) if "__check_" in d]


def test_check_live_of_a_missing_database_is_clear(app: Project) -> None:
    assert cli(app, "up").returncode == 0
    result = cli(app, "check", "--live")
    assert result.returncode == 10, result.stdout + result.stderr
    assert "database chatbi does not exist" in result.stderr and "provision fresh" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_without_migrations_says_what_to_do(project: Project) -> None:
    result = cli(project, "check")
    assert result.returncode == 2, result.stderr
    assert "no database has both `sql:` sources and `migrations:`" in result.stderr
    assert "--live" in result.stderr
