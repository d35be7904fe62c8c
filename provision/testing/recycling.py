"""Proves from the server's WAL what a test changed in a pool copy, and puts back what it can, so
the copy can be handed out again instead of dropped and cloned anew.

The invariant this rests on: pool copies are made with ``CREATE DATABASE ... STRATEGY FILE_COPY``
(COPY_STRATEGY; pool.py passes it explicitly and check_copy_strategy() refuses any other).
FILE_COPY ends with a checkpoint, so every page of a new copy, its sequences' included, is older
than the redo point: the first change to any of them, a sequence's first nextval() included,
logs a record naming the copy. WAL_LOG (PostgreSQL 15+'s default) makes no such checkpoint, and
a nextval() on a copy made that way can log nothing, so a changed copy could pass for unchanged.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Literal

import psycopg2
from psycopg2 import sql

from ..errors import ServerError
from ..postgres import dbops
from ..postgres.dbops import Connection

# How pool copies must be made for the proof below to hold (see the module docstring).
COPY_STRATEGY = "FILE_COPY"

# Why the WAL is proof enough. Every change to a logged relation of a database writes a WAL
# record naming the database's OID in its block references: rows, indexes, catalogs (so DDL,
# temporary tables, TRUNCATE), large objects, and sequences. A copy's first nextval() always
# logs: on a fresh copy by the invariant above; after a reset, because setval() leaves no
# values logged ahead. What leaves no such record is checked apart:
# - unlogged relations: a pool whose template has one never recycles (pool.py);
# - the database's own row and the shared catalogs that point at it (ALTER DATABASE ... SET,
#   COMMENT ON DATABASE, GRANT ... ON DATABASE, subscriptions): compared below;
# - a prepared transaction left on the copy (its PREPARE record names no block): checked below.
# Anything unexplained (a session still connected, a failed query, more WAL than it is worth
# reading) counts as a change, and the copy is dropped as before.
#
# The same records say which relations changed. When they are all plain tables (with their
# indexes and TOAST) and sequences of the template, and nothing else (no catalog: no DDL,
# no TRUNCATE, no ANALYZE), reset() puts them back: tables the template leaves empty are
# emptied; the others (and those whose foreign keys point at them) are truncated and reloaded
# from the rows the template holds (captured once, by capture()), frozen as the template's
# are; sequences are set back. That is less work than a clone and a drop, which cost per file
# of the database (about 15 ms of server CPU for ChatBI's 406 files), while a reset costs per
# changed table and row. A reset runs with session_replication_role = replica, which silences
# ordinary triggers and rules but not those enabled ALWAYS or REPLICA: a template with one of
# those on a table a reset could touch is never reset (capture() refuses it), since they would
# write rows (and advance sequences) that a fresh copy never has.

# Reading more WAL than this costs more than the clone it would save.
MAX_WAL_BYTES = 64 * 1024 * 1024
# A template with more table data than this is not captured: its copies are dropped when changed.
MAX_PRISTINE_BYTES = 16 * 1024 * 1024
# A test that wrote more WAL than this gets its copy dropped rather than put back: emptying a
# table costs in proportion to the rows deleted: 2 MiB of WAL (about 6,000 rows) about 8 ms of
# server CPU, 3.5 MiB about 15 ms, as much as a clone and a drop.
MAX_RESET_WAL_BYTES = 2 * 1024 * 1024
# How long a session the pool does not know of may take to go before the copy counts as left
# open (dropped): a connection closed by the test's own code, through the copy's URL, is gone
# within a few milliseconds; an engine that was not disposed keeps its connections open.
STRANGER_GRACE_SECONDS = 0.1
MIN_SERVER_VERSION = 160000  # pg_walinspect's pg_get_wal_block_info

# The parts of a database's pg_database row that a test could change (name and OID aside).
_ROW = (
    "row(d.datdba, d.encoding, d.datistemplate, d.datallowconn, d.datconnlimit, d.dattablespace,"
    " d.datcollate, d.datctype, d.datacl)::text"
)
# One query for the verdict: WAL touching the database between two LSNs, its row, and how
# often the shared catalogs name it. Parameters: start, end, then the OID.
_VERDICT = (
    "WITH db AS (SELECT %s::pg_lsn AS start, %s::pg_lsn AS stop, %s::oid AS oid) SELECT"
    " (SELECT array_agg(DISTINCT ARRAY[w.reltablespace, w.relfilenode])"
    " FROM db, pg_get_wal_block_info(db.start, db.stop, false) w WHERE w.reldatabase = db.oid),"
    f" (SELECT {_ROW} FROM db, pg_database d WHERE d.oid = db.oid),"
    " (SELECT count(*) FROM db, pg_db_role_setting s WHERE s.setdatabase = db.oid)"
    " + (SELECT count(*) FROM db, pg_shdescription c WHERE c.objoid = db.oid AND c.classoid = 'pg_database'::regclass)"
    " + (SELECT count(*) FROM db, pg_shseclabel l WHERE l.objoid = db.oid AND l.classoid = 'pg_database'::regclass)"
    " + (SELECT count(*) FROM db, pg_subscription u WHERE u.subdbid = db.oid)"
    " + (SELECT count(*) FROM db, pg_replication_slots r WHERE r.datoid = db.oid)"
)


# In the copy: each relation the WAL named (tablespace, filenode), as the table or sequence
# that owns it (an index's table, a TOAST table's or TOAST index's table); NULL if unknown.
_OWNERS = (
    "WITH f AS (SELECT pg_filenode_relation(u.spc, u.node)::oid AS rel"
    " FROM unnest(%s::oid[], %s::oid[]) AS u(spc, node)),"
    " b AS (SELECT f.rel, COALESCE(i.indrelid, f.rel) AS base FROM f LEFT JOIN pg_index i ON i.indexrelid = f.rel)"
    " SELECT b.rel, COALESCE(t.oid, b.base) FROM b LEFT JOIN pg_class t ON t.reltoastrelid = b.base"
)
# Tables whose foreign keys lead to these, directly or not: TRUNCATE must take them along.
_REFERRERS = (
    "WITH RECURSIVE refs(rel) AS (SELECT unnest(%s::oid[]) UNION"
    " SELECT c.conrelid FROM pg_constraint c JOIN refs ON c.confrelid = refs.rel WHERE c.contype = 'f')"
    " SELECT rel FROM refs"
)
# What capture() keeps: permanent plain tables and sequences outside the system schemas. A
# partition, a table with children or parents, and everything else are left out, so a change
# to them is not reset but dropped.
_CAPTURED = (
    "SELECT c.oid, n.nspname, c.relname, c.relkind, pg_table_size(c.oid) FROM pg_class c"
    " JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE c.relkind IN ('r', 'S') AND c.relpersistence = 'p' AND NOT c.relispartition AND NOT c.relhassubclass"
    " AND NOT EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = c.oid)"
    " AND n.nspname <> 'information_schema' AND left(n.nspname, 3) <> 'pg_'"
)
# Of these tables, the triggers and rules that session_replication_role = replica leaves on
# (enabled ALWAYS or REPLICA; internal ones too: a foreign key's action enabled ALWAYS would
# cascade), by name. Parameter: the tables' OIDs.
_FIRING = (
    "SELECT format('trigger %%I on %%s', t.tgname, t.tgrelid::regclass) FROM pg_trigger t"
    " WHERE t.tgrelid = ANY (%s::oid[]) AND t.tgenabled IN ('A', 'R')"
    " UNION ALL SELECT format('rule %%I on %%s', r.rulename, r.ev_class::regclass) FROM pg_rewrite r"
    " WHERE r.ev_class = ANY (%s::oid[]) AND r.ev_enabled IN ('A', 'R')"
    " ORDER BY 1"
)


@dataclass(frozen=True)
class Baseline:
    """A copy as it was handed out: its OID, the WAL position from which changes count, its row."""

    oid: int
    lsn: str
    row: str


Kind = Literal["reuse", "reset", "drop"]


@dataclass(frozen=True)
class Outcome:
    """What becomes of a copy a test gave back, and why: `reuse` it as it is (from `baseline`),
    `reset` the relations in `touched` (tablespace, filenode) and then reuse it, or `drop` it.
    `name` is the copy's name now (reclaim() renames it)."""

    kind: Kind
    name: str
    reason: str
    baseline: Baseline | None = None
    touched: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        # Each kind carries exactly what its next step needs.
        if (self.kind == "reuse") != (self.baseline is not None) or (self.kind == "reset") != bool(self.touched):
            raise ValueError(f"an outcome {self.kind!r} with baseline={self.baseline} and touched={self.touched}")

    @classmethod
    def reuse(cls, name: str, baseline: Baseline) -> Outcome:
        return cls("reuse", name, "unchanged", baseline=baseline)

    @classmethod
    def reset(cls, name: str, touched: tuple[tuple[int, int], ...]) -> Outcome:
        return cls("reset", name, "rows or sequences changed", touched=touched)

    @classmethod
    def drop(cls, name: str, reason: str) -> Outcome:
        return cls("drop", name, reason)


