"""Leases on a shared server: private copies of content-hashed templates, kept in a registry database with a TTL."""

from __future__ import annotations

import contextlib
import getpass
import os
import re
import secrets
import socket
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import psycopg2
import psycopg2.errors
from psycopg2 import sql

from ..endpoint import Endpoint
from ..errors import CapReached, ConfigError, LockBusy, ServerError, UnknownLease
from ..events import Event, EventFn, ignore
from ..names import derived_name, template_name
from ..postgres import dbops
from ..postgres.dbops import Connection
from . import pipeline
from .pipeline import BuildPlan, Server

REGISTRY_DB = "provision_registry"
APP = "provision lease"
# Advisory locks, all taken in the registry database: (REGISTRY_LOCK, 0) creates the schema and
# (REGISTRY_LOCK, 1) serialises every change to the registry (one short transaction each);
# (BUILD_LOCK, h) is held while the template for content hash h is built or evicted;
# (NAME_LOCK, n) while a named lease is looked up and (re)made.
REGISTRY_LOCK = dbops.LOCK_NAMESPACE + 2
BUILD_LOCK = dbops.LOCK_NAMESPACE + 3
NAME_LOCK = dbops.LOCK_NAMESPACE + 4
# (SPARE_LOCK, h): one client at a time makes spare copies of the template for hash h.
SPARE_LOCK = dbops.LOCK_NAMESPACE + 5
LOCK_WAIT_SECONDS = 600
COPY_KIND = "lease"
# Copies of a template made ahead, so that the next lease is a rename (a few ms) instead of a clone.
SPARE_KIND = "lspare"
_LEASE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")

SCHEMA = """
CREATE TABLE IF NOT EXISTS leases (
    name text PRIMARY KEY,
    database text NOT NULL,
    copy text NOT NULL UNIQUE,
    template text NOT NULL,
    hash text NOT NULL,
    owner_host text NOT NULL,
    owner_addr text,
    owner_pid integer NOT NULL,
    owner_user text NOT NULL,
    bytes bigint NOT NULL,
    created timestamptz NOT NULL DEFAULT clock_timestamp(),
    renewed timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS templates (
    template text PRIMARY KEY,
    database text NOT NULL,
    hash text NOT NULL,
    bytes bigint NOT NULL,
    built timestamptz NOT NULL DEFAULT clock_timestamp(),
    last_used timestamptz NOT NULL DEFAULT clock_timestamp()
);
"""

_LEASE_COLUMNS = (
    "name, database, copy, template, hash, owner_host, owner_addr, owner_pid, owner_user, bytes, "
    "to_char(created AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
    "to_char(renewed AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
    "to_char(expires AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), "
    "extract(epoch FROM expires - clock_timestamp())::float8"
)


@dataclass(frozen=True)
class Lease:
    """One lease: a private copy of `database` (the server's database `copy`) held until `expires`."""

    name: str
    database: str
    copy: str
    template: str
    content_hash: str
    owner_host: str
    owner_addr: str | None
    owner_pid: int
    owner_user: str
    bytes: int
    created: str
    renewed: str
    expires: str
    seconds_left: float

    @property
    def expired(self) -> bool:
        return self.seconds_left <= 0

    @property
    def owner(self) -> str:
        where = f"{self.owner_host} ({self.owner_addr})" if self.owner_addr else self.owner_host
        return f"{self.owner_user}@{where} pid {self.owner_pid}"


@dataclass(frozen=True)
class LeaseResult:
    """What `provision lease` got: the lease, a masked URL to its copy, and what it took."""

    lease: Lease
    action: Literal["new", "found", "refreshed"]
    built_template: bool
    from_spare: bool  # the copy was a spare made ahead (a rename), not a clone made now
    url: str
    host: str
    port: int
    user: str
    evicted: tuple[str, ...]
    dropped_expired: tuple[str, ...]
    seconds: float


@dataclass(frozen=True)
class TemplateUse:
    template: str
    database: str
    content_hash: str
    bytes: int
    leases: int
    last_used: str


@dataclass(frozen=True)
class LeaseList:
    leases: tuple[Lease, ...]
    templates: tuple[TemplateUse, ...]
    total_bytes: int
    max_bytes: int | None


