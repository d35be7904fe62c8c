"""Pool copies a test left unchanged are reused; changed rows and sequences are put back and the copy
reused; any other change, of any kind, gets the copy dropped (issue 12)."""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from tests.conftest import NAME_PREFIX, Project, project_data, remove_test_objects

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE TABLE items (id serial PRIMARY KEY, label text NOT NULL);
INSERT INTO items (label) SELECT 'item ' || g FROM generate_series(1, 50) g;
CREATE TABLE tags (id serial PRIMARY KEY, item_id int NOT NULL REFERENCES items (id), tag text NOT NULL);
INSERT INTO tags (item_id, tag) SELECT g, 'tag ' || g FROM generate_series(1, 50, 5) g;
CREATE TABLE docs (id int PRIMARY KEY, body text NOT NULL);
INSERT INTO docs SELECT 1, string_agg(md5(g::text), '') FROM generate_series(1, 400) g;  -- TOASTed
CREATE TABLE empty (id int);
"""
TABLES = ("items", "tags", "docs", "empty")
SEQUENCES = ("items_id_seq", "tags_id_seq")
UNLOGGED = "CREATE UNLOGGED TABLE scratch (id int);"
# Triggers and rules that session_replication_role = replica leaves on: each would write to
# `audit` while a reset reloads `items` (COPY fires triggers) or empties `notes` (DELETE fires rules).
AUDIT = """
CREATE TABLE audit (id serial PRIMARY KEY, op text NOT NULL, item_id int);
CREATE TABLE notes (id int, body text);
CREATE FUNCTION audit_items() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO audit (op, item_id) VALUES (TG_OP, COALESCE(NEW.id, OLD.id));
  RETURN NULL;