@dataclass(frozen=True)
class Table:
    schema: str
    name: str
    rows: int
    data: bytes = field(repr=False)  # binary COPY

    @property
    def identifier(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)


@dataclass(frozen=True)
class Pristine:
    """A template's contents as every fresh copy holds them: rows of its tables, state of its
    sequences, and the files of its system catalogs (the same in every copy: a copy is made
    file by file, and a reset never rewrites a catalog)."""

    tables: Mapping[int, Table]
    sequences: Mapping[int, tuple[int, bool]]  # last_value, is_called
    catalog_files: frozenset[int] = frozenset()

    def could_reset(self, touched: tuple[tuple[int, int], ...]) -> bool:
        """False when the WAL shows a catalog changed (DDL and the like): no need to look closer."""
        return not any(node in self.catalog_files for _, node in touched)


def enable(conn: Connection) -> None:
    """Install pg_walinspect in the maintenance database of provision's own test server, where
    it harms nothing; a server without it (older than 16, or not ours) just does not recycle."""
    if conn.server_version >= MIN_SERVER_VERSION:
        with contextlib.suppress(psycopg2.Error):
            dbops.execute(conn, "CREATE EXTENSION IF NOT EXISTS pg_walinspect")


UNAVAILABLE = "needs PostgreSQL 16+ with pg_walinspect"


