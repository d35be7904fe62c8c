"""Proves from the server's WAL that a pool copy came back unchanged, so it can be handed out again."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import psycopg2

from . import dbops
from .dbops import Connection
from .errors import ServerError

# Why the WAL is proof enough. Every change to a logged relation of a database writes a WAL
# record naming the database's OID in its block references: rows, indexes, catalogs (so DDL,
# temporary tables, TRUNCATE), large objects, and sequences. A copy's first nextval() always
# logs, because the copy was made with FILE_COPY, which ends with a checkpoint, so the
# sequence page is older than the redo point. What leaves no such record is checked apart:
# - unlogged relations: a pool whose template has one never recycles (pool.py);
# - the database's own row and the shared catalogs that point at it (ALTER DATABASE ... SET,
#   COMMENT ON DATABASE, GRANT ... ON DATABASE, subscriptions): compared below.
# Anything unexplained (a session still connected, a failed query, more WAL than it is worth
# reading) counts as a change, and the copy is dropped as before.

# Reading more WAL than this costs more than the clone it would save.
MAX_WAL_BYTES = 64 * 1024 * 1024
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
    " EXISTS (SELECT 1 FROM db, pg_get_wal_block_info(db.start, db.stop, false) w WHERE w.reldatabase = db.oid),"
    f" (SELECT {_ROW} FROM db, pg_database d WHERE d.oid = db.oid),"
    " (SELECT count(*) FROM db, pg_db_role_setting s WHERE s.setdatabase = db.oid)"
    " + (SELECT count(*) FROM db, pg_shdescription c WHERE c.objoid = db.oid AND c.classoid = 'pg_database'::regclass)"
    " + (SELECT count(*) FROM db, pg_shseclabel l WHERE l.objoid = db.oid AND l.classoid = 'pg_database'::regclass)"
    " + (SELECT count(*) FROM db, pg_subscription u WHERE u.subdbid = db.oid)"
    " + (SELECT count(*) FROM db, pg_replication_slots r WHERE r.datoid = db.oid)"
)


@dataclass(frozen=True)
class Baseline:
    """A copy as it was handed out: its OID, the WAL position from which changes count, its row."""

    oid: int
    lsn: str
    row: str


def enable(conn: Connection) -> None:
    """Install pg_walinspect in the maintenance database of provision's own test server, where
    it harms nothing; a server without it (older than 16, or not ours) just does not recycle."""
    if conn.server_version >= MIN_SERVER_VERSION:
        with contextlib.suppress(psycopg2.Error):
            dbops.execute(conn, "CREATE EXTENSION IF NOT EXISTS pg_walinspect")


def available(conn: Connection) -> bool:
    """Whether `conn` (to the maintenance database) can read the WAL's block references."""
    if conn.server_version < MIN_SERVER_VERSION:
        return False
    try:
        if not dbops.execute(conn, "SELECT 1 FROM pg_extension WHERE extname = 'pg_walinspect'"):
            return False
        rows = dbops.execute(
            conn, "SELECT has_function_privilege('pg_get_wal_block_info(pg_lsn, pg_lsn, boolean)', 'EXECUTE')"
        )
    except psycopg2.Error:  # installed in a schema off the search_path, say: then not for us
        return False
    return bool(rows[0][0])


def has_unlogged_relations(conn: Connection) -> bool:
    """Whether the database `conn` is connected to holds a relation whose writes skip the WAL."""
    return bool(dbops.execute(conn, "SELECT EXISTS (SELECT 1 FROM pg_class WHERE relpersistence = 'u')")[0][0])


def baseline(conn: Connection, name: str) -> Baseline:
    """Taken right after `name` was cloned, before anyone connects to it."""
    query = f"SELECT d.oid, pg_current_wal_insert_lsn()::text, {_ROW} FROM pg_database d WHERE d.datname = %s"
    oid, lsn, row = dbops.execute(conn, query, [name])[0]
    return Baseline(oid, lsn, row)


def reclaim(
    conn: Connection, name: str, new_name: str, since: Baseline, backend_pid: int | None
) -> tuple[str, Baseline | None]:
    """Rename an unchanged copy to `new_name`: returns the copy's name now, and its new baseline
    (None if it changed or nothing could be proved; the caller then drops it).

    `backend_pid` is the server process of the test's own connection, which may still be
    exiting; any other session on the copy means it may still change, so it counts as changed.
    """
    current = name
    try:
        pids = [r[0] for r in dbops.execute(conn, "SELECT pid FROM pg_stat_activity WHERE datid = %s", [since.oid])]
        if any(pid != backend_pid for pid in pids):
            return current, None
        if pids:
            # The test closed it; wait (up to 2 s) until its server process has gone.
            dbops.execute(
                conn,
                "SELECT pg_terminate_backend(pid, 2000) FROM pg_stat_activity WHERE pid = %s AND datid = %s",
                [backend_pid, since.oid],
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
            return current, None
        touched, row, mentions = dbops.execute(conn, _VERDICT, [since.lsn, end, since.oid])[0]
    except (psycopg2.Error, ServerError):
        return current, None
    if touched or row != since.row or mentions:
        return current, None
    return current, Baseline(since.oid, end, since.row)
