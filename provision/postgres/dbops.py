"""Database operations over psycopg2: connect, create, clone, rename, drop, lock, describe."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions
from psycopg2 import sql

from ..endpoint import Endpoint
from ..errors import AuthFailed, LockBusy, ServerError

Connection = psycopg2.extensions.connection

MAINTENANCE_DB = "postgres"
# Advisory lock keys: (namespace, 0) serialises provisioners server-wide; (namespace + 1, n)
# marks a live test session n, so its pool copies are never mistaken for a crashed run's.
LOCK_NAMESPACE = 0x70726F76  # "prov"
LOCK_WAIT_SECONDS = 600


class ExtensionUnavailable(ServerError):
    """The config asks for an extension the server's image does not have."""


class ServerUnavailable(ServerError):
    """The server did not accept a connection (yet); worth retrying while waiting for readiness."""


def connect(
    ep: Endpoint,
    dbname: str = MAINTENANCE_DB,
    timeout: int = 5,
    application_name: str = "provision",
    connection_factory: type[Connection] | None = None,
) -> Connection:
    """An autocommit connection; AuthFailed for refused credentials, ServerUnavailable for the rest."""
    try:
        conn = psycopg2.connect(
            host=ep.host,
            port=ep.port,
            user=ep.user,
            password=ep.password,
            dbname=dbname,
            connect_timeout=timeout,
            application_name=application_name,
            connection_factory=connection_factory,
        )
    except psycopg2.OperationalError as exc:
        text = str(exc).strip()
        if (
            "password authentication failed" in text
            or "no pg_hba.conf entry" in text
            or ("role" in text and "does not exist" in text)
        ):
            raise AuthFailed(
                f"the server at {ep.host}:{ep.port} refused user {ep.user!r}: {_first_line(text)}"
            ) from exc
        if "database" in text and "does not exist" in text:
            raise ServerError(f"database {dbname} does not exist on {ep.host}:{ep.port}") from exc
        # Only a configured database is ever sealed (build/seal.py); a maintenance database that
        # refuses logins is a server still coming up, and readiness retries it.
        if "is not currently accepting connections" in text and dbname != MAINTENANCE_DB:
            raise ServerError(
                f"database {dbname} on {ep.host}:{ep.port} is not accepting connections",
                hint="provision closes its databases to new connections while an app's migrations or seed run "
                "against a private copy; a run that was killed leaves them closed until the next provision run "
                "that writes (`provision fresh`, `check`, `snapshot ...`) reopens them",
            ) from exc
        raise ServerUnavailable(f"cannot connect to {ep.host}:{ep.port}: {_first_line(text)}") from exc
    conn.autocommit = True
    return conn


@contextlib.contextmanager
def connection(ep: Endpoint, dbname: str = MAINTENANCE_DB, application_name: str = "provision") -> Iterator[Connection]:
    conn = connect(ep, dbname, application_name=application_name)
    try:
        yield conn
    finally:
        conn.close()


@contextlib.contextmanager
def server_errors(action: str) -> Iterator[None]:
    """Convert psycopg2 errors raised while doing `action` into ServerError."""
    try:
        yield
    except psycopg2.Error as exc:
        detail = (exc.pgerror or str(exc)).strip()
        raise ServerError(f"{action} failed: {_first_line(detail)}") from exc


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def execute(
    conn: Connection, query: sql.Composable | str, params: Sequence[Any] | None = None
) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchall() if cur.description else []


# ---------------------------------------------------------------- names


# ---------------------------------------------------------------- server facts


@dataclass(frozen=True)
class DatabaseRow:
    name: str
    is_template: bool
    allow_connections: bool
    comment: str | None


def list_databases(conn: Connection) -> dict[str, DatabaseRow]:
    rows = execute(
        conn,
        "SELECT datname, datistemplate, datallowconn, shobj_description(oid, 'pg_database') FROM pg_database",
    )
    return {r[0]: DatabaseRow(r[0], r[1], r[2], r[3]) for r in rows}


