"""Snapshots of a database: saved as a template, restored by renaming a standby copy cloned in advance.

A snapshot NAME of database DB is the template database `DB__snap_NAME`: a copy made with
CREATE DATABASE ... TEMPLATE, whose comment records when it was saved and the database's
provenance and Alembic revision at that moment. Its standby `DB__standby_NAME` is a plain clone
of it, made in the background, so that a restore is a rename whatever the size; the next
standby is cloned after the restore. Every step runs under the provisioner lock and is safe to
kill: copies are made under staging names and put in place by renames in one transaction.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import re
import secrets
import time
from collections.abc import Iterator, Sequence

from ..checkpoints import checkpoint
from ..config import Config
from ..endpoint import Endpoint
from ..errors import ConfigError, Refused
from ..events import Event, EventFn, ignore
from ..names import derived_name, derived_prefix, snapshot_db, standby_db
from ..postgres import dbops
from ..postgres.dbops import Connection
from ..postgres.retry import call_with_retries
from ..postgres.sqlstream import BUILD_APP
from ..results import (
    Snapshot,
)
from .pipeline import Server, now, read_comment, read_provenance, swap_into_place

# Letters, digits, '.', '_' and '-'; short enough that every derived name fits in 63 bytes.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,23}$")
KIND = "snapshot"


def validate_name(name: str) -> str:
    if not _NAME.fullmatch(name) or "__" in name:
        raise ConfigError(
            f"invalid snapshot name {name!r}",
            hint="use 1 to 24 letters, digits, '.', '_' or '-', starting with a letter or digit (no '__')",
        )
    return name


def _record(comment: str | None) -> dict[str, object] | None:
    data = read_comment(comment)
    return data if data is not None and data.get("kind") == KIND else None


def list_snapshots(admin: Connection, databases: Sequence[str]) -> list[Snapshot]:
    """The snapshots of `databases`, by database then name."""
    rows = dbops.list_databases(admin)
    found = []
    for database in databases:
        prefix = derived_prefix(database, "snap")
        for row_name, row in rows.items():
            record = _record(row.comment) if row_name.startswith(prefix) else None
            if record is None or record.get("database") != database:
                continue
            name = str(record.get("name"))
            versions = record.get("alembic_versions")
            source = record.get("provenance")
            standby = standby_db(database, name)
            found.append(
                Snapshot(
                    name=name,
                    database=database,
                    size_bytes=dbops.database_size(admin, row_name),
                    created_at=str(record.get("created_at")) if record.get("created_at") else None,
                    alembic_versions=[str(v) for v in versions] if isinstance(versions, list) else None,
                    provenance=source if isinstance(source, dict) else None,
                    standby=standby in rows,
                    standby_bytes=dbops.database_size(admin, standby) if standby in rows else 0,
                )
            )
    return sorted(found, key=lambda s: (s.database, s.name))


def orphaned_standbys(admin: Connection, databases: Sequence[str]) -> list[str]:
    """Standby copies whose snapshot is gone (dropped by hand, or a run killed while removing it)."""
    rows = dbops.list_databases(admin)
    out = []
    for database in databases:
        prefix = derived_prefix(database, "standby")
        for row_name in rows:
            if row_name.startswith(prefix):
                name = row_name[len(prefix) :]
                if snapshot_db(database, name) not in rows:
                    out.append(row_name)
    return sorted(out)


def unknown(name: str, database: str | None, known: Sequence[Snapshot]) -> ConfigError:
    names = sorted({s.name for s in known if database is None or s.database == database})
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
    where = f" of {database}" if database else ""
    return ConfigError(
        f"no snapshot {name!r}{where}" + (f" (did you mean {close[0]!r}?)" if close else ""),
        hint=f"snapshots{where}: {', '.join(names)}" if names else "there are none yet; `provision snapshot save NAME`",
    )


# ---------------------------------------------------------------- save, restore, remove


def _copy_ending_sessions(admin: Connection, name: str, source: str, what: str) -> None:
    """Clone `source` into `name`; a template copy needs `source` to itself, so its sessions are ended."""

    # A client may reconnect between the termination and the copy: worth a few quick retries.
    def copy() -> None:
        dbops.terminate_sessions(admin, source)
        dbops.copy_database(admin, name, source)

    with dbops.server_errors(what):
        call_with_retries(copy, retry_on=dbops.ObjectInUse, interval=0.05, timeout=10)


def save(
    endpoint: Endpoint, admin: Connection, database: str, name: str, replace: bool, on_event: EventFn = ignore
) -> tuple[Snapshot, bool]:
    """Copy `database` into snapshot `name` (call under the lock). Returns the snapshot and whether
    one of that name was replaced. Sessions on the database are ended: a template copy needs that."""
    started = time.monotonic()
    rows = dbops.list_databases(admin)
    if database not in rows:
        raise ConfigError(
            f"database {database} does not exist, so there is nothing to snapshot",
            hint="run `provision fresh` to build it, or pass --db for the databases that exist",
        )
    target = snapshot_db(database, name)
    if target in rows and not replace:
        raise Refused(
            f"snapshot {name!r} of {database} already exists",
            hint="pass --force to replace it, or choose another name",
        )
    with dbops.connection(endpoint, database, application_name=BUILD_APP) as conn:
        versions = dbops.alembic_versions(conn)
    source = read_provenance(rows[database].comment)
    record: dict[str, object] = {
        "kind": KIND,
        "name": name,
        "database": database,
        "created_at": now(),
        "alembic_versions": versions,
        "provenance": source,
    }
    stage = derived_name(database, "stage", secrets.token_hex(4))
    _copy_ending_sessions(admin, stage, database, f"copying {database} for snapshot {name}")
    checkpoint("snapshot-staged")
    old = derived_name(database, "old", secrets.token_hex(4)) if target in rows else None
    swap = dbops.Swap(target, stage, old, json.dumps(record, separators=(",", ":")))
    with dbops.server_errors(f"saving snapshot {name} of {database}"):
        dbops.swap_in(admin, [swap], make_template=True)
    checkpoint("snapshot-saved")
    if old is not None:
        # The replaced snapshot, and the standby cloned from it, are out of date.
        dbops.drop_database(admin, old)
        dbops.drop_database(admin, standby_db(database, name))
    on_event(Event("step", f"save snapshot {name}", database, time.monotonic() - started))
    size = dbops.database_size(admin, target)
    return Snapshot(name, database, size, str(record["created_at"]), versions, source, False), old is not None


def restore(
    admin: Connection, snapshots: Sequence[Snapshot], on_event: EventFn = ignore
) -> dict[str, tuple[str, bool]]:
    """Put each snapshot's copy in place of its database, all in one swap (call under the lock).

    The standby is taken when there is one (a rename); otherwise the snapshot is cloned. Returns,
    per database, how ("standby" or "cloned") and whether an existing database was replaced.
    """
    staged = []
    how = {}
    rows = dbops.list_databases(admin)
    for snap in snapshots:
        started = time.monotonic()
        stage = derived_name(snap.database, "stage", secrets.token_hex(4))
        standby = standby_db(snap.database, snap.name)
        if standby in rows:
            # Claimed under a staging name: a crash from here on leaves a leftover, not a used standby.
            dbops.rename_database(admin, standby, stage)
            how[snap.database] = "standby"
        else:
            with dbops.server_errors(f"cloning snapshot {snap.name} of {snap.database}"):
                dbops.copy_database(admin, stage, snapshot_db(snap.database, snap.name))
            how[snap.database] = "cloned"
        message = "take the standby copy" if how[snap.database] == "standby" else "clone the snapshot"
        on_event(Event("step", f"{message} of {snap.name}", snap.database, time.monotonic() - started))
        comment = dict(snap.provenance or {"database": snap.database, "hash": None})
        # The branch it followed when saved is not the one it is restored on (branches.py marks that).
        comment.pop("branch", None)
        comment.update(restored_from=snap.name, restored_at=now(), snapshot_created_at=snap.created_at)
        staged.append((snap.database, stage, json.dumps(comment, separators=(",", ":"))))
    checkpoint("restore-staged")
    replaced = swap_into_place(admin, staged, on_event)
    return {database: (how[database], replaced[database]) for database in how}


def remove(admin: Connection, snap: Snapshot) -> None:
    """Drop a snapshot and its standby (call under the lock). The standby goes first, so a kill
    in between leaves a whole snapshot that merely lacks a standby."""
    dbops.drop_database(admin, standby_db(snap.database, snap.name))
    dbops.drop_database(admin, snapshot_db(snap.database, snap.name))


def ensure_standbys(admin: Connection, databases: Sequence[str], on_event: EventFn = ignore) -> list[str]:
    """Clone a standby for every snapshot of `databases` that lacks one; drop orphaned standbys.
    Call under the lock; `admin` should be a BUILD_APP session, so a killed run's clone is ended."""
    for orphan in orphaned_standbys(admin, databases):
        dbops.drop_database(admin, orphan)
    made: list[str] = []
    if dbops.clones_files(admin):
        # Copy-on-write: a restore clones the snapshot in about the time a rename takes, so a
        # standby would only hold a second copy's worth of catalog and, once written, of disk.
        return made
    for snap in list_snapshots(admin, databases):
        if snap.standby:
            continue
        started = time.monotonic()
        standby = standby_db(snap.database, snap.name)
        with dbops.server_errors(f"cloning a standby of snapshot {snap.name} of {snap.database}"):
            dbops.copy_database(admin, standby, snapshot_db(snap.database, snap.name))
        checkpoint("standby-cloned")
        on_event(Event("step", f"clone a standby of snapshot {snap.name}", snap.database, time.monotonic() - started))
        made.append(standby)
    return made


