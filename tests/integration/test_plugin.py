"""The pytest plugin against the real engine: a 50-test sample suite under xdist, isolation, cleanup, keep (issue 4)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg2
import pytest

from tests.conftest import (
    HEAD,
    RECYCLE_SAMPLE,
    TX_SAMPLE,
    Project,
    list_databases,
    run_sample,
    use_alembic_example,
)

pytestmark = pytest.mark.integration


def test_sample_suite_under_xdist_isolates_tests_and_leaves_nothing(project: Project, docker_client: Any) -> None:
    result = run_sample(project, "-p", "xdist", "-n", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "50 passed" in result.stdout
    container = project.name + "-test"
    names = list_databases(docker_client, container)
    assert not [n for n in names if "__pool_" in n], names
    templates = sorted(n for n in names if "__tpl_" in n)
    assert len(templates) == 2  # chatbi and chatbi_demo, built once despite two workers

    # The test server trades durability for speed; `fresh`'s server never does.
    attrs = docker_client.containers.get(container).attrs
    assert "fsync=off" in attrs["Config"]["Cmd"]
    assert "/var/lib/postgresql/data" in (attrs["HostConfig"].get("Tmpfs") or {})  # data in memory

    # A second run reuses the container and the templates.
    started_at = docker_client.containers.get(container).attrs["State"]["StartedAt"]
    again = run_sample(project, "-p", "xdist", "-n", "2")
    assert again.returncode == 0, again.stdout + again.stderr
    assert docker_client.containers.get(container).attrs["State"]["StartedAt"] == started_at
    assert sorted(n for n in list_databases(docker_client, container) if "__tpl_" in n) == templates


def test_keep_leaves_the_copies_for_debugging(project: Project, docker_client: Any) -> None:
    result = run_sample(project, "--provision-keep", "-k", "test_each_test_gets_a_private_chatbi and 1")
    assert result.returncode == 0, result.stdout + result.stderr
    kept = [n for n in list_databases(docker_client, project.name + "-test") if "__pool_" in n]
    assert kept, result.stdout
    assert "provision: kept" in result.stdout
    # Kept copies hold what the test wrote.
    url = docker_client.containers.get(project.name + "-test").attrs["NetworkSettings"]["Ports"]["5432/tcp"][0]
    conn = psycopg2.connect(
        host="127.0.0.1", port=int(url["HostPort"]), user="chatbi", password="chatbi", dbname=kept[0]
    )
    cur = conn.cursor()
    cur.execute("SELECT count(*) FROM app_users")
    assert cur.fetchone() == (1,)
    conn.close()

    # The next session sees they belong to a dead session and removes them.
    cleanup = run_sample(project, "-k", "test_demo_copy_was_not_reused_dirty")
    assert cleanup.returncode == 0, cleanup.stdout + cleanup.stderr
    assert not [n for n in list_databases(docker_client, project.name + "-test") if "__pool_" in n]


def test_changed_sql_rebuilds_only_that_template(project: Project, docker_client: Any) -> None:
    schema = project.dir / "schema.sql"
    schema.write_text((Path(__file__).resolve().parents[2] / "sql" / "chatbi" / "init_app_tables.sql").read_text())
    project.write(
        databases={
            "chatbi": {"sql": ["schema.sql"], "alembic_revision": "0001_initial_schema", "tables": ["app_users"]},
            "chatbi_demo": {"sql": ["builtin:chatbi_demo/demo_data.sql"], "demo": True},
        }
    )
    assert run_sample(project, "-k", "private_chatbi and 2").returncode == 0
    before = set(list_databases(docker_client, project.name + "-test"))
    schema.write_text(schema.read_text() + "\nCREATE TABLE extra (id int);\n")
    assert run_sample(project, "-k", "private_chatbi and 2").returncode == 0
    after = set(list_databases(docker_client, project.name + "-test"))
    new = after - before
    assert len(new) == 1 and next(iter(new)).startswith("chatbi__tpl_")
    assert {n for n in before if n.startswith("chatbi_demo__tpl_")} == {
        n for n in after if n.startswith("chatbi_demo__tpl_")
    }


def test_sample_suite_against_the_alembic_example_at_head(project: Project, docker_client: Any) -> None:
    """Templates are built by the app's migrations (at head), and rebuilt when a migration changes."""
    use_alembic_example(project, demo=True)
    result = run_sample(project, "-p", "xdist", "-n", "2", revision=HEAD)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "50 passed" in result.stdout
    container = project.name + "-test"
    before = {n for n in list_databases(docker_client, container) if n.startswith("chatbi__tpl_")}
    assert len(before) == 1

    versions = project.dir / "migrations" / "versions"
    (versions / "0003_app_users_locale.py").write_text(
        '"""Add app_users.locale."""\nimport sqlalchemy as sa\nfrom alembic import op\n\n'
        'revision = "0003_app_users_locale"\ndown_revision = "0002_chat_sessions_pinned_at"\n\n\n'
        'def upgrade() -> None:\n    op.add_column("app_users", sa.Column("locale", sa.Text()))\n\n\n'
        'def downgrade() -> None:\n    op.drop_column("app_users", "locale")\n'
    )
    again = run_sample(project, "-k", "private_chatbi and 3", revision="0003_app_users_locale")
    assert again.returncode == 0, again.stdout + again.stderr
    after = {n for n in list_databases(docker_client, container) if n.startswith("chatbi__tpl_")}
    assert len(after - before) == 1, (before, after)