@dataclass(frozen=True)
class GcResult:
    """What a collection dropped: expired leases' copies and copies no lease names (a killed release's)."""

    expired: tuple[str, ...]
    orphans: tuple[str, ...]


@dataclass(frozen=True)
class Leased:
    lease: Lease
    action: Literal["new", "found", "refreshed"]
    built_template: bool
    from_spare: bool
    evicted: tuple[str, ...]
    expired: tuple[str, ...]


@dataclass
class _Reservation:
    lease: Lease
    drop: list[str] = field(default_factory=list)  # copies and templates to drop once committed
    expired: list[str] = field(default_factory=list)  # copies of expired leases, and orphans
    evicted: list[str] = field(default_factory=list)
    unlock: list[int] = field(default_factory=list)  # build locks held on evicted templates' hashes


class _TemplateGone(Exception):
    """The template was evicted between finding it and reserving a copy of it: find or build it again."""


# ---------------------------------------------------------------- names and owners


def validate_name(name: str) -> str:
    if not _LEASE_NAME.fullmatch(name):
        raise ConfigError(
            f"invalid lease name {name!r}",
            hint="use 1 to 63 letters, digits, '.', '_' and '-', starting with a letter or digit (e.g. pr-1234)",
        )
    return name


def copy_name(database: str) -> str:
    return derived_name(database, COPY_KIND, secrets.token_hex(4))


def spare_prefix(database: str, content_hash: str) -> str:
    return derived_name(database, SPARE_KIND, content_hash[:12] + "_")


def spares_of(conn: Connection, database: str, content_hash: str) -> list[str]:
    rows = dbops.execute(
        conn,
        "SELECT datname FROM pg_database WHERE starts_with(datname, %s) ORDER BY oid",
        [spare_prefix(database, content_hash)],
    )
    return [r[0] for r in rows]


def _claim_spare(admin: Connection, database: str, content_hash: str, copy: str) -> bool:
    """Rename a spare copy of the template into `copy`; False when there is none left to take.

    A rename is atomic: of two clients renaming the same spare, one gets it and the other an error."""
    for spare in spares_of(admin, database, content_hash):
        try:
            dbops.execute(
                admin, sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(spare), sql.Identifier(copy))
            )
        except psycopg2.Error:
            continue  # taken by another client just now
        return True
    return False


def _owner() -> tuple[str, int, str]:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return socket.gethostname(), os.getpid(), user


def _key(text: str) -> int:
    """A text as an int4 advisory lock key."""
    return zlib.crc32(text.encode()) - 2**31


# ---------------------------------------------------------------- the registry


def connect_registry(ep: Endpoint, admin: Connection | None = None) -> Connection:
    """A connection to the registry database, creating it (and its tables) on first use."""
    try:
        reg = dbops.connect(ep, REGISTRY_DB, application_name=APP)
    except dbops.ServerUnavailable:
        raise
    except ServerError:
        # Not there yet: the first client on this server creates it (owned by its role).
        with contextlib.ExitStack() as stack:
            if admin is None:
                admin = stack.enter_context(dbops.connection(ep, application_name=APP))
            try:
                dbops.execute(admin, "CREATE DATABASE " + REGISTRY_DB)
            except (psycopg2.errors.DuplicateDatabase, psycopg2.errors.UniqueViolation):
                pass  # another client created it first
            except psycopg2.Error as exc:
                raise ServerError(
                    f"creating the lease registry database {REGISTRY_DB} failed: {str(exc).strip()}",
                    hint=f"the role needs CREATEDB, or create it once: CREATE DATABASE {REGISTRY_DB} OWNER <role>",
                ) from exc
        reg = dbops.connect(ep, REGISTRY_DB, application_name=APP)
    if dbops.execute(reg, "SELECT to_regclass('templates') IS NULL")[0][0]:
        with _transaction(reg, key=0), dbops.server_errors("creating the lease registry's tables"):
            dbops.execute(reg, SCHEMA)
    return reg