# ---------------------------------------------------------------- DDL on databases


def create_database(conn: Connection, name: str, template: str | None = None) -> None:
    query: sql.Composable = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template:
        query = sql.SQL("{} TEMPLATE {}").format(query, sql.Identifier(template))
        query = _with_strategy(conn, query, template, None)
    with server_errors(f"creating database {name}"):
        execute(conn, query)


# Above this size FILE_COPY clones faster than WAL_LOG (PostgreSQL 15+'s default), which writes
# every block to the WAL: 0.6-0.75 s against 0.7-0.95 s for a 245 MB database on these machines.
FILE_COPY_ABOVE_BYTES = 64 * 1024 * 1024


def copy_database(conn: Connection, name: str, source: str, strategy: str | None = None) -> None:
    """CREATE DATABASE name TEMPLATE source, raising psycopg2's own errors: ObjectInUse means a
    session is connected to `source`, which the caller may end and retry. Without a `strategy`
    (WAL_LOG or FILE_COPY, PostgreSQL 15+), a large source, or any source on a server that clones
    files (copy-on-write), is copied file by file."""
    query = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(source))
    execute(conn, _with_strategy(conn, query, source, strategy))


def _with_strategy(conn: Connection, query: sql.Composable, source: str, strategy: str | None) -> sql.Composable:
    if conn.server_version >= 150000:
        if strategy is None and (clones_files(conn) or database_size(conn, source) > FILE_COPY_ABOVE_BYTES):
            # With file_copy_method = clone, FILE_COPY costs about the same for any size.
            strategy = "FILE_COPY"
        if strategy:
            query = sql.SQL("{} STRATEGY {}").format(query, sql.SQL(strategy))
    return query


def file_copy_method(conn: Connection) -> str | None:
    """PostgreSQL 18+'s file_copy_method for this session ('copy' or 'clone'); None before 18."""
    if conn.server_version < 180000:
        return None
    return str(execute(conn, "SELECT current_setting('file_copy_method')")[0][0])


def copy_on_write_state(conn: Connection) -> str:
    """How this server copies databases, in a phrase for `status`."""
    method = file_copy_method(conn)
    if method is None:
        return f"off: PostgreSQL {conn.server_version // 10000} copies files (18+ can clone them)"
    if method == "clone":
        return "on: file_copy_method = clone (copies share the template's blocks until written)"
    return "off: file_copy_method = copy (the data directory has no reflinks; see `data_dir:`)"


def clones_files(conn: Connection) -> bool:
    """Whether STRATEGY FILE_COPY clones files (copy-on-write) on this server: provision sets
    file_copy_method = clone only where it found the data directory on a reflink filesystem."""
    return file_copy_method(conn) == "clone"


def create_extensions(conn: Connection, database: str, names: Sequence[str]) -> None:
    """CREATE EXTENSION IF NOT EXISTS each of `names` (with what they require), in `conn`'s database."""
    missing = missing_extensions(conn, names)
    if missing:
        raise ExtensionUnavailable(
            f"{database}: the server has no extension {', '.join(missing)} (PostgreSQL "
            f"{conn.server_version // 10000}); the config asks for it under `extensions:`",
            hint="use an image that has it, e.g. `compose/build-offline-image.sh --tag postgres:18-pgvector-postgis "
            "--extensions pgvector,postgis` and `image: postgres:18-pgvector-postgis` (or the official "
            "pgvector/pgvector, postgis/postgis images); `provision doctor` lists what is missing",
        )
    for name in names:
        with server_errors(f"{database}: creating extension {name}"):
            execute(conn, sql.SQL("CREATE EXTENSION IF NOT EXISTS {} CASCADE").format(sql.Identifier(name)))


# What PID 1 is called while an image's entrypoint script is still running its init phase.
_ENTRYPOINT_SHELLS = frozenset({"bash", "sh", "dash", "docker-entrypoi"})