def unavailable(conn: Connection) -> str | None:
    """Why recycling cannot run on the server of `conn` (to the maintenance database), or None
    when it can read the WAL's block references."""
    if conn.server_version < MIN_SERVER_VERSION:
        return UNAVAILABLE
    try:
        if not dbops.execute(conn, "SELECT 1 FROM pg_extension WHERE extname = 'pg_walinspect'"):
            return UNAVAILABLE
        rows = dbops.execute(
            conn, "SELECT has_function_privilege('pg_get_wal_block_info(pg_lsn, pg_lsn, boolean)', 'EXECUTE')"
        )
    except psycopg2.Error:  # installed in a schema off the search_path, say: then not for us
        return UNAVAILABLE
    return None if rows[0][0] else "needs the right to run pg_walinspect's pg_get_wal_block_info"


def check_copy_strategy(strategy: str | None) -> None:
    """Fail loudly if pool copies are to be made without COPY_STRATEGY: recycling would then
    take some changed copies for unchanged ones (see the module docstring)."""
    if strategy != COPY_STRATEGY:  # a change to provision itself, not a user's mistake
        raise AssertionError(
            f"pool copies must be made with STRATEGY {COPY_STRATEGY} for recycling to be sound, not {strategy}"
        )


def has_unlogged_relations(conn: Connection) -> bool:
    """Whether the database `conn` is connected to holds a relation whose writes skip the WAL."""
    return bool(dbops.execute(conn, "SELECT EXISTS (SELECT 1 FROM pg_class WHERE relpersistence = 'u')")[0][0])


def baseline(conn: Connection, name: str) -> Baseline:
    """Taken right after `name` was cloned, before anyone connects to it."""
    query = f"SELECT d.oid, pg_current_wal_insert_lsn()::text, {_ROW} FROM pg_database d WHERE d.datname = %s"
    oid, lsn, row = dbops.execute(conn, query, [name])[0]
    return Baseline(oid, lsn, row)


def _sessions_on(conn: Connection, oid: int) -> list[int]:
    return [r[0] for r in dbops.execute(conn, "SELECT pid FROM pg_stat_activity WHERE datid = %s", [oid])]