@contextlib.contextmanager
def _transaction(reg: Connection, key: int = 1) -> Iterator[None]:
    """One registry transaction under the registry lock: every change to the registry is one of these."""
    reg.autocommit = False
    try:
        dbops.execute(reg, "SELECT pg_advisory_xact_lock(%s, %s)", [REGISTRY_LOCK, key])
        yield
        reg.commit()
    except BaseException:
        with contextlib.suppress(psycopg2.Error):
            reg.rollback()
        raise
    finally:
        with contextlib.suppress(psycopg2.Error):
            reg.autocommit = True


def _leases(reg: Connection, where: str = "", params: Sequence[Any] = ()) -> list[Lease]:
    rows = dbops.execute(reg, f"SELECT {_LEASE_COLUMNS} FROM leases {where}", list(params))
    return [Lease(*row) for row in rows]


def _take_expired(reg: Connection) -> tuple[list[str], list[str]]:
    """In a registry transaction: forget expired leases, and find copies no lease names. Returns both, to drop."""
    expired = [r[0] for r in dbops.execute(reg, "DELETE FROM leases WHERE expires < clock_timestamp() RETURNING copy")]
    named = {r[0] for r in dbops.execute(reg, "SELECT copy FROM leases")}
    copies = dbops.execute(reg, "SELECT datname FROM pg_database WHERE datname LIKE %s", [f"%\\_\\_{COPY_KIND}\\_%"])
    orphans = [r[0] for r in copies if r[0] not in named and r[0] not in expired]
    return expired, orphans


def collect(reg: Connection, admin: Connection) -> GcResult:
    """Drop the copies of expired leases, and copies that no lease names (left by a client killed mid-release).

    A lease that is renewed in time is never taken: renewal and collection are both registry
    transactions, and the server's clock alone decides what has expired."""
    with _transaction(reg):
        expired, orphans = _take_expired(reg)
    for name in expired + orphans:
        dbops.drop_database(admin, name)
    return GcResult(tuple(expired), tuple(orphans))


# ---------------------------------------------------------------- templates


def _template_ready(reg: Connection, tpl: str) -> bool:
    """Built, sealed and registered (so not being evicted)."""
    rows = dbops.execute(
        reg,
        "SELECT d.datistemplate AND NOT d.datallowconn AND t.template IS NOT NULL "
        "FROM pg_database d LEFT JOIN templates t ON t.template = d.datname WHERE d.datname = %s",
        [tpl],
    )
    return bool(rows and rows[0][0])


@contextlib.contextmanager
def _advisory(conn: Connection, namespace: int, key: int, what: str, emit: EventFn) -> Iterator[None]:
    """A session advisory lock on `conn`, waited for (up to LOCK_WAIT_SECONDS) and released at the end."""
    if not dbops.execute(conn, "SELECT pg_try_advisory_lock(%s, %s)", [namespace, key])[0][0]:
        emit(Event("wait", f"waiting for another client {what}"))
        try:
            dbops.execute(conn, f"SET lock_timeout = '{LOCK_WAIT_SECONDS}s'")
            dbops.execute(conn, "SELECT pg_advisory_lock(%s, %s)", [namespace, key])
        except psycopg2.errors.LockNotAvailable as exc:
            raise LockBusy(f"gave up after {LOCK_WAIT_SECONDS} s waiting for another client {what}") from exc
        finally:
            dbops.execute(conn, "SET lock_timeout = 0")
    try:
        yield
    finally:
        with contextlib.suppress(psycopg2.Error):
            dbops.execute(conn, "SELECT pg_advisory_unlock(%s, %s)", [namespace, key])


