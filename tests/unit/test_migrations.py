"""provision.builds.migrations without a server: the Alembic revision graph, resolving the config, the command's run."""

from __future__ import annotations

import os
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from provision.builds.appcommand import CommandFailed
from provision.builds.migrations import MigrationPlan, plan_migrations, read_revisions
from provision.builds.pipeline import plan_database
from provision.config import Config, load_config
from provision.endpoint import Endpoint
from provision.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "chatbi-alembic"

MIGRATION = '''"""{doc}"""
revision{annotation} = {revision!r}
down_revision{annotation} = {down!r}
branch_labels = None


def upgrade() -> None:
    pass
'''


def write_revision(versions: Path, revision: str, down: object, annotated: bool = False) -> None:
    versions.mkdir(parents=True, exist_ok=True)
    text = MIGRATION.format(doc=revision, revision=revision, down=down, annotation=": str" if annotated else "")
    (versions / f"{revision}.py").write_text(text)


def alembic_project(root: Path, revisions: list[tuple[str, object]]) -> Path:
    (root / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s/migrations\n")
    (root / "migrations").mkdir(parents=True, exist_ok=True)
    (root / "migrations" / "env.py").write_text("# env\n")
    for i, (revision, down) in enumerate(revisions):
        write_revision(root / "migrations" / "versions", revision, down, annotated=i % 2 == 1)
    return root / "alembic.ini"


def config(write_yaml: Callable[..., Path], migrations: str, sql: str = "") -> Config:
    text = "databases:\n  app:\n" + (f"    sql: {sql}\n" if sql else "") + f"    migrations: {migrations}\n"
    return load_config(write_yaml(text), env={})


# ---------------------------------------------------------------- the revision graph


def test_the_example_has_one_head_after_0001() -> None:
    from provision.builds.migrations import read_alembic_ini

    graph = read_revisions(read_alembic_ini(EXAMPLE / "alembic.ini"))
    assert graph.heads() == ["0002_chat_sessions_pinned_at"]
    assert graph.behind(["0001_initial_schema"], "0002_chat_sessions_pinned_at") == 1
    assert graph.behind([], "0002_chat_sessions_pinned_at") == 2
    assert graph.behind(["0002_chat_sessions_pinned_at"], "0002_chat_sessions_pinned_at") == 0


def test_graph_reads_annotated_and_plain_assignments_and_merges(tmp_path: Path) -> None:
    alembic_project(tmp_path, [("a", None), ("b", "a"), ("c", "a"), ("m", ("b", "c"))])
    from provision.builds.migrations import read_alembic_ini

    graph = read_revisions(read_alembic_ini(tmp_path / "alembic.ini"))
    assert sorted(graph.revisions) == ["a", "b", "c", "m"]
    assert graph.heads() == ["m"]
    assert graph.revisions["m"].down == ("b", "c")
    assert graph.behind(["b"], "m") == 2  # c and the merge
    assert graph.behind(["unknown"], "m") is None


def test_head_is_resolved_and_two_heads_are_refused(tmp_path: Path, write_yaml: Callable[..., Path]) -> None:
    alembic_project(tmp_path, [("a", None), ("b", "a")])
    cfg = config(write_yaml, "{alembic: alembic.ini}")
    plan = plan_migrations(cfg, "app", cfg.databases[0].migrations)  # type: ignore[arg-type]
    assert plan.revision == "b"
    assert plan.command() == [plan.runner.argv[0], "-c", str((tmp_path / "alembic.ini").resolve()), "upgrade", "b"]
    assert plan.command("a")[-1] == "a" and plan.takes_revision
    write_revision(tmp_path / "migrations" / "versions", "c", "a")
    with pytest.raises(ConfigError, match="2 heads") as info:
        plan_migrations(cfg, "app", cfg.databases[0].migrations)  # type: ignore[arg-type]
    assert "alembic merge heads" in info.value.hint


def test_digest_changes_when_a_migration_is_added_or_edited(tmp_path: Path, write_yaml: Callable[..., Path]) -> None:
    alembic_project(tmp_path, [("a", None)])
    cfg = config(write_yaml, "{alembic: alembic.ini}")
    spec = cfg.databases[0].migrations
    assert spec is not None
    first = plan_migrations(cfg, "app", spec).digest
    assert plan_migrations(cfg, "app", spec).digest == first
    (tmp_path / "migrations" / "__pycache__").mkdir()
    (tmp_path / "migrations" / "__pycache__" / "env.cpython-311.pyc").write_bytes(b"\x00compiled")
    assert plan_migrations(cfg, "app", spec).digest == first, "compiled files are not inputs"
    write_revision(tmp_path / "migrations" / "versions", "b", "a")
    second = plan_migrations(cfg, "app", spec).digest
    assert second != first
    (tmp_path / "migrations" / "env.py").write_text("# env, edited\n")
    assert plan_migrations(cfg, "app", spec).digest not in (first, second)


def test_content_hash_covers_the_migrations(tmp_path: Path, write_yaml: Callable[..., Path]) -> None:
    alembic_project(tmp_path, [("a", None)])
    cfg = config(write_yaml, "{alembic: alembic.ini}")
    before = plan_database(cfg, cfg.databases[0]).content_hash(170000)
    write_revision(tmp_path / "migrations" / "versions", "b", "a")
    after = plan_database(cfg, cfg.databases[0])
    assert after.content_hash(170000) != before
    assert after.revision == "b" and not after.files


@pytest.mark.parametrize(
    ("migrations", "message"),
    [
        ("{}", "needs `alembic:`"),
        ("{alembic: missing.ini}", "file not found"),
        ("{command: [definitely-not-a-tool-7f3e], inputs: [m]}", "was not found on PATH"),
        ("{command: 'tool \"unclosed', inputs: [m]}", "cannot be split"),
        ("{command: 'true'}", "nothing says when the migrations change"),
        ("{command: 'true', inputs: [nope/]}", "migrations input not found"),
        ("{command: 'true', revision: head, inputs: [m]}", "revision needs `alembic:`"),
        ("{alembic: alembic.ini, revision: zzz}", "not among the migrations"),
        ("{alembic: alembic.ini, timeout: 0}", "positive number"),
        ("{alembic: alembic.ini, url_env: 'A B'}", "environment variable name"),
        ("{alembic: alembic.ini, cwd: nowhere}", "working directory"),
        ("{alembic: alembic.ini, colour: red}", "unknown key 'colour'"),
        ("[alembic.ini]", "must be a mapping"),
    ],
)
def test_bad_migrations_config_is_a_clear_config_error(
    tmp_path: Path, write_yaml: Callable[..., Path], migrations: str, message: str
) -> None:
    alembic_project(tmp_path, [("a", None)])
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "1.sql").write_text("select 1;\n")
    with pytest.raises(ConfigError, match=message):
        cfg = config(write_yaml, migrations)
        plan_database(cfg, cfg.databases[0])