def reclaim(conn: Connection, name: str, new_name: str, since: Baseline, backend_pids: Collection[int]) -> Outcome:
    """Rename a returned copy to `new_name` and judge it from the WAL (see Outcome).

    `backend_pids` are the server processes of the test's own connections (the one opened in
    advance, and any the plugin opened for it through another driver), which may still be
    exiting; any other session on the copy means it may still change, so it counts as changed.
    """
    current = name
    try:
        pids = _sessions_on(conn, since.oid)
        deadline = time.monotonic() + STRANGER_GRACE_SECONDS
        while any(pid not in backend_pids for pid in pids) and time.monotonic() < deadline:
            # A connection the test opened itself through the copy's URL (SQLAlchemy, asyncpg)
            # and closed may still be exiting: a moment, then it is gone or counts as left open.
            time.sleep(0.005)
            pids = _sessions_on(conn, since.oid)
        if any(pid not in backend_pids for pid in pids):
            return Outcome.drop(current, "a session is still connected")
        if dbops.execute(conn, "SELECT 1 FROM pg_prepared_xacts WHERE database = %s", [name]):
            return Outcome.drop(current, "a prepared transaction holds it")
        if pids:
            # The test closed them; wait (up to 2 s each) until their server processes have gone.
            dbops.execute(
                conn,
                "SELECT pg_terminate_backend(pid, 2000) FROM pg_stat_activity WHERE pid = ANY(%s) AND datid = %s",
                [sorted(pids), since.oid],
            )
        # The rename fails if anyone connected meanwhile, and later connections to the old name
        # fail too. Its synchronous commit flushes the WAL, so the test's last records can be read.
        conn.autocommit = False
        try:
            dbops.execute(conn, "SET LOCAL synchronous_commit = on")
            dbops.rename_database(conn, name, new_name)
            conn.commit()
            current = new_name
        finally:
            conn.rollback()
            conn.autocommit = True
        (end, distance) = dbops.execute(
            conn,
            "SELECT pg_current_wal_flush_lsn()::text, pg_wal_lsn_diff(pg_current_wal_flush_lsn(), %s::pg_lsn)",
            [since.lsn],
        )[0]
        if not 0 < distance <= MAX_WAL_BYTES:
            return Outcome.drop(current, "too much WAL to read")
        touched, row, mentions = dbops.execute(conn, _VERDICT, [since.lsn, end, since.oid])[0]
    except (psycopg2.Error, ServerError) as exc:
        return Outcome.drop(current, f"could not be judged: {str(exc).strip()}")
    if row != since.row or mentions:
        return Outcome.drop(current, "the database itself was changed")
    if touched:
        if distance > MAX_RESET_WAL_BYTES:
            return Outcome.drop(current, "too many rows changed to put back")
        return Outcome.reset(current, tuple((int(spc), int(node)) for spc, node in touched))
    return Outcome.reuse(current, Baseline(since.oid, end, since.row))


def capture(conn: Connection) -> Pristine | str:
    """Read what a fresh copy (connected by `conn`) holds, for reset(); or say why its changed
    copies cannot be put back (too large, unreadable, or triggers or rules a reset would fire).
    Leaves `conn` outside any transaction."""
    try:
        listed = dbops.execute(conn, _CAPTURED)
        if sum(size for _, _, _, kind, size in listed if kind == "r") > MAX_PRISTINE_BYTES:
            return f"its tables hold over {MAX_PRISTINE_BYTES // 2**20} MiB"
        plain = [oid for oid, _, _, kind, _ in listed if kind == "r"]
        firing = dbops.execute(conn, _FIRING, [plain, plain])
        if firing:
            return "it has triggers or rules that fire during a reset: " + ", ".join(r[0] for r in firing)
        tables: dict[int, Table] = {}
        sequences: dict[int, tuple[int, bool]] = {}
        with conn.cursor() as cur:
            for oid, schema, name, kind, _ in listed:
                if kind == "S":
                    cur.execute(sql.SQL("SELECT last_value, is_called FROM {}").format(sql.Identifier(schema, name)))
                    last_value, is_called = cur.fetchone() or (1, False)
                    sequences[oid] = (last_value, is_called)
                else:
                    buffer = io.BytesIO()
                    copy = sql.SQL("COPY {} TO STDOUT (FORMAT binary)").format(sql.Identifier(schema, name))
                    cur.copy_expert(copy.as_string(conn), buffer)
                    tables[oid] = Table(schema, name, cur.rowcount, buffer.getvalue())
        catalog = dbops.execute(  # 16384 is FirstNormalObjectId: below it, what initdb made
            conn,
            "SELECT pg_relation_filenode(oid) FROM pg_class WHERE oid < 16384 AND pg_relation_filenode(oid) <> 0",
        )
        return Pristine(tables, sequences, frozenset(int(node) for (node,) in catalog))
    except psycopg2.Error as exc:
        return f"its tables could not be read: {str(exc).strip()}"
    finally:
        with contextlib.suppress(psycopg2.Error):
            conn.rollback()