def still_initialising(conn: Connection) -> str | None:
    """Why the server `conn` reached is an image's temporary init-phase server, or None when it is
    (or may be) the one that stays.

    The official image's entrypoint ends with `exec postgres`, so the server that stays is PID 1
    of the container; while init scripts run, PID 1 is the entrypoint's shell and the server is
    its child. Only that case is refused: a server under tini or a supervisor, or a login without
    the right to read these files, is taken as ready."""
    try:
        rows = execute(
            conn,
            "SELECT split_part(pg_read_file('postmaster.pid'), E'\\n', 1), pg_read_file('/proc/1/comm')",
        )
    except psycopg2.Error:
        return None  # not a superuser, or not a container: nothing to learn here
    pid, comm = str(rows[0][0]).strip(), str(rows[0][1]).strip()
    if pid == "1" or comm not in _ENTRYPOINT_SHELLS:
        return None
    return f"the server answering (PID {pid}) is the image's init-phase server: PID 1 is still its entrypoint ({comm})"


def missing_extensions(conn: Connection, names: Sequence[str]) -> list[str]:
    """Which of `names` the server cannot create (not in pg_available_extensions)."""
    available = {row[0] for row in execute(conn, "SELECT name FROM pg_available_extensions")}
    return [name for name in names if name not in available]


def allow_connections(conn: Connection, name: str, allow: bool) -> None:
    """ALTER DATABASE name WITH ALLOW_CONNECTIONS: new connections refused (or allowed again); open ones stay."""
    query = sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
        sql.Identifier(name), sql.SQL("true" if allow else "false")
    )
    with server_errors(f"{'reopening' if allow else 'closing'} database {name} to new connections"):
        execute(conn, query)


def drop_database(conn: Connection, name: str) -> None:
    """Drop a database, template or not, closing its sessions."""
    with server_errors(f"dropping database {name}"):
        if execute(conn, "SELECT datistemplate FROM pg_database WHERE datname = %s", [name]) == [(True,)]:
            execute(conn, sql.SQL("ALTER DATABASE {} IS_TEMPLATE false").format(sql.Identifier(name)))
        execute(conn, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def terminate_sessions(conn: Connection, name: str) -> int:
    """End every other session on `name`, waiting up to 5 s for each to go."""
    rows = execute(
        conn,
        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
        [name],
    )
    return len(rows)


def terminate_application(conn: Connection, application_name: str) -> int:
    """End every other session with this application_name, waiting up to 5 s for each."""
    rows = execute(
        conn,
        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
        "WHERE application_name = %s AND pid <> pg_backend_pid()",
        [application_name],
    )
    return len(rows)


def rename_database(conn: Connection, name: str, new_name: str) -> None:
    with server_errors(f"renaming database {name}"):
        execute(conn, sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(name), sql.Identifier(new_name)))


@dataclass(frozen=True)
class Swap:
    """Put `new` in place as `target`, moving an existing `target` aside to `old`."""

    target: str
    new: str
    old: str | None
    comment: str


ObjectInUse = psycopg2.errors.ObjectInUse


def swap_in(conn: Connection, swaps: Sequence[Swap], make_template: bool = False) -> None:
    """Do all the swaps in one transaction, commenting each target with its provenance.

    One transaction, so a crash or kill at any instant leaves either all the old databases
    or all the new ones in place, never a missing one. Raises ObjectInUse when a session
    reconnected to a target after its sessions were terminated.
    """
    conn.autocommit = False
    try:
        with conn.cursor() as cur:
            for swap in swaps:
                target = sql.Identifier(swap.target)
                if swap.old is not None:
                    cur.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(target, sql.Identifier(swap.old)))
                cur.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(swap.new), target))
                cur.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(target, sql.Literal(swap.comment)))
                if make_template:
                    cur.execute(sql.SQL("ALTER DATABASE {} IS_TEMPLATE true ALLOW_CONNECTIONS false").format(target))
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    finally:
        conn.autocommit = True