def test_stamp_must_be_among_the_migrations(tmp_path: Path, write_yaml: Callable[..., Path]) -> None:
    alembic_project(tmp_path, [("a", None), ("b", "a")])
    (tmp_path / "boot.sql").write_text("select 1;\n")
    path = write_yaml(
        "databases:\n  app:\n    sql: boot.sql\n    alembic_revision: zz\n    migrations: {alembic: alembic.ini}\n"
    )
    cfg = load_config(path, env={})
    with pytest.raises(ConfigError, match="alembic_revision 'zz' is not among the migrations"):
        plan_database(cfg, cfg.databases[0])


def test_a_database_needs_sql_or_migrations(write_yaml: Callable[..., Path]) -> None:
    with pytest.raises(ConfigError, match="neither `sql:` sources nor `migrations:`"):
        load_config(write_yaml("databases:\n  app:\n    tables: [t]\n"), env={})


# ---------------------------------------------------------------- running the command


def tool(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "tool.sh"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def migration_plan(tmp_path: Path, write_yaml: Callable[..., Path], script: Path, timeout: float = 30) -> MigrationPlan:
    (tmp_path / "m").mkdir(exist_ok=True)
    (tmp_path / "m" / "1.sql").write_text("select 1;\n")
    cfg = config(write_yaml, f"{{command: [{script}], inputs: [m], timeout: {timeout}, url_env: APP_DB}}")
    spec = cfg.databases[0].migrations
    assert spec is not None
    return plan_migrations(cfg, "app", spec)


ENDPOINT = Endpoint("127.0.0.1", 6543, "chatbi", "Sup3r-Secret-a1")


def test_the_command_gets_the_copy_in_its_environment_never_in_argv(
    tmp_path: Path, write_yaml: Callable[..., Path]
) -> None:
    script = tool(
        tmp_path,
        'printf "%s\\n" "$0" "$@" > argv.txt\n'
        'echo "url=$APP_DB db=$PGDATABASE host=$PGHOST port=$PGPORT user=$PGUSER app=$PGAPPNAME"\n'
        '[ "$PGPASSWORD" = "Sup3r-Secret-a1" ] && echo password-in-env\n',
    )
    plan = migration_plan(tmp_path, write_yaml, script)
    result = plan.run(ENDPOINT, "app__stage_1", "app")
    assert "db=app__stage_1 host=127.0.0.1 port=6543 user=chatbi app=provision build" in result.output
    assert "url=postgresql://chatbi:***@127.0.0.1:6543/app__stage_1" in result.output
    assert "password-in-env" in result.output
    assert "Sup3r-Secret-a1" not in result.output
    assert "Sup3r-Secret-a1" not in (tmp_path / "argv.txt").read_text()


def test_a_failing_command_is_exit_7_with_its_output(tmp_path: Path, write_yaml: Callable[..., Path]) -> None:
    script = tool(
        tmp_path, "echo 'Running upgrade 0001 -> 0002, add pinned'\necho 'ERROR: boom at $APP_DB' >&2\nexit 3\n"
    )
    plan = migration_plan(tmp_path, write_yaml, script)
    with pytest.raises(CommandFailed) as info:
        plan.run(ENDPOINT, "app__stage_1", "app")
    assert info.value.exit_code == 7
    assert "exited with code 3" in str(info.value)
    assert info.value.detail is not None and "Running upgrade 0001 -> 0002" in info.value.detail
    assert "ERROR: boom" in info.value.detail
    assert "app was not changed" in info.value.hint


def test_a_hanging_command_is_stopped_by_the_time_limit(tmp_path: Path, write_yaml: Callable[..., Path]) -> None:
    script = tool(tmp_path, "echo started\nsleep 60 &\nwait\n")
    plan = migration_plan(tmp_path, write_yaml, script, timeout=1)
    started = time.monotonic()
    with pytest.raises(CommandFailed, match="still running after 1 s and was stopped") as info:
        plan.run(ENDPOINT, "app__stage_1", "app")
    assert time.monotonic() - started < 10
    assert info.value.detail is not None and "started" in info.value.detail


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_the_command_dies_with_provision(tmp_path: Path) -> None:
    """kill -9 of provision takes its migration command with it (nothing keeps writing to the copy)."""
    import signal
    import subprocess

    pidfile = tmp_path / "child.pid"
    script = tool(tmp_path, f"echo $$ > {pidfile}\nexec sleep 60\n")
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"""
import sys
sys.path.insert(0, {str(REPO)!r})
from pathlib import Path
from provision.builds.appcommand import CommandPlan, run
from provision.endpoint import Endpoint
plan = CommandPlan("migrations", ({str(script)!r},), Path({str(tmp_path)!r}), "DATABASE_URL", (), 60.0, (), "")
run(plan, plan.argv, Endpoint("127.0.0.1", 1, "u", "p"), "db", "db", ())
""",
        ]
    )
    deadline = time.monotonic() + 10
    while not (pidfile.exists() and pidfile.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.02)
    child = int(pidfile.read_text())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.02)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the migration command outlived provision")