def test_transactional_fixture_isolates_tests_with_one_copy_per_worker(project: Project, docker_client: Any) -> None:
    """provision_tx: commits stay inside the test, SQLAlchemy's savepoint recipe works, a real COMMIT
    gets the worker a new copy, each worker keeps one copy, and nothing is left behind."""
    basetemp = project.dir / "basetemp"
    result = run_sample(project, "-p", "xdist", "-n", "2", f"--basetemp={basetemp}", sample=TX_SAMPLE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "27 passed" in result.stdout, result.stdout
    container = project.name + "-test"
    assert not [n for n in list_databases(docker_client, container) if "__pool_" in n]
    copies = {path.name: set(path.read_text().split()) for path in basetemp.glob("tx-copy-*")}
    assert copies and all(len(names) == 1 for names in copies.values()), copies

    # In one process, in file order: after a COMMIT sent as SQL text, the next test gets a new, clean copy.
    ordered = run_sample(project, "-k", "sent_as_sql_text or after_a_real_commit", sample=TX_SAMPLE)
    assert ordered.returncode == 0 and "2 passed" in ordered.stdout, ordered.stdout + ordered.stderr


def summary_lines(result: Any) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.startswith("provision: ") and "copies" in line]


def test_the_run_ends_with_what_became_of_the_copies(project: Project, docker_client: Any) -> None:
    """Three tests only read, two change rows, one changes the schema: the summary says so, in
    one process and added up over xdist workers; with recycling off, every copy is dropped."""
    expected = "provision: 6 copies: 3 reused, 2 reset, 1 dropped"
    for xdist in ([], ["-p", "xdist", "-n", "2"]):
        result = run_sample(project, *xdist, sample=RECYCLE_SAMPLE)
        assert result.returncode == 0, result.stdout + result.stderr
        assert summary_lines(result) == [expected], result.stdout

    off = "provision: 6 copies: 0 reused, 0 reset, 6 dropped (recycling off: provision_recycle = false)"
    for switch in (["--provision-no-recycle"], ["-o", "provision_recycle=false"]):
        result = run_sample(project, *switch, sample=RECYCLE_SAMPLE)
        assert result.returncode == 0, result.stdout + result.stderr
        assert summary_lines(result) == [off], result.stdout
    assert not [n for n in list_databases(docker_client, project.name + "-test") if "__pool_" in n]