def reset(conn: Connection, pristine: Pristine, touched: tuple[tuple[int, int], ...]) -> bool:
    """Put back, on `conn` (connected to the copy, no one else is), the relations a test
    changed (reclaim's `touched`). False if any of them is not a captured table or sequence (a
    catalog: DDL and the like), nothing changed then, or if the reset fails: the caller then
    drops the copy.

    A table the template leaves empty is emptied with DELETE and VACUUM, which keeps its files;
    one with rows is truncated (with the tables whose foreign keys lead to it, as TRUNCATE
    requires) and reloaded, frozen as the template's rows are. All in one transaction; the
    VACUUMs, which cannot run in one, follow it, before the copy is handed out again."""
    try:
        conn.autocommit = False
        spaces, nodes = [spc for spc, _ in touched], [node for _, node in touched]
        owners = dbops.execute(conn, _OWNERS, [spaces, nodes])
        if any(rel is None or owner is None for rel, owner in owners):
            return False
        changed = {owner for _, owner in owners}
        if not changed <= pristine.tables.keys() | pristine.sequences.keys():
            return False
        sequences = changed & pristine.sequences.keys()
        refill = {t for t in changed - sequences if pristine.tables[t].rows}
        truncated = set()
        if refill:
            truncated = {rel for (rel,) in dbops.execute(conn, _REFERRERS, [sorted(refill)])}
        if not truncated <= pristine.tables.keys():
            return False
        emptied = sorted(changed - sequences - truncated)
        # Rows go back as they were, triggers and foreign-key checks aside (a superuser's
        # setting; on a server where provision is not one, the reset fails and the copy is dropped).
        dbops.execute(conn, "SET LOCAL session_replication_role = replica")
        dbops.execute(conn, "SET LOCAL lock_timeout = '2s'")
        if truncated:
            dbops.execute(conn, sql.SQL("TRUNCATE ONLY {}").format(_names(pristine, sorted(truncated))))
        with conn.cursor() as cur:
            for oid in sorted(truncated):
                table = pristine.tables[oid]
                if table.rows:
                    # FREEZE, as the template's rows are: a reader then has no hint bits to set.
                    copy = sql.SQL("COPY {} FROM STDIN (FORMAT binary, FREEZE)").format(table.identifier)
                    cur.copy_expert(copy.as_string(conn), io.BytesIO(table.data))
            for oid in emptied:
                cur.execute(sql.SQL("DELETE FROM ONLY {}").format(_names(pristine, [oid])))
            for oid in sorted(sequences):
                last_value, is_called = pristine.sequences[oid]
                cur.execute("SELECT setval(%s::regclass, %s, %s)", [oid, last_value, is_called])
        conn.commit()
        conn.autocommit = True
        if emptied or truncated:
            # The deleted rows' space back, so no later reader prunes them (which writes WAL);
            # and each table's size in pg_class as the template's VACUUM FREEZE left it, so the
            # planner sees what it sees on a fresh copy.
            dbops.execute(conn, sql.SQL("VACUUM (FREEZE) {}").format(_names(pristine, emptied + sorted(truncated))))
        if truncated:
            # TRUNCATE left old pg_class rows behind: the same, for a catalog (a copy whose
            # catalog a reader pruned would be dropped next time).
            dbops.execute(conn, "VACUUM pg_class")
        return True
    except psycopg2.Error:
        return False
    finally:
        with contextlib.suppress(psycopg2.Error):
            conn.rollback()
            conn.autocommit = False


def _names(pristine: Pristine, oids: list[int]) -> sql.Composable:
    return sql.SQL(", ").join(pristine.tables[t].identifier for t in oids)