# ---------------------------------------------------------------- what counts as a migration input


@pytest.mark.parametrize("stray", ["alembic.log", ".env.py.swp", ".DS_Store", "versions/notes.txt", "README"])
def test_a_stray_file_beside_the_migrations_is_not_an_input(
    tmp_path: Path, write_yaml: Callable[..., Path], stray: str
) -> None:
    alembic_project(tmp_path, [("a", None)])
    cfg = config(write_yaml, "{alembic: alembic.ini}")
    spec = cfg.databases[0].migrations
    assert spec is not None
    first = plan_migrations(cfg, "app", spec).digest
    (tmp_path / "migrations" / stray).write_text("noise\n")
    assert plan_migrations(cfg, "app", spec).digest == first


@pytest.mark.parametrize("edited", ["env.py", "script.py.mako", "versions/a.py"])
def test_an_edited_alembic_file_is_an_input(tmp_path: Path, write_yaml: Callable[..., Path], edited: str) -> None:
    alembic_project(tmp_path, [("a", None)])
    (tmp_path / "migrations" / "script.py.mako").write_text("${up}\n")
    cfg = config(write_yaml, "{alembic: alembic.ini}")
    spec = cfg.databases[0].migrations
    assert spec is not None
    first = plan_migrations(cfg, "app", spec).digest
    path = tmp_path / "migrations" / edited
    path.write_text(path.read_text() + "# edited\n")
    assert plan_migrations(cfg, "app", spec).digest != first