# ---------------------------------------------------------------- what the snapshot verbs return


# ---------------------------------------------------------------- policy: which snapshots a verb acts on, the disk cap


def targets_of(cfg: Config, databases: Sequence[str]) -> list[str]:
    """The databases a snapshot verb acts on: `databases` (each must be configured), else every configured one."""
    for name in databases:
        cfg.database(name)  # a clear error for a database that is not configured
    return list(databases) or [db.name for db in cfg.databases]


def check_limit(cfg: Config, admin: Connection, names: Sequence[str], name: str, others: int = 0) -> None:
    """Refused when saving `name` of `names` would take the snapshots past `snapshot_limit_mb`;
    `others` is what else counts toward it (the branches' copies put aside)."""
    if not cfg.snapshot_limit_mb:
        return
    current = others + sum(s.disk_bytes for s in list_snapshots(admin, [db.name for db in cfg.databases]))
    existing = dbops.list_databases(admin)
    # A snapshot and its standby each take about the database's size (no standby with copy-on-write).
    copies = 1 if dbops.clones_files(admin) else 2
    adding = sum(copies * dbops.database_size(admin, n) for n in names if n in existing)
    limit = cfg.snapshot_limit_mb * 1_000_000
    if current + adding > limit:
        raise Refused(
            f"saving snapshot {name} would take snapshots to {(current + adding) / 1e6:.0f} MB, past "
            f"snapshot_limit_mb ({cfg.snapshot_limit_mb} MB); they take {current / 1e6:.0f} MB now"
            + (f" (branch copies included: {others / 1e6:.0f} MB)" if others else ""),
            hint="remove old ones (`provision snapshot list`, then `snapshot rm NAME`; `provision branch prune`), "
            "or raise snapshot_limit_mb",
        )