@dataclass(frozen=True)
class Rename:
    """Rename database `name` to `new_name`, and comment it with `comment` when one is given."""

    name: str
    new_name: str
    comment: str | None = None


def rename_all(conn: Connection, renames: Sequence[Rename]) -> None:
    """Do the renames in order, in one transaction: a crash or kill at any instant leaves either
    none or all of them done. Raises ObjectInUse when a session is connected to one of them."""
    conn.autocommit = False
    try:
        with conn.cursor() as cur:
            for step in renames:
                new = sql.Identifier(step.new_name)
                cur.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(step.name), new))
                if step.comment is not None:
                    cur.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(new, sql.Literal(step.comment)))
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    finally:
        conn.autocommit = True


def comment_on(conn: Connection, name: str, comment: str) -> None:
    with server_errors(f"recording the comment of {name}"):
        execute(conn, sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(name), sql.Literal(comment)))


# ---------------------------------------------------------------- locks


def lock_holder(conn: Connection, key: int) -> str | None:
    rows = execute(
        conn,
        "SELECT a.pid, a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.classid = %s AND l.objid = %s AND l.granted LIMIT 1",
        [LOCK_NAMESPACE, key],
    )
    return f"{rows[0][1] or 'a session'} (server pid {rows[0][0]})" if rows else None


def acquire_lock(conn: Connection, wait: bool, on_wait: Callable[[str], None] | None = None, key: int = 0) -> None:
    """Take the server-wide provisioner lock; it is released when `conn` closes, even on kill -9."""
    if execute(conn, "SELECT pg_try_advisory_lock(%s, %s)", [LOCK_NAMESPACE, key])[0][0]:
        return
    holder = lock_holder(conn, key) or "another provisioner"
    if not wait:
        raise LockBusy(f"another provisioner is working on this server: {holder}")
    if on_wait:
        on_wait(f"waiting for {holder} to finish")
    try:
        execute(conn, sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{LOCK_WAIT_SECONDS}s")))
        execute(conn, "SELECT pg_advisory_lock(%s, %s)", [LOCK_NAMESPACE, key])
    except psycopg2.errors.LockNotAvailable as exc:
        raise LockBusy(f"gave up after {LOCK_WAIT_SECONDS} s waiting for {holder}") from exc
    finally:
        execute(conn, "SET lock_timeout = 0")


def release_lock(conn: Connection, key: int = 0) -> None:
    with contextlib.suppress(psycopg2.Error):
        execute(conn, "SELECT pg_advisory_unlock(%s, %s)", [LOCK_NAMESPACE, key])


def try_session_lock(conn: Connection, token: int) -> bool:
    """Take the liveness lock of test session `token`; False when that session is still alive."""
    return bool(execute(conn, "SELECT pg_try_advisory_lock(%s, %s)", [LOCK_NAMESPACE + 1, token])[0][0])


def release_session_lock(conn: Connection, token: int) -> None:
    with contextlib.suppress(psycopg2.Error):
        execute(conn, "SELECT pg_advisory_unlock(%s, %s)", [LOCK_NAMESPACE + 1, token])


# ---------------------------------------------------------------- inside one database


def missing_tables(conn: Connection, expected: Sequence[str]) -> list[str]:
    if not expected:
        return []
    rows = execute(conn, "SELECT t FROM unnest(%s::text[]) AS t WHERE to_regclass(t) IS NULL", [list(expected)])
    return [r[0] for r in rows]


def table_count(conn: Connection) -> int:
    rows = execute(
        conn,
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
        "AND n.nspname NOT LIKE 'pg_toast%%'",
    )
    return int(rows[0][0])


def alembic_versions(conn: Connection) -> list[str] | None:
    if execute(conn, "SELECT to_regclass('alembic_version')") == [(None,)]:
        return None
    return [r[0] for r in execute(conn, "SELECT version_num FROM alembic_version ORDER BY 1")]


def database_size(conn: Connection, name: str) -> int:
    return int(execute(conn, "SELECT pg_database_size(%s)", [name])[0][0])