def test_version_locations_are_inputs(tmp_path: Path, write_yaml: Callable[..., Path]) -> None:
    alembic_project(tmp_path, [("a", None)])
    (tmp_path / "alembic.ini").write_text(
        "[alembic]\nscript_location = %(here)s/migrations\nversion_locations = %(here)s/more\n"
    )
    write_revision(tmp_path / "more", "b", "a")
    cfg = config(write_yaml, "{alembic: alembic.ini}")
    spec = cfg.databases[0].migrations
    assert spec is not None
    plan = plan_migrations(cfg, "app", spec)
    assert (tmp_path / "more" / "b.py").resolve() in plan.runner.inputs
    assert plan.revision == "b"


# ---------------------------------------------------------------- env: and the command's environment


def test_env_maps_the_apps_own_settings_onto_the_copy(tmp_path: Path, write_yaml: Callable[..., Path]) -> None:
    script = tool(
        tmp_path,
        'printf "%s\\n" "$0" "$@" > argv.txt\n'
        'echo "server=$POSTGRES_SERVER port=$POSTGRES_PORT user=$POSTGRES_USER db=$POSTGRES_DB name=$PROJECT_NAME"\n'
        'echo "url=$APP_URL braces=$BRACES"\n'
        '[ "$POSTGRES_PASSWORD" = "Sup3r-Secret-a1" ] && echo password-in-env\n',
    )
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "1.sql").write_text("select 1;\n")
    cfg = config(
        write_yaml,
        f"{{command: [{script}], inputs: [m], env: {{POSTGRES_SERVER: '{{host}}', POSTGRES_PORT: '{{port}}', "
        "POSTGRES_USER: '{user}', POSTGRES_PASSWORD: '{password}', POSTGRES_DB: '{database}', "
        "PROJECT_NAME: chatbi, APP_URL: '{url}', BRACES: '{{literal}}'}}",
    )
    spec = cfg.databases[0].migrations
    assert spec is not None
    result = plan_migrations(cfg, "app", spec).run(ENDPOINT, "app__stage_1", "app")
    assert "server=127.0.0.1 port=6543 user=chatbi db=app__stage_1 name=chatbi" in result.output
    assert "url=postgresql://chatbi:***@127.0.0.1:6543/app__stage_1" in result.output
    assert "braces={literal}" in result.output
    assert "password-in-env" in result.output
    assert "Sup3r-Secret-a1" not in result.output
    assert "Sup3r-Secret-a1" not in (tmp_path / "argv.txt").read_text()


def test_env_changes_the_content_hash(tmp_path: Path, write_yaml: Callable[..., Path]) -> None:
    alembic_project(tmp_path, [("a", None)])
    one = config(write_yaml, "{alembic: alembic.ini, env: {POSTGRES_DB: '{database}'}}")
    two = config(write_yaml, "{alembic: alembic.ini, env: {APP_DB: '{database}'}}")
    assert plan_database(one, one.databases[0]).content_hash(170000) != plan_database(
        two, two.databases[0]
    ).content_hash(170000)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ("{POSTGRES_DB: '{db}'}", "unknown placeholder {db}"),
        ("{'A B': x}", "not an environment variable name"),
        ("[A]", "must be a mapping"),
        ("{A: [1]}", "must be a string or a number"),
    ],
)
def test_bad_env_is_a_config_error(tmp_path: Path, write_yaml: Callable[..., Path], env: str, message: str) -> None:
    alembic_project(tmp_path, [("a", None)])
    with pytest.raises(ConfigError, match=message):
        config(write_yaml, f"{{alembic: alembic.ini, env: {env}}}")