END $$;
"""
TRIGGER = "CREATE TRIGGER items_audit AFTER INSERT OR DELETE ON items FOR EACH ROW EXECUTE FUNCTION audit_items();"
RULE = "CREATE RULE notes_audit AS ON DELETE TO notes DO ALSO INSERT INTO audit (op, item_id) VALUES ('rule', OLD.id);"
AUDITED = {
    "audited_always": AUDIT + TRIGGER + "ALTER TABLE items ENABLE ALWAYS TRIGGER items_audit;",
    "audited_replica": AUDIT + TRIGGER + "ALTER TABLE items ENABLE REPLICA TRIGGER items_audit;",
    "audited_rule": AUDIT + RULE + "ALTER TABLE notes ENABLE ALWAYS RULE notes_audit;",
}


@dataclass
class Server:
    endpoint: Any
    templates: dict[str, str]
    admin: Any

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with self.admin.cursor() as cur:
            cur.execute(sql, params or None)
            return cur.fetchall()

    def oid(self, name: str) -> int:
        return int(self.query("SELECT oid FROM pg_database WHERE datname = %s", name)[0][0])

    def name_of(self, oid: int) -> str | None:
        rows = self.query("SELECT datname FROM pg_database WHERE oid = %s", oid)
        return rows[0][0] if rows else None

    def connect(self, name: str) -> Any:
        conn = psycopg2.connect(self.endpoint.dsn(name, show_password=True))
        conn.autocommit = True
        return conn


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, docker_client: Any) -> Iterator[Server]:
    from provision.testing import templates as test_templates

    folder: Path = tmp_path_factory.mktemp("recycling")
    (folder / "items.sql").write_text(SCHEMA)
    (folder / "unlogged.sql").write_text(SCHEMA + UNLOGGED)
    databases = {"items": {"sql": "items.sql"}, "withunlogged": {"sql": "unlogged.sql"}}
    for database, extra in AUDITED.items():
        (folder / f"{database}.sql").write_text(SCHEMA + extra)
        databases[database] = {"sql": f"{database}.sql"}
    name = NAME_PREFIX + secrets.token_hex(4)
    project = Project(folder / "provision.yaml", name, project_data(name, databases=databases)).write()
    cfg = test_templates.config_for_tests(project.config())
    templates = test_templates.ensure_templates(cfg)
    admin = psycopg2.connect(templates.endpoint.dsn("postgres", show_password=True))
    admin.autocommit = True
    try:
        yield Server(templates.endpoint, templates.templates, admin)
    finally:
        admin.close()
        remove_test_objects(docker_client, name)


@contextlib.contextmanager
def pool_of(server: Server, database: str = "items", **options: Any) -> Iterator[Any]:
    """A started pool of one ready copy, closed (and its copies dropped) afterwards."""
    from provision.testing.pool import DatabasePool, SessionLock

    lock = SessionLock(server.endpoint)
    made = DatabasePool(
        server.endpoint, database, server.templates[database], lock.token, size=1, fillers=1, **options
    ).start()
    try:
        yield made
    finally:
        made.close()
        lock.close()


@pytest.fixture
def pool(server: Server) -> Iterator[Any]:
    with pool_of(server) as made:
        yield made


def kept(pool: Any) -> int:
    """Copies the pool has handed out again: as they came back, or with their rows put back."""
    return pool.tally().reused + pool.tally().reset


def returned(server: Server, pool: Any, oid: int, before: int | None = None) -> str | None:
    """Wait until the pool has dealt with a released copy: its new name if kept (as it is, or
    with its rows put back), None if dropped. `before`: kept(pool) before the release.

    Not "its name changed": the copy is renamed before it is checked, then dropped if it changed.
    """
    before = kept(pool) if before is None else before
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        name = server.name_of(oid)
        if name is None:
            return None
        if kept(pool) > before:
            return name
        time.sleep(0.02)
    raise AssertionError(f"the pool neither kept nor dropped database {oid} within 15 s")


def contents(conn: Any, tables: tuple[str, ...] = TABLES, sequences: tuple[str, ...] = SEQUENCES) -> dict[str, Any]:
    """Every table's rows (and their order in a plain scan) and every sequence's state."""
    found: dict[str, Any] = {}
    with conn.cursor() as cur:
        for table in tables:
            cur.execute(f"SELECT coalesce(string_agg(t::text, '|'), '') FROM {table} t")  # no ORDER BY: scan order
            found[table] = cur.fetchone()[0]
        for sequence in sequences:
            cur.execute(f"SELECT last_value, is_called FROM {sequence}")
            found[sequence] = cur.fetchone()
    conn.rollback()
    return found


def first_contents(server: Server, pool: Any) -> dict[str, Any]:
    """What a fresh copy holds (read from one, which then comes back unchanged)."""
    name, conn = pool.acquire()
    oid = server.oid(name)
    before = kept(pool)
    fresh = contents(conn)
    pool.release(name, conn)
    assert returned(server, pool, oid, before) is not None
    return fresh


def take(pool: Any, wanted: str) -> Any:
    """Acquire until the copy named `wanted` comes out (one copy is kept ready, so within two)."""
    for _ in range(3):
        name, conn = pool.acquire()
        if name == wanted:
            return conn
        pool.release(name, conn)
    raise AssertionError(f"the kept copy {wanted} was never handed out again")


def use(server: Server, pool: Any, statements: list[str], via: str = "own") -> str | None:
    """Take a copy, run `statements` in it, give it back: its name afterwards (None: dropped).

    via: "own" (the fixture's connection), "other" (a second connection to the copy), or
    "admin" (the maintenance database, for statements that name the copy as {db}).
    """
    name, conn = pool.acquire()
    oid = server.oid(name)
    before = kept(pool)
    if via == "own":
        conn.autocommit = True
        runner = conn
    else:
        runner = server.admin if via == "admin" else server.connect(name)
    with runner.cursor() as cur:
        for statement in statements:
            cur.execute(statement.replace("{db}", f'"{name}"'))
    if via == "other":
        runner.close()
    pool.release(name, conn)
    return returned(server, pool, oid, before)


READS = {
    "nothing": [],
    "a select": ["SELECT count(*) FROM items"],
    "catalog reads": ["SELECT count(*) FROM pg_class", "SELECT count(*) FROM information_schema.columns"],
    "a read-only transaction": ["BEGIN", "SELECT * FROM items", "ROLLBACK"],
    "session state": ["SET search_path TO pg_catalog", "PREPARE p AS SELECT 1", "SELECT pg_advisory_lock(7)"],
}

# Only rows of the template's tables and its sequences: put back, and the copy reused.
ROW_CHANGES = {
    "insert": ["INSERT INTO items (label) VALUES ('new')"],
    "update": ["UPDATE items SET label = 'changed' WHERE id = 1"],
    "delete": ["DELETE FROM tags WHERE id = 1"],
    "delete a referenced row": ["DELETE FROM tags", "DELETE FROM items WHERE id > 40"],
    "insert into a table others reference": ["INSERT INTO items (label) VALUES ('x')"],
    "update a TOASTed value": ["UPDATE docs SET body = body || 'x'"],
    "nextval": ["SELECT nextval('items_id_seq')"],
    "setval": ["SELECT setval('tags_id_seq', 1000)"],
    "insert into an empty table": ["INSERT INTO empty VALUES (1)"],
    "fill pages of an empty table": ["INSERT INTO empty SELECT g FROM generate_series(1, 3000) g"],
    "triggers off: rows as they were": ["UPDATE items SET label = upper(label)", "DELETE FROM docs"],
    # Nothing is left of these, but their WAL is there: put back all the same.
    "a rolled-back write": ["BEGIN", "DELETE FROM tags", "DELETE FROM items", "ROLLBACK"],
    "a row lock": ["BEGIN", "SELECT * FROM items FOR SHARE", "COMMIT"],
}

# Anything else changes the catalogs (or leaves no WAL), or writes too much: the copy is dropped.
WRITES = {
    "create table": ["CREATE TABLE extra (a int)"],
    "temporary table": ["CREATE TEMP TABLE t (a int)"],
    "create function": ["CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'"],
    "truncate": ["TRUNCATE docs"],
    "large object": ["SELECT lo_create(0)"],
    "analyze": ["ANALYZE items"],
    "comment on a table": ["COMMENT ON TABLE items IS 'x'"],
    "unlogged table created": ["CREATE UNLOGGED TABLE u (a int)", "INSERT INTO u VALUES (1)"],
    "rows and DDL": ["INSERT INTO items (label) VALUES ('new')", "ALTER TABLE items ADD COLUMN extra int"],
    "alter sequence": ["ALTER SEQUENCE items_id_seq RESTART WITH 500"],
    "vacuum": ["DELETE FROM tags WHERE id = 1", "VACUUM tags"],
    # Rows only, but more WAL than a reset is worth (recycling.MAX_RESET_WAL_BYTES).
    "rows, but many": ["INSERT INTO empty SELECT g FROM generate_series(1, 60000) g"],
}

# Shared catalogs: these name the database from outside it, so they leave no WAL in it.
DATABASE_LEVEL = {
    "alter database set": ["ALTER DATABASE {db} SET work_mem = '8MB'"],
    "comment on database": ["COMMENT ON DATABASE {db} IS 'x'"],
    "revoke connect": ["REVOKE CONNECT ON DATABASE {db} FROM PUBLIC"],
    "connection limit": ["ALTER DATABASE {db} CONNECTION LIMIT 50"],
    "role setting in database": ["ALTER ROLE CURRENT_USER IN DATABASE {db} SET work_mem = '8MB'"],
}


@pytest.mark.parametrize("case", list(READS))
def test_a_copy_left_unchanged_is_reused_under_a_new_name(server: Server, pool: Any, case: str) -> None:
    name_after = use(server, pool, READS[case])
    assert name_after is not None, f"{case}: an unchanged copy was dropped instead of reused"
    assert pool.tally().reused == 1


@pytest.mark.parametrize("case", list(ROW_CHANGES))
def test_changed_rows_are_put_back_and_the_copy_reused(server: Server, pool: Any, case: str) -> None:
    fresh = first_contents(server, pool)
    reused = pool.tally().reused
    name_after = use(server, pool, ROW_CHANGES[case])
    assert name_after is not None, f"{case}: the copy was dropped instead of put back"
    assert pool.tally().reused == reused, f"{case}: the change went unseen"
    conn = take(pool, name_after)
    assert pool.tally().reset == 1
    assert contents(conn) == fresh, f"{case}: the copy does not hold what a fresh one holds"
    # A test that only reads the put-back copy leaves it unchanged: it is reused, not put back again.
    oid = server.oid(name_after)
    before = kept(pool)
    contents(conn)
    pool.release(name_after, conn)
    assert returned(server, pool, oid, before) is not None
    assert pool.tally().reset == 1, f"{case}: reading the put-back copy changed it"


@pytest.mark.parametrize("case", list(WRITES))
def test_a_copy_changed_otherwise_is_dropped(
    server: Server, pool: Any, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from provision.testing import recycling

    tried: list[Any] = []
    reset = recycling.reset
    monkeypatch.setattr(recycling, "reset", lambda *args: tried.append(args) or reset(*args))
    name_after = use(server, pool, WRITES[case])
    assert name_after is None, f"{case}: a changed copy was kept as {name_after}"
    assert pool.tally().reused == 0 and pool.tally().reset == 0
    assert tried == [], f"{case}: judged from the WAL alone, yet the pool connected to the copy to try a reset"


@pytest.mark.parametrize("case", list(DATABASE_LEVEL))
def test_a_copy_changed_from_outside_is_dropped(server: Server, pool: Any, case: str) -> None:
    assert use(server, pool, DATABASE_LEVEL[case], via="admin") is None, f"{case}: the copy was reused"
    if case == "role setting in database":  # dropped with the copy, not left behind
        assert not server.query(
            "SELECT 1 FROM pg_db_role_setting"
            " WHERE setdatabase <> 0 AND setdatabase NOT IN (SELECT oid FROM pg_database)"
        )


def test_a_write_from_another_connection_is_seen(server: Server, pool: Any) -> None:
    fresh = first_contents(server, pool)
    reused = pool.tally().reused
    name_after = use(server, pool, ROW_CHANGES["insert"], via="other")
    assert name_after is not None and pool.tally().reused == reused
    assert contents(take(pool, name_after)) == fresh and pool.tally().reset == 1


def test_without_a_capture_changed_rows_get_the_copy_dropped(server: Server, pool: Any) -> None:
    """A template too large to hold in memory (or unreadable) is not captured: changes drop the copy."""
    first_contents(server, pool)  # the first copy has been read by now
    pool._pristine = None
    assert use(server, pool, ROW_CHANGES["insert"]) is None


def test_a_session_still_connected_gets_the_copy_dropped(server: Server, pool: Any) -> None:
    """The code under test left a connection open: it could still write, so the copy goes."""
    name, conn = pool.acquire()
    oid = server.oid(name)
    lingering = server.connect(name)
    try:
        pool.release(name, conn)
        assert returned(server, pool, oid) is None
        with pytest.raises(psycopg2.OperationalError):  # dropped WITH (FORCE): the session was ended
            lingering.cursor().execute("SELECT 1")
    finally:
        lingering.close()


def test_a_reused_copy_is_pristine_and_its_old_name_is_gone(server: Server, pool: Any) -> None:
    first, conn = pool.acquire()
    oid = server.oid(first)
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM items")
    pool.release(first, conn)
    renamed = returned(server, pool, oid)
    assert renamed is not None
    name = renamed
    conn = take(pool, renamed)
    assert server.oid(name) == oid
    with conn.cursor() as cur:
        cur.execute("SELECT count(*), max(id) FROM items")
        assert cur.fetchone() == (50, 50)
        cur.execute("SELECT nextval('items_id_seq')")
        assert cur.fetchone() == (51,)
    conn.rollback()
    pool.release(name, conn)
    # A connection the first test's code makes late goes nowhere near the next test's copy.
    with pytest.raises(psycopg2.OperationalError, match="does not exist"):
        server.connect(first)


def test_a_template_with_an_unlogged_table_never_recycles(server: Server) -> None:
    """Writes to an unlogged table leave no WAL, so nothing could prove such a copy unchanged."""
    from provision.testing.pool import DatabasePool, SessionLock

    lock = SessionLock(server.endpoint)
    pool = DatabasePool(
        server.endpoint, "withunlogged", server.templates["withunlogged"], lock.token, size=1, fillers=1
    ).start()
    try:
        name, conn = pool.acquire()
        oid = server.oid(name)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("INSERT INTO scratch VALUES (1)")
        pool.release(name, conn)
        assert returned(server, pool, oid) is None
        assert pool.tally().reused == 0
    finally:
        pool.close()
        lock.close()


# A change each: only to rows, so put back were it not for what the reset would fire.
FIRING = {
    "a trigger enabled ALWAYS": ("audited_always", ["UPDATE items SET label = 'changed' WHERE id = 1"]),
    "a trigger enabled REPLICA": ("audited_replica", ["UPDATE items SET label = 'changed' WHERE id = 1"]),
    "a rule enabled ALWAYS": ("audited_rule", ["INSERT INTO notes VALUES (1, 'note')"]),
}


@pytest.mark.parametrize("case", list(FIRING))
def test_a_template_whose_triggers_or_rules_fire_under_replica_is_never_reset(server: Server, case: str) -> None:
    """A reset runs with session_replication_role = replica, which leaves triggers and rules
    enabled ALWAYS or REPLICA on: they would write rows (and advance a sequence) no fresh copy
    has. So a changed copy is dropped, and the next test gets a pristine one."""
    database, statements = FIRING[case]
    audited = (*TABLES, "audit", "notes"), (*SEQUENCES, "audit_id_seq")
    with pool_of(server, database) as pool:
        name, conn = pool.acquire()
        oid = server.oid(name)
        fresh = contents(conn, *audited)
        assert fresh["audit"] == "" and fresh["audit_id_seq"] == (1, False)
        pool.release(name, conn)
        assert returned(server, pool, oid) is not None, "an unchanged copy is still reused"

        name_after = use(server, pool, statements)
        # Whatever the pool did with the changed copy, the next copy holds what a fresh one holds.
        conn = take(pool, name_after) if name_after is not None else pool.acquire()[1]
        assert contents(conn, *audited) == fresh, f"{case}: the next test sees what the reset fired"
        assert name_after is None, f"{case}: the changed copy was put back as {name_after}"
        tally = pool.tally()
        assert (tally.reused, tally.reset, tally.dropped) == (1, 0, 1)
        assert tally.no_reset is not None and ("items_audit" in tally.no_reset or "notes_audit" in tally.no_reset)


def test_with_recycling_off_every_used_copy_is_dropped(server: Server) -> None:
    from provision.testing.pool import SWITCHED_OFF

    with pool_of(server, recycle=False) as pool:
        assert use(server, pool, READS["a select"]) is None, "recycling off, yet an unchanged copy was kept"
        assert use(server, pool, ROW_CHANGES["insert"]) is None
        tally = pool.tally()
        assert (tally.reused, tally.reset, tally.dropped, tally.off) == (0, 0, 2, SWITCHED_OFF)


def test_a_prepared_transaction_gets_the_copy_dropped_and_rolled_back(server: Server, pool: Any) -> None:
    """PREPARE TRANSACTION leaves no block the WAL check would see, and holds the copy against
    DROP DATABASE: the pool rolls it back, then drops the copy."""
    name, conn = pool.acquire()
    oid = server.oid(name)
    with conn.cursor() as cur:
        cur.execute("SELECT 1")
        cur.execute("PREPARE TRANSACTION 'left by a test'")
    pool.release(name, conn)
    assert returned(server, pool, oid) is None, "a copy held by a prepared transaction was kept"
    assert server.query("SELECT gid FROM pg_prepared_xacts") == []
    assert pool.tally().dropped == 1


def test_copies_made_otherwise_than_file_copy_fail_loudly(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """Recycling's proof needs FILE_COPY copies (recycling.COPY_STRATEGY): a pool told to clone
    any other way refuses instead of recycling on a broken premise."""
    from provision.errors import ServerError
    from provision.testing import pool as pool_module

    monkeypatch.setattr(pool_module, "STRATEGY", "WAL_LOG")
    with pool_of(server) as pool, pytest.raises(ServerError, match="FILE_COPY"):
        pool.acquire(timeout=30)