def ensure_template(server: Server, reg: Connection, plan: BuildPlan, emit: EventFn) -> tuple[str, str, bool]:
    """The sealed template for the plan's current content: (name, content hash, whether this call built it).

    Built once per content hash, by whichever client gets there first, under the advisory lock
    keyed by the hash; the others wait on that lock and then find it built."""
    content_hash = plan.content_hash(server.server_version)
    tpl = template_name(plan.name, content_hash)
    if _template_ready(reg, tpl):
        return tpl, content_hash, False
    built = False
    with _advisory(reg, BUILD_LOCK, _key(content_hash), f"to build the template of {plan.name}", emit):
        if not _template_ready(reg, tpl):
            exists = dbops.execute(reg, "SELECT datistemplate FROM pg_database WHERE datname = %s", [tpl])
            if not exists or not exists[0][0]:
                # A `fresh` on the same server ends build sessions it takes for a dead run's: it
                # waits for this shared hold of the provisioner lock instead.
                with dbops.connection(server.endpoint, application_name=APP) as holder:
                    dbops.execute(holder, "SELECT pg_advisory_lock_shared(%s, 0)", [dbops.LOCK_NAMESPACE])
                    pipeline.ensure_template(server, plan, emit)  # sealed: IS_TEMPLATE, ALLOW_CONNECTIONS false
                built = True
            with _transaction(reg):
                dbops.execute(
                    reg,
                    "INSERT INTO templates (template, database, hash, bytes) VALUES (%s, %s, %s, pg_database_size(%s)) "
                    "ON CONFLICT (template) DO NOTHING",
                    [tpl, plan.name, content_hash, tpl],
                )
    return tpl, content_hash, built


# ---------------------------------------------------------------- reserving a copy


def _evict_for(reg: Connection, need: int, cap: int, keep: str, replacing: str | None, res: _Reservation) -> int:
    """In a registry transaction: evict unused templates, least recently used first, until `need` more
    bytes fit under `cap`. Returns the bytes in use afterwards (counting what is kept)."""
    usage = int(
        dbops.execute(
            reg,
            "SELECT coalesce((SELECT sum(bytes) FROM leases WHERE name IS DISTINCT FROM %s), 0) "
            "+ coalesce((SELECT sum(bytes) FROM templates), 0)",
            [replacing],
        )[0][0]
    )
    # Spares first: they only save the next lease a clone.
    for spare, size in _spare_sizes(reg):
        usage += size
        if usage + need > cap:
            res.drop.append(spare)
            usage -= size
    if usage + need <= cap:
        return usage
    unused = dbops.execute(
        reg,
        "SELECT template, hash, bytes, database FROM templates t WHERE template <> %s AND NOT EXISTS "
        "(SELECT 1 FROM leases l WHERE l.template = t.template AND l.name IS DISTINCT FROM %s) "
        "ORDER BY last_used, built",
        [keep, replacing],
    )
    for template, content_hash, size, database in unused:
        if usage + need <= cap:
            break
        key = _key(content_hash)
        # Held until the template is gone, so a client about to rebuild it waits for the drop.
        if not dbops.execute(reg, "SELECT pg_try_advisory_lock(%s, %s)", [BUILD_LOCK, key])[0][0]:
            continue
        res.unlock.append(key)
        dbops.execute(reg, "DELETE FROM templates WHERE template = %s", [template])
        res.drop += spares_of(reg, database, content_hash)
        res.drop.append(template)
        res.evicted.append(template)
        usage -= int(size)
    return usage


def _spare_sizes(conn: Connection) -> list[tuple[str, int]]:
    rows = dbops.execute(
        conn,
        "SELECT datname, pg_database_size(oid) FROM pg_database WHERE datname LIKE %s ORDER BY oid",
        [f"%\\_\\_{SPARE_KIND}\\_%"],
    )
    return [(r[0], int(r[1])) for r in rows]


def _refuse(reg: Connection, cap: int, usage: int, need: int, database: str) -> CapReached:
    holders = _leases(reg, "ORDER BY bytes DESC, created")
    templates = dbops.execute(
        reg,
        "SELECT t.template, t.bytes, count(l.name) FROM templates t LEFT JOIN leases l ON l.template = t.template "
        "GROUP BY t.template, t.bytes ORDER BY t.bytes DESC",
    )
    lines = [
        f"  lease {lease.name}: {lease.copy}, {lease.bytes / 1e6:.1f} MB, held by {lease.owner}, "
        f"expires in {_duration(lease.seconds_left)}"
        for lease in holders
    ]
    lines += [f"  template {t}: {int(b) / 1e6:.1f} MB, used by {n} lease(s)" for t, b, n in templates]
    return CapReached(
        f"a copy of {database} ({need / 1e6:.1f} MB) does not fit under lease_max_bytes ({cap / 1e6:.1f} MB): "
        f"provision keeps {usage / 1e6:.1f} MB on this server, and nothing more can be evicted "
        "(no lease has expired; every template left is in use)",
        hint="release leases you no longer need (`provision lease release NAME`), wait for them to expire, "
        "or raise lease_max_bytes",
        detail="\n".join(lines),
    )