def test_a_missing_variable_says_when_it_is_expanded(tmp_path: Path, write_yaml: Callable[..., Path]) -> None:
    alembic_project(tmp_path, [("a", None)])
    path = write_yaml(
        "databases:\n  app:\n    migrations:\n      alembic: alembic.ini\n"
        "      command: sh -c 'POSTGRES_DB=${PGDATABASE} alembic upgrade head'\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    hint = info.value.hint
    assert "when it reads this file" in hint and "`env:`" in hint and "{database}" in hint
    assert "$${PGDATABASE}" in hint
    # ... and $$ does what the hint says: the command's own shell gets ${PGDATABASE}.
    path.write_text(path.read_text().replace("${PGDATABASE}", "$${PGDATABASE}"))
    spec = load_config(path, env={}).databases[0].migrations
    assert spec is not None and "POSTGRES_DB=${PGDATABASE} alembic upgrade head" in spec.command


def test_an_import_error_points_at_the_interpreter(tmp_path: Path, write_yaml: Callable[..., Path]) -> None:
    script = tool(
        tmp_path,
        "echo 'Traceback (most recent call last):' >&2\n"
        "echo \"ModuleNotFoundError: No module named 'app'\" >&2\nexit 1\n",
    )
    plan = migration_plan(tmp_path, write_yaml, script)
    with pytest.raises(CommandFailed) as info:
        plan.run(ENDPOINT, "app__stage_1", "app")
    assert "No module named 'app'" in info.value.hint
    assert "uv run" in info.value.hint and "PYTHONPATH" in info.value.hint
    assert "fix the migration" not in info.value.hint


def test_a_command_that_reached_another_database_says_so(tmp_path: Path, write_yaml: Callable[..., Path]) -> None:
    from provision.builds.appcommand import MisdirectedCommand

    script = tool(
        tmp_path,
        "echo 'sqlalchemy.exc.OperationalError: (psycopg2.OperationalError) connection to server at "
        '"127.0.0.1", port 6543 failed: FATAL:  database "app" is not currently accepting connections\' >&2\n'
        "exit 1\n",
    )
    plan = migration_plan(tmp_path, write_yaml, script)
    with pytest.raises(MisdirectedCommand) as info:
        plan.run(ENDPOINT, "app__stage_1", "app")
    error = info.value
    assert error.exit_code == 7
    assert "tried to connect to database 'app' instead of the private copy 'app__stage_1'" in str(error)
    assert "$APP_DB" in str(error) and "was not changed" in str(error)
    assert "env:" in error.hint and "POSTGRES_DB: '{database}'" in error.hint


def test_a_failure_naming_the_copy_itself_is_not_misdirected(tmp_path: Path, write_yaml: Callable[..., Path]) -> None:
    script = tool(tmp_path, "echo 'FATAL:  database \"app__stage_1\" does not exist' >&2\nexit 1\n")
    plan = migration_plan(tmp_path, write_yaml, script)
    with pytest.raises(CommandFailed) as info:
        plan.run(ENDPOINT, "app__stage_1", "app")
    assert "tried to connect" not in str(info.value)


# ---------------------------------------------------------------- seed


def test_seed_is_planned_and_hashed(tmp_path: Path, write_yaml: Callable[..., Path]) -> None:
    (tmp_path / "boot.sql").write_text("create table t (id int);\n")
    (tmp_path / "seeds").mkdir()
    (tmp_path / "seeds" / "1_rows.sql").write_text("insert into t values (1);\n")
    (tmp_path / "initial_data.py").write_text("print('seed')\n")
    path = write_yaml(
        "databases:\n  app:\n    sql: boot.sql\n    seed:\n      sql: seeds/\n"
        f"      command: [{sys.executable}, initial_data.py]\n"
    )
    cfg = load_config(path, env={})
    plan = plan_database(cfg, cfg.databases[0])
    assert [f.display for f in plan.seed_files] == ["seeds/1_rows.sql"]
    assert plan.seed is not None and plan.seed.inputs == ((tmp_path / "initial_data.py").resolve(),)
    first = plan.content_hash(170000)
    (tmp_path / "initial_data.py").write_text("print('seed, edited')\n")
    second = plan_database(cfg, cfg.databases[0]).content_hash(170000)
    assert second != first
    (tmp_path / "seeds" / "1_rows.sql").write_text("insert into t values (2);\n")
    assert plan_database(cfg, cfg.databases[0]).content_hash(170000) not in (first, second)


@pytest.mark.parametrize(
    ("seed", "message"),
    [
        ("{}", "needs `sql:`"),
        ("{command: 'true'}", "nothing says when the seed changes"),
        ("{sql: nope.sql}", "SQL file not found: .*nope.sql .*databases.app.seed.sql"),
        ("{colour: red}", "unknown key 'colour'"),
        ("{command: 'true', inputs: [missing.py]}", "seed input not found"),
    ],
)
def test_bad_seed_is_a_config_error(tmp_path: Path, write_yaml: Callable[..., Path], seed: str, message: str) -> None:
    (tmp_path / "boot.sql").write_text("create table t (id int);\n")
    with pytest.raises(ConfigError, match=message):
        cfg = load_config(write_yaml(f"databases:\n  app:\n    sql: boot.sql\n    seed: {seed}\n"), env={})
        plan_database(cfg, cfg.databases[0])
