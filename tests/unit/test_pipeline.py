"""provision.builds.pipeline without a server: build plans, content hashes, provenance records."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest

import provision
from provision.builds.pipeline import plan_database, provenance, read_provenance
from provision.config import Config, DatabaseConfig, default_databases

PG17_2 = 170002
PG17_4 = 170004
PG16_6 = 160006


@pytest.fixture
def project(tmp_path: Path) -> Config:
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "1_users.sql").write_text("create table users (id int);\n")
    (tmp_path / "migrations" / "2_posts.sql").write_text("create table posts (id int);\n")
    db = DatabaseConfig(name="app", sql=("migrations",), alembic_revision="0001", tables=("users", "posts"))
    demo = DatabaseConfig(name="app_demo", sql=("migrations/1_users.sql",), demo=True)
    return Config(base_dir=tmp_path, source=str(tmp_path / "provision.yaml"), databases=(db, demo))


def test_plan_lists_sources_with_size_and_sha256(project: Config) -> None:
    plan = plan_database(project, project.databases[0])
    assert plan.name == "app"
    assert [f.display for f in plan.files] == ["migrations/1_users.sql", "migrations/2_posts.sql"]
    for f in plan.files:
        data = f.path.read_bytes()
        assert f.size == len(data)
        assert f.sha256 == hashlib.sha256(data).hexdigest()
    assert plan.variables == ()


def test_demo_databases_get_the_scale_variable(project: Config) -> None:
    plan = plan_database(project.with_overrides(demo_scale=4), project.databases[1])
    assert plan.variables == (("scale", "4"),)


def test_builtin_sources_display_their_file_name(tmp_path: Path) -> None:
    cfg = Config(base_dir=tmp_path)
    plan = plan_database(cfg, default_databases()[0])
    assert [f.display for f in plan.files] == ["init_app_tables.sql"]


def test_content_hash_is_stable_and_hex(project: Config) -> None:
    one = plan_database(project, project.databases[0]).content_hash(PG17_2)
    two = plan_database(project, project.databases[0]).content_hash(PG17_2)
    assert one == two
    assert len(one) == 64 and int(one, 16) >= 0


def test_content_hash_changes_with_file_content(project: Config, tmp_path: Path) -> None:
    before = plan_database(project, project.databases[0]).content_hash(PG17_2)
    (tmp_path / "migrations" / "2_posts.sql").write_text("create table posts (id bigint);\n")
    after = plan_database(project, project.databases[0]).content_hash(PG17_2)
    assert before != after


def test_content_hash_changes_with_an_added_file(project: Config, tmp_path: Path) -> None:
    before = plan_database(project, project.databases[0]).content_hash(PG17_2)
    (tmp_path / "migrations" / "10_tags.sql").write_text("create table tags (id int);\n")
    assert plan_database(project, project.databases[0]).content_hash(PG17_2) != before


def test_content_hash_changes_with_demo_scale(project: Config) -> None:
    demo = project.databases[1]
    one = plan_database(project.with_overrides(demo_scale=1), demo).content_hash(PG17_2)
    two = plan_database(project.with_overrides(demo_scale=2), demo).content_hash(PG17_2)
    assert one != two


def test_content_hash_changes_with_variables(project: Config) -> None:
    db = project.databases[0]
    base = plan_database(project, db).content_hash(PG17_2)
    with_var = plan_database(project, replace(db, variables=(("x", "1"),))).content_hash(PG17_2)
    other_var = plan_database(project, replace(db, variables=(("x", "2"),))).content_hash(PG17_2)
    assert len({base, with_var, other_var}) == 3


def test_content_hash_changes_with_alembic_revision(project: Config) -> None:
    db = project.databases[0]
    one = plan_database(project, db).content_hash(PG17_2)
    two = plan_database(project, replace(db, alembic_revision="0002")).content_hash(PG17_2)
    none = plan_database(project, replace(db, alembic_revision=None)).content_hash(PG17_2)
    assert len({one, two, none}) == 3


def test_content_hash_changes_with_single_transaction(project: Config) -> None:
    db = project.databases[0]
    one = plan_database(project, db).content_hash(PG17_2)
    two = plan_database(project, replace(db, single_transaction=False)).content_hash(PG17_2)
    assert one != two


def test_content_hash_follows_server_major_not_minor(project: Config) -> None:
    plan = plan_database(project, project.databases[0])
    assert plan.content_hash(PG17_2) == plan.content_hash(PG17_4)
    assert plan.content_hash(PG17_2) != plan.content_hash(PG16_6)


def test_content_hash_ignores_where_the_files_are(tmp_path: Path) -> None:
    """The same SQL in two checkouts gives the same template."""
    plans = []
    for checkout in ("one", "two"):
        base = tmp_path / checkout
        base.mkdir()
        (base / "init.sql").write_text("create table t (id int);\n")
        cfg = Config(base_dir=base, databases=(DatabaseConfig(name="app", sql=("init.sql",)),))
        plans.append(plan_database(cfg, cfg.databases[0]))
    assert plans[0].content_hash(PG17_2) == plans[1].content_hash(PG17_2)


def test_provenance_round_trip(project: Config) -> None:
    plan = plan_database(project, project.databases[0])
    content_hash = plan.content_hash(PG17_2)
    comment = provenance(plan, content_hash, "database", "2024-01-02T03:04:05+00:00", 16)
    record = read_provenance(comment)
    assert record is not None
    assert record["hash"] == content_hash
    assert record["database"] == "app"
    assert record["kind"] == "database"
    assert record["provision"] == provision.__version__
    assert record["alembic_revision"] == "0001"
    assert record["built_at"] == "2024-01-02T03:04:05+00:00"
    assert record["tables"] == 16
    assert record["sources"] == [[f.display, f.sha256] for f in plan.files]
    assert len(comment) < 8000  # a COMMENT fits easily


@pytest.mark.parametrize(
    "comment",
    [
        None,
        "",
        "hand-written note about this database",
        "{not json at all",
        '{"no": "hash"}',
        '["hash"]',
        '  {"hash": "x"}',
        '"{\\"hash\\": 1}"',
    ],
)
def test_read_provenance_ignores_other_comments(comment: str | None) -> None:
    assert read_provenance(comment) is None


def test_read_provenance_accepts_minimal_record() -> None:
    assert read_provenance(json.dumps({"hash": "abc"})) == {"hash": "abc"}


def test_build_plan_is_a_value(project: Config) -> None:
    """Planned twice from the same config, a plan is equal and hashes the same; a plan cannot be
    changed in place, and a changed copy is another plan with another content hash."""
    import dataclasses

    first = plan_database(project, project.databases[0])
    again = plan_database(project, project.databases[0])
    assert first == again and hash(first.content_hash(PG17_2)) == hash(again.content_hash(PG17_2))
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.variables = (("x", "1"),)  # type: ignore[misc]
    changed = replace(first, variables=(("x", "1"),))
    assert changed != first and changed.content_hash(PG17_2) != first.content_hash(PG17_2)
    assert first.content_hash(PG17_2) == again.content_hash(PG17_2), "replace() changed the original"
    assert first.steps(True) == again.steps(True) and first.steps(True)[0].startswith(f"build {first.name}")


def test_files_hashed_while_streaming_give_the_same_plan_hash(project: Config) -> None:
    from provision.postgres.sqlstream import SourceMap, stream_files

    hashed = plan_database(project, project.databases[0])
    unhashed = plan_database(project, project.databases[0], hash_files=False)
    assert all(f.sha256 == "" for f in unhashed.files)
    streamed = SourceMap()
    for _ in stream_files([f.path for f in unhashed.files], streamed, chunk_bytes=7):
        pass
    filled = unhashed.with_digests(streamed.digests)
    assert [f.sha256 for f in filled.files] == [f.sha256 for f in hashed.files]
    assert filled.content_hash(PG17_2) == hashed.content_hash(PG17_2)