def _reserve(
    reg: Connection,
    plan: BuildPlan,
    tpl: str,
    content_hash: str,
    name: str,
    ttl: float,
    cap: int,
    previous: Lease | None,
) -> _Reservation:
    """In one registry transaction: drop expired leases, check the cap (evicting if need be), write the lease."""
    host, pid, user = _owner()
    copy = copy_name(plan.name)
    placeholder = Lease(name, plan.name, copy, tpl, content_hash, host, None, pid, user, 0, "", "", "", ttl)
    res = _Reservation(placeholder)
    try:
        _reserve_in(reg, plan, tpl, content_hash, name, ttl, cap, previous, res)
    except BaseException:
        _finish(reg, None, res)  # rolled back: nothing to drop, but the evicted hashes' locks to release
        raise
    return res


def _reserve_in(
    reg: Connection,
    plan: BuildPlan,
    tpl: str,
    content_hash: str,
    name: str,
    ttl: float,
    cap: int,
    previous: Lease | None,
    res: _Reservation,
) -> None:
    host, pid, user = res.lease.owner_host, res.lease.owner_pid, res.lease.owner_user
    copy = res.lease.copy
    with _transaction(reg):
        expired, orphans = _take_expired(reg)
        res.drop += expired + orphans
        res.expired += expired + orphans
        row = dbops.execute(reg, "SELECT bytes FROM templates WHERE template = %s", [tpl])
        if not row or not dbops.execute(reg, "SELECT 1 FROM pg_database WHERE datname = %s", [tpl]):
            raise _TemplateGone(tpl)
        need = int(row[0][0])
        dbops.execute(reg, "UPDATE templates SET last_used = clock_timestamp() WHERE template = %s", [tpl])
        replacing = previous.name if previous is not None else None
        if cap:
            usage = _evict_for(reg, need, cap, tpl, replacing, res)
            if usage + need > cap:
                raise _refuse(reg, cap, usage, need, plan.name)
        values = [plan.name, copy, tpl, content_hash, host, pid, user, need, ttl]
        if previous is None:
            dbops.execute(
                reg,
                "INSERT INTO leases (name, database, copy, template, hash, owner_host, owner_addr, owner_pid, "
                "owner_user, bytes, expires) VALUES (%s, %s, %s, %s, %s, %s, inet_client_addr()::text, %s, %s, %s, "
                "clock_timestamp() + %s * interval '1 second')",
                [name, *values],
            )
        else:
            res.drop.append(previous.copy)
            dbops.execute(
                reg,
                "UPDATE leases SET database = %s, copy = %s, template = %s, hash = %s, owner_host = %s, "
                "owner_addr = inet_client_addr()::text, owner_pid = %s, owner_user = %s, bytes = %s, "
                "renewed = clock_timestamp(), expires = clock_timestamp() + %s * interval '1 second' WHERE name = %s",
                [*values, name],
            )
        res.lease = _leases(reg, "WHERE name = %s", [name])[0]


def _finish(reg: Connection, admin: Connection | None, res: _Reservation) -> None:
    """After the reservation committed: drop what it took over, and release the evicted hashes' locks."""
    try:
        if admin is not None:
            for name in res.drop:
                dbops.drop_database(admin, name)
    finally:
        for key in res.unlock:
            with contextlib.suppress(psycopg2.Error):
                dbops.execute(reg, "SELECT pg_advisory_unlock(%s, %s)", [BUILD_LOCK, key])


