"""Snapshots against the real engine: save, list, restore, rm, export; namespacing, refusals, damage (issue 11)."""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
import subprocess
from typing import Any

import pytest

from tests.conftest import Project, databases, fresh, query, run_cli

pytestmark = pytest.mark.integration


def cli(project: Project, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return run_cli("-c", str(project.path), *args, cwd=project.dir, **kwargs)


def emails(project: Project) -> list[str]:
    return [r[0] for r in query(project, "chatbi", "SELECT email FROM app_users ORDER BY 1")]


def settle(project: Project) -> None:
    """Wait for the background tidy-up (the standby clones) of the last command."""
    from provision import api

    api.wait_for_housekeeping(project.config())


@pytest.fixture
def built(project: Project) -> Project:
    project.write(cleanup="background")
    result = fresh(project, "--yes")
    assert result.returncode == 0, result.stderr
    return project


def test_save_list_restore_round_trip(built: Project) -> None:
    query(built, "chatbi", "INSERT INTO app_users (email) VALUES ('kept@example.com')")
    saved = cli(built, "snapshot", "save", "morning", "--json")
    assert saved.returncode == 0, saved.stderr
    result = json.loads(saved.stdout)
    assert sorted(s["database"] for s in result["snapshots"]) == ["chatbi", "chatbi_demo"]
    settle(built)

    listed = json.loads(cli(built, "snapshot", "list", "--json").stdout)
    snaps = {s["database"]: s for s in listed["snapshots"]}
    assert snaps["chatbi"]["name"] == "morning" and snaps["chatbi"]["size_bytes"] > 1_000_000
    assert snaps["chatbi"]["alembic_versions"] == ["0001_initial_schema"]
    assert snaps["chatbi"]["provenance"]["hash"] and snaps["chatbi"]["created_at"]
    assert snaps["chatbi"]["standby"] is True
    assert listed["total_bytes"] == sum(s["size_bytes"] + s["standby_bytes"] for s in listed["snapshots"])
    text = cli(built, "snapshot", "list").stdout
    assert "morning" in text and "total" in text

    query(built, "chatbi", "INSERT INTO app_users (email) VALUES ('later@example.com')")
    query(built, "chatbi_demo", "DELETE FROM order_items")
    restored = cli(built, "snapshot", "restore", "morning", "--yes", "--json")
    assert restored.returncode == 0, restored.stderr
    how = {d["database"]: d["how"] for d in json.loads(restored.stdout)["databases"]}
    assert how == {"chatbi": "standby", "chatbi_demo": "standby"}, "a ready standby makes the restore a rename"
    assert emails(built) == ["kept@example.com"]
    assert query(built, "chatbi_demo", "SELECT count(*) FROM order_items")[0][0] > 0
    settle(built)
    names = databases(built)
    assert not [d for d in names if "__old_" in d or "__stage_" in d]
    assert "chatbi__standby_morning" in names, "the next standby is cloned after a restore"

    status = json.loads(cli(built, "status", "--json").stdout)
    assert {d["name"]: d["restored_from"] for d in status["databases"]}["chatbi"] == "morning"
    assert len(status["snapshots"]) == 2
    assert "snapshot   morning  of chatbi" in cli(built, "status").stdout


def test_snapshots_belong_to_one_database_and_survive_fresh(built: Project) -> None:
    query(built, "chatbi", "INSERT INTO app_users (email) VALUES ('only-chatbi@example.com')")
    assert cli(built, "snapshot", "save", "a1", "--db", "chatbi").returncode == 0
    wrong = cli(built, "snapshot", "restore", "a1", "--db", "chatbi_demo", "--yes")
    assert wrong.returncode == 2, wrong.stderr
    assert "no snapshot 'a1' of chatbi_demo" in wrong.stderr

    # fresh replaces chatbi (and prunes templates) but leaves the snapshot alone.
    (built.dir / "extra.sql").write_text("CREATE TABLE extra (id int);\n")
    dbs = {"chatbi": {"sql": ["builtin:chatbi/init_app_tables.sql", "extra.sql"],
                      "alembic_revision": "0001_initial_schema"}}  # fmt: skip
    built.write(databases=dbs, keep_templates=1)
    assert fresh(built, "--yes", "--sync-cleanup").returncode == 0
    assert emails(built) == []
    assert cli(built, "snapshot", "restore", "a1", "--yes").returncode == 0
    assert emails(built) == ["only-chatbi@example.com"]


def test_refusals_and_names(built: Project) -> None:
    assert cli(built, "snapshot", "save", "x1").returncode == 0
    again = cli(built, "snapshot", "save", "x1")
    assert again.returncode == 9 and "already exists" in again.stderr and "--force" in again.stderr
    assert cli(built, "snapshot", "save", "x1", "--force").returncode == 0

    asked = cli(built, "snapshot", "restore", "x1", input="")
    assert asked.returncode == 9, asked.stderr
    assert "no terminal" in asked.stderr and "--yes" in asked.stderr

    bad = cli(built, "snapshot", "save", "no spaces; drop")
    assert bad.returncode == 2 and "invalid snapshot name" in bad.stderr
    typo = cli(built, "snapshot", "restore", "x2", "--yes")
    assert typo.returncode == 2 and "did you mean 'x1'" in typo.stderr
    unknown_db = cli(built, "snapshot", "save", "x3", "--db", "nope")
    assert unknown_db.returncode == 2 and "not in the configuration" in unknown_db.stderr
    for result in (again, asked, bad, typo, unknown_db):
        assert "Traceback" not in result.stderr


def test_rm_removes_the_snapshot_and_its_standby(built: Project) -> None:
    assert cli(built, "snapshot", "save", "gone").returncode == 0
    settle(built)
    assert [d for d in databases(built) if "_gone" in d]
    removed = cli(built, "snapshot", "rm", "gone", "--json")
    assert removed.returncode == 0, removed.stderr
    assert sorted(json.loads(removed.stdout)["databases"]) == ["chatbi", "chatbi_demo"]
    assert not [d for d in databases(built) if "_gone" in d]
    assert json.loads(cli(built, "snapshot", "list", "--json").stdout)["snapshots"] == []


def test_export_is_a_pg_dump_the_servers_pg_restore_reads(built: Project, docker_client: Any) -> None:
    query(built, "chatbi", "INSERT INTO app_users (email) VALUES ('exported@example.com')")
    assert cli(built, "snapshot", "save", "e1").returncode == 0
    target = built.dir / "chatbi.dump"
    exported = cli(built, "snapshot", "export", "e1", str(target), "--db", "chatbi", "--json")
    assert exported.returncode == 0, exported.stderr
    assert json.loads(exported.stdout)["size_bytes"] == target.stat().st_size > 10_000
    assert target.read_bytes()[:5] == b"PGDMP"
    assert not (built.dir / "chatbi.dump.partial").exists()
    container = docker_client.containers.get(built.name)
    container.exec_run(["psql", "-U", "chatbi", "-d", "postgres", "-c", "CREATE DATABASE from_dump"])
    # The server's own pg_restore reads the file from stdin.
    proc = subprocess.run(
        ["docker", "exec", "-i", built.name, "pg_restore", "-U", "chatbi", "-d", "from_dump", "--exit-on-error"],
        input=target.read_bytes(),
        capture_output=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert query(built, "from_dump", "SELECT email FROM app_users") == [("exported@example.com",)]
    missing = cli(built, "snapshot", "export", "nope", str(built.dir / "x.dump"))
    assert missing.returncode == 2 and not (built.dir / "x.dump").exists()


def test_a_snapshot_dropped_by_hand_is_reported_clearly(built: Project) -> None:
    assert cli(built, "snapshot", "save", "hand").returncode == 0
    settle(built)
    query(built, "postgres", "ALTER DATABASE chatbi__snap_hand IS_TEMPLATE false")
    query(built, "postgres", "DROP DATABASE chatbi__snap_hand")
    listed = json.loads(cli(built, "snapshot", "list", "--json").stdout)
    assert [s["database"] for s in listed["snapshots"]] == ["chatbi_demo"]
    result = cli(built, "snapshot", "restore", "hand", "--db", "chatbi", "--yes")
    assert result.returncode == 2, result.stderr
    assert "dropped by hand" in result.stderr and "Traceback" not in result.stderr
    assert cli(built, "snapshot", "rm", "hand", "--db", "chatbi").returncode == 0
    assert "chatbi__standby_hand" not in databases(built)


def test_restore_brings_back_a_database_dropped_by_hand(built: Project) -> None:
    query(built, "chatbi", "INSERT INTO app_users (email) VALUES ('back@example.com')")
    assert cli(built, "snapshot", "save", "safe", "--db", "chatbi").returncode == 0
    query(built, "postgres", "DROP DATABASE chatbi WITH (FORCE)")
    restored = cli(built, "snapshot", "restore", "safe", "--json")
    assert restored.returncode == 0, restored.stderr
    assert json.loads(restored.stdout)["databases"][0]["replaced"] is False
    assert emails(built) == ["back@example.com"]


def test_snapshot_limit_refuses_and_down_volumes_says_snapshots_go(built: Project) -> None:
    built.write(snapshot_limit_mb=5)
    refused = cli(built, "snapshot", "save", "big")
    assert refused.returncode == 9, refused.stderr
    assert "snapshot_limit_mb" in refused.stderr
    assert not [d for d in databases(built) if "__snap_" in d]
    down = cli(built, "down", "--volumes", "--yes")
    assert down.returncode == 0 and "every database and snapshot in it" in down.stdout


# ---------------------------------------------------------------- dumps as sources


def test_gzip_and_xz_sources_are_decompressed_while_streaming(project: Project) -> None:
    (project.dir / "1_schema.sql.gz").write_bytes(gzip.compress(b"CREATE TABLE t (id int PRIMARY KEY);\n"))
    (project.dir / "2_rows.sql.xz").write_bytes(lzma.compress(b"INSERT INTO t SELECT generate_series(1, 500);\n"))
    project.write(databases={"app": {"sql": ["1_schema.sql.gz", "2_rows.sql.xz"], "tables": ["t"]}})
    result = fresh(project, "--yes")
    assert result.returncode == 0, result.stderr
    assert query(project, "app", "SELECT count(*) FROM t") == [(500,)]
    status = json.loads(cli(project, "status", "--json").stdout)["databases"][0]
    raw = hashlib.sha256((project.dir / "1_schema.sql.gz").read_bytes()).hexdigest()
    assert ["1_schema.sql.gz", raw] in status["sources"]

    (project.dir / "2_rows.sql.xz").write_bytes(lzma.compress(b"SELECT 1;\n\nINSERT INTO nope VALUES (1);\n"))
    broken = fresh(project, "--yes")
    assert broken.returncode == 7, broken.stderr
    assert "2_rows.sql.xz:3" in broken.stderr


def test_a_pg_dump_file_is_a_source_restored_by_the_servers_pg_restore(built: Project) -> None:
    query(built, "chatbi", "INSERT INTO app_users (email) VALUES ('from-a-dump@example.com')")
    assert cli(built, "snapshot", "save", "d1", "--db", "chatbi").returncode == 0
    dump = built.dir / "chatbi.dump"
    assert cli(built, "snapshot", "export", "d1", str(dump), "--db", "chatbi").returncode == 0

    built.write(databases={"copy": {"sql": "chatbi.dump", "tables": ["app_users", "alembic_version"]}})
    result = fresh(built, "--yes", "--json")
    assert result.returncode == 0, result.stderr
    assert "restore chatbi.dump with pg_restore" in fresh(built, "--yes", "--no-cache").stdout
    assert query(built, "copy", "SELECT email FROM app_users") == [("from-a-dump@example.com",)]
    status = json.loads(cli(built, "status", "--json").stdout)["databases"][0]
    assert status["sources"] == [["chatbi.dump", hashlib.sha256(dump.read_bytes()).hexdigest()]]

    # A dump that cannot be restored: the error names the file and the object, the old copy stays.
    (built.dir / "clash.sql").write_text("CREATE TABLE app_users (id int);\n")
    built.write(databases={"copy": {"sql": ["clash.sql", "chatbi.dump"], "tables": ["app_users"]}})
    failed = fresh(built, "--yes")
    assert failed.returncode == 7, failed.stdout + failed.stderr
    assert "restore error in chatbi.dump" in failed.stderr
    assert "app_users" in failed.stderr and "already exists" in failed.stderr
    assert query(built, "copy", "SELECT email FROM app_users") == [("from-a-dump@example.com",)]