def find(cfg: Config, admin: Connection, name: str, databases: Sequence[str]) -> list[Snapshot]:
    """The snapshots called `name` of `databases` (default: every configured database that has one)."""
    validate_name(name)
    known = list_snapshots(admin, [db.name for db in cfg.databases])
    targets = targets_of(cfg, databases)
    found = [s for s in known if s.name == name and s.database in targets]
    missing = [d for d in targets if d not in {s.database for s in found}]
    if found and not (databases and missing):
        return found
    asked = missing if databases else targets
    damaged = [d for d in asked if standby_db(d, name) in orphaned_standbys(admin, [d])]
    if damaged:
        raise ConfigError(
            f"snapshot {name!r} of {', '.join(damaged)} is gone: its database was dropped by hand, "
            "and only its standby copy is left",
            hint=f"`provision snapshot rm {name}` removes what is left; save it again to have it back",
        )
    raise unknown(name, asked[0] if databases else None, known)


@contextlib.contextmanager
def readable_copy(server: Server, admin: Connection, snap: Snapshot) -> Iterator[str]:
    """A database pg_dump can read that holds the snapshot: its standby, or a scratch clone."""
    from . import drift

    if snap.standby:
        yield standby_db(snap.database, snap.name)
        return
    with drift.scratch(server.endpoint, snap.database) as scratch:
        dbops.create_database(admin, scratch, template=snapshot_db(snap.database, snap.name))
        yield scratch


def remove_named(cfg: Config, admin: Connection, name: str, databases: Sequence[str]) -> list[str]:
    """Remove snapshot `name` of `databases` (default: each that has one); the databases it was of.

    What is left of a snapshot whose template was dropped by hand (its standby) goes too."""
    try:
        found = find(cfg, admin, name, databases)
    except ConfigError:
        leftovers = [s for s in orphaned_standbys(admin, targets_of(cfg, databases)) if s.endswith("_" + name)]
        if not leftovers:
            raise
        for standby in leftovers:
            dbops.drop_database(admin, standby)
        return leftovers
    for snap in found:
        remove(admin, snap)
    return [s.database for s in found]