def _renew_found(reg: Connection, name: str, ttl: float) -> Lease | None:
    """A named lease taken over by the next job of the same name: its owner and expiry updated.
    None when it expired meanwhile (and may be collected): then a new copy is made."""
    host, pid, user = _owner()
    with _transaction(reg):
        dbops.execute(
            reg,
            "UPDATE leases SET owner_host = %s, owner_addr = inet_client_addr()::text, owner_pid = %s, "
            "owner_user = %s, renewed = clock_timestamp(), expires = clock_timestamp() + %s * interval '1 second' "
            "WHERE name = %s AND expires > clock_timestamp()",
            [host, pid, user, ttl, name],
        )
        found = _leases(reg, "WHERE name = %s AND expires > clock_timestamp()", [name])
    return found[0] if found else None


def lease(
    server: Server,
    reg: Connection,
    admin: Connection,
    plan: BuildPlan,
    *,
    ttl: float,
    name: str | None,
    cap: int,
    emit: EventFn = ignore,
) -> Leased:
    """Lease a private copy of the plan's database: a spare made ahead when there is one, else a clone.

    With a `name`, an unexpired lease of that name is found again (and renewed) when its copy
    was made from the same content; from other content, it is refreshed: a new copy of the new
    template replaces the old one."""
    with contextlib.ExitStack() as stack:
        if name is not None:
            validate_name(name)
            stack.enter_context(_advisory(reg, NAME_LOCK, _key(name), f"using lease {name}", emit))
        else:
            name = f"{plan.name}-{secrets.token_hex(4)}"
        for _ in range(5):
            tpl, content_hash, built = ensure_template(server, reg, plan, emit)
            found = _leases(reg, "WHERE name = %s AND expires > clock_timestamp()", [name])
            previous = found[0] if found else None
            if previous is not None and previous.content_hash == content_hash:
                if dbops.execute(reg, "SELECT 1 FROM pg_database WHERE datname = %s", [previous.copy]):
                    renewed = _renew_found(reg, name, ttl)
                    if renewed is not None:
                        return Leased(renewed, "found", built, False, (), ())
                    previous = None
            if previous is not None and previous.database != plan.name:
                raise ConfigError(
                    f"lease {name} holds a copy of {previous.database}, not of {plan.name}",
                    hint="use another --name for each database",
                )
            try:
                res = _reserve(reg, plan, tpl, content_hash, name, ttl, cap, previous)
            except _TemplateGone:
                continue  # evicted meanwhile: build it again
            break
        else:
            raise ServerError(f"the template of {plan.name} kept being evicted while leasing a copy of it")
        _finish(reg, admin, res)
        started = time.monotonic()
        from_spare = _claim_spare(admin, plan.name, content_hash, res.lease.copy)
        if not from_spare:
            try:
                with dbops.server_errors(f"cloning {tpl} into {res.lease.copy}"):
                    dbops.copy_database(admin, res.lease.copy, tpl)
            except BaseException:
                with contextlib.suppress(Exception), _transaction(reg):
                    dbops.execute(reg, "DELETE FROM leases WHERE name = %s AND copy = %s", [name, res.lease.copy])
                raise
        how = "take a spare copy of" if from_spare else "clone"
        emit(Event("step", f"{how} {tpl} as {res.lease.copy}", plan.name, time.monotonic() - started))
        return Leased(
            res.lease,
            "new" if previous is None else "refreshed",
            built,
            from_spare,
            tuple(res.evicted),
            tuple(res.expired),
        )
    raise AssertionError("unreachable")  # pragma: no cover


def needs_spares(conn: Connection, database: str, content_hash: str, target: int) -> bool:
    """Fewer than `target` spares, and nobody making them now: worth starting a top-up."""
    if len(spares_of(conn, database, content_hash)) >= target:
        return False
    busy = dbops.execute(
        conn,
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND objid = %s "
        "AND objsubid = 2 AND granted)",
        [SPARE_LOCK, _key(content_hash) % 2**32],
    )[0][0]
    return not busy


def top_up_spares(ep: Endpoint, database: str, content_hash: str, target: int, cap: int) -> list[str]:
    """Make spare copies of the template for `content_hash` until there are `target`, within the cap.

    One client at a time per hash (others skip); the template's build lock is held meanwhile,
    so it is not evicted under the clone. Returns the spares made."""
    made: list[str] = []
    tpl = template_name(database, content_hash)
    key = _key(content_hash)
    with (
        dbops.connection(ep, REGISTRY_DB, application_name=APP) as reg,
        dbops.connection(ep, application_name=APP) as admin,
    ):
        for namespace in (SPARE_LOCK, BUILD_LOCK):
            if not dbops.execute(reg, "SELECT pg_try_advisory_lock(%s, %s)", [namespace, key])[0][0]:
                return made
        while len(spares_of(admin, database, content_hash)) < target and _template_ready(reg, tpl):
            if cap:
                listed = listing(reg, cap)
                need = next((t.bytes for t in listed.templates if t.template == tpl), 0)
                if listed.total_bytes + sum(size for _, size in _spare_sizes(reg)) + need > cap:
                    break
            name = spare_prefix(database, content_hash) + secrets.token_hex(4)
            with dbops.server_errors(f"cloning {tpl} into the spare {name}"):
                dbops.copy_database(admin, name, tpl)
            made.append(name)
    return made


# ---------------------------------------------------------------- the other verbs


def renew(reg: Connection, name: str, ttl: float) -> Lease:
    """Extend an unexpired lease to `ttl` seconds from now; UnknownLease when it has expired or is gone."""
    with _transaction(reg):
        dbops.execute(
            reg,
            "UPDATE leases SET renewed = clock_timestamp(), expires = clock_timestamp() + %s * interval '1 second' "
            "WHERE name = %s AND expires > clock_timestamp()",
            [ttl, name],
        )
        found = _leases(reg, "WHERE name = %s", [name])
    if not found or found[0].expired:
        raise UnknownLease(f"no lease named {name} to renew: it expired or was released")
    return found[0]


def release(reg: Connection, admin: Connection, name: str) -> Lease:
    """Forget the lease and drop its copy."""
    with _transaction(reg):
        found = _leases(reg, "WHERE name = %s", [name])
        if not found:
            names = [r[0] for r in dbops.execute(reg, "SELECT name FROM leases")]
            raise UnknownLease(f"no lease named {name}{_did_you_mean(name, names)}")
        dbops.execute(reg, "DELETE FROM leases WHERE name = %s", [name])
    dbops.drop_database(admin, found[0].copy)
    return found[0]


def listing(reg: Connection, cap: int) -> LeaseList:
    leases = tuple(_leases(reg, "ORDER BY created, name"))
    rows = dbops.execute(
        reg,
        "SELECT t.template, t.database, t.hash, t.bytes, count(l.name), "
        "to_char(t.last_used AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') "
        "FROM templates t LEFT JOIN leases l ON l.template = t.template "
        "GROUP BY t.template ORDER BY t.last_used",
    )
    templates = tuple(TemplateUse(r[0], r[1], r[2], int(r[3]), int(r[4]), r[5]) for r in rows)
    total = sum(lease.bytes for lease in leases) + sum(t.bytes for t in templates)
    return LeaseList(leases, templates, total, cap or None)


class Renewer:
    """Renews a lease every third of its TTL from a daemon thread, until stopped (or the lease is gone)."""

    def __init__(self, ep: Endpoint, name: str, ttl: float, interval: float | None = None) -> None:
        self.ep, self.name, self.ttl = ep, name, ttl
        self.interval = interval if interval is not None else ttl / 3
        self.renewals = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"provision-renew-{name}", daemon=True)

    def start(self) -> Renewer:
        self._thread.start()
        return self

    def _run(self) -> None:
        reg: Connection | None = None
        while not self._stop.wait(self.interval):
            try:
                if reg is None or reg.closed:
                    reg = dbops.connect(self.ep, REGISTRY_DB, application_name=APP)
                renew(reg, self.name, self.ttl)
                self.renewals += 1
            except UnknownLease as exc:
                self.error = exc
                break
            except Exception as exc:  # noqa: BLE001 - a lost connection: try again at the next interval
                self.error = exc
                if reg is not None:
                    reg.close()
                reg = None
        if reg is not None:
            reg.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _duration(seconds: float) -> str:
    if seconds <= 0:
        return "0s (expired)"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _did_you_mean(word: str, choices: Sequence[str]) -> str:
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
