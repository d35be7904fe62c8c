"""One function per verb: each takes a resolved Config and returns a result dataclass, and never prints."""

from __future__ import annotations

import contextlib
import os
import shlex
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from .config import Config
from .errors import ConfigError, ProvisionError, Refused
from .events import Event, EventFn, ignore
from .pipeline import BuildPlan, Server, plan_database, read_provenance
from .results import (
    Command,
    DatabasePlan,
    DatabaseStatus,
    DownResult,
    FreshPlan,
    FreshResult,
    StatusResult,
    TemplateStatus,
    UpResult,
)
from .targets import make_target

if TYPE_CHECKING:
    from .dbops import Connection
    from .doctor import DoctorResult
    from .drift import CheckResult
    from .endpoint import Endpoint
    from .snapshots import (
        Snapshot,
        SnapshotExportResult,
        SnapshotList,
        SnapshotRemoveResult,
        SnapshotRestoreResult,
        SnapshotSaveResult,
    )

__all__ = [
    "Command",
    "DatabasePlan",
    "DatabaseStatus",
    "DownResult",
    "FreshPlan",
    "FreshResult",
    "StatusResult",
    "TemplateSet",
    "TemplateStatus",
    "UpResult",
    "check",
    "config_for_tests",
    "connect",
    "connect_admin",
    "database_url",
    "doctor",
    "down",
    "endpoint",
    "ensure_templates",
    "fresh",
    "logs",
    "plan_fresh",
    "psql_command",
    "snapshot_export",
    "snapshot_list",
    "snapshot_restore",
    "snapshot_rm",
    "snapshot_save",
    "status",
    "tables_at_risk",
    "up",
    "wait",
    "wait_for_housekeeping",
]


# ---------------------------------------------------------------- the server


def up(
    cfg: Config, *, recreate: bool = False, timeout: float | None = None, on_event: EventFn | None = None
) -> UpResult:
    """Create or reuse the server (the container, for the docker target), and wait until it accepts logins."""
    target = make_target(cfg)
    server, result = target.ready(
        create=True, recreate=recreate, timeout=_timeout(cfg, timeout), on_event=on_event or ignore
    )
    server.close()
    return result


def wait(cfg: Config, *, timeout: float | None = None, on_event: EventFn | None = None) -> UpResult:
    """Wait until the (existing) server accepts logins."""
    target = make_target(cfg)
    server, result = target.ready(
        create=False, recreate=False, timeout=_timeout(cfg, timeout), on_event=on_event or ignore
    )
    server.close()
    return result


def down(cfg: Config, *, volumes: bool = False) -> DownResult:
    """Remove the container; with volumes=True also its data volume (the caller confirms that)."""
    return make_target(cfg).down(volumes)


def logs(cfg: Config, *, follow: bool = False, tail: int | None = None) -> Iterator[bytes]:
    """The container's log, optionally following it."""
    return make_target(cfg).logs(follow, tail)


def _timeout(cfg: Config, timeout: float | None) -> float:
    return cfg.timeout if timeout is None else timeout


def _ready(
    cfg: Config, *, recreate: bool = False, timeout: float | None = None, on_event: EventFn = ignore
) -> tuple[Server, UpResult]:
    """Bring the server up for a verb that writes: a target may first refuse (a remote server)."""
    target = make_target(cfg)
    target.check_writable()
    return target.ready(create=True, recreate=recreate, timeout=_timeout(cfg, timeout), on_event=on_event)


@contextlib.contextmanager
def _holding_lock(
    cfg: Config, server: Server, purpose: str, emit: EventFn, *, wait: bool = True, writes: bool = True
) -> Iterator[Connection]:
    """An admin connection holding the server-wide provisioner lock. A verb that writes first
    reopens databases that a killed run left closed to connections (seal.py)."""
    from . import dbops, seal

    lock_conn = server.admin_connection(f"provision {purpose}")
    try:
        with _timed_lock(emit):
            dbops.acquire_lock(lock_conn, wait, lambda msg: emit(Event("wait", msg)))
        if writes:
            reopened = seal.reopen_leftovers(lock_conn, [db.name for db in cfg.databases])
            if reopened:
                emit(Event("info", f"reopened {', '.join(reopened)} to new connections: a killed run left them closed"))
        yield lock_conn
    finally:
        lock_conn.close()


@contextlib.contextmanager
def _locked(
    cfg: Config, emit: EventFn, purpose: str, *, writes: bool = True, timeout: float | None = None
) -> Iterator[tuple[Server, Connection]]:
    """The ready server and a connection holding the provisioner lock: how every verb that changes databases begins."""
    if writes:
        server, _ = _ready(cfg, timeout=timeout, on_event=emit)
    else:
        server, _ = make_target(cfg).ready(create=False, recreate=False, timeout=_timeout(cfg, timeout), on_event=emit)
    with _holding_lock(cfg, server, purpose, emit, writes=writes) as lock_conn:
        yield server, lock_conn


# ---------------------------------------------------------------- connecting


def _name(cfg: Config, database: str | None) -> str:
    return cfg.database(database).name if database else cfg.databases[0].name


def endpoint(cfg: Config) -> Endpoint:
    """Where to connect to the configured server now (for the docker target, through the published port)."""
    return make_target(cfg).endpoint()


def database_url(cfg: Config, database: str | None = None, *, show_password: bool = False) -> str:
    """A libpq URL for a configured database; the password is masked unless show_password."""
    return endpoint(cfg).dsn(_name(cfg, database), show_password)


def psql_command(cfg: Config, database: str | None = None) -> Command:
    """The command that opens an interactive psql on a database (inside the container when there is one)."""
    return make_target(cfg).psql_command(_name(cfg, database))


def connect(cfg: Config, database: str | None = None) -> Connection:
    """An open psycopg2 connection to a configured database (autocommit on)."""
    from . import dbops

    return dbops.connect(endpoint(cfg), _name(cfg, database))


def connect_admin(cfg: Config) -> Connection:
    """A connection to the server's maintenance database."""
    from . import dbops

    return dbops.connect(endpoint(cfg))


# ---------------------------------------------------------------- fresh


def _selected(cfg: Config, only: Sequence[str], skip_demo: bool, hash_files: bool = True) -> list[BuildPlan]:
    for name in only:
        cfg.database(name)
    chosen = [db for db in cfg.databases if (not only or db.name in only) and not (skip_demo and db.demo)]
    if not chosen:
        raise ConfigError("nothing to build: --only/--skip-demo left no databases", hint="check the names you passed")
    return [plan_database(cfg, db, hash_files) for db in chosen]


def plan_fresh(cfg: Config, *, only: Sequence[str] = (), skip_demo: bool = False, use_cache: bool = True) -> FreshPlan:
    """What `fresh` would do, touching nothing (the dry run)."""
    plans = _selected(cfg, only, skip_demo)
    out = []
    for plan in plans:
        steps = [
            f"build {plan.name} into a staging database"
            + (" (or clone the cached template when its content hash matches)" if use_cache else "")
        ]
        if plan.files:
            steps.append(
                f"run {len(plan.files)} SQL file(s) with psql -v ON_ERROR_STOP=1"
                + (" --single-transaction" if plan.database.single_transaction else "")
            )
        if plan.database.alembic_revision:
            steps.append(f"stamp alembic_version = {plan.database.alembic_revision}")
        if plan.migrations:
            to = f" (to {plan.revision})" if plan.migrations.alembic else ""
            steps.append(
                f"run the migrations{to}: {shlex.join(plan.migrations.command())} in {plan.migrations.runner.cwd}, "
                f"with the copy's URL in ${plan.migrations.runner.url_env}"
                + (
                    f", and {', '.join(k for k, _ in plan.migrations.runner.env)} from `env:`"
                    if plan.migrations.runner.env
                    else ""
                )
            )
        if plan.seed_files:
            steps.append(f"seed: run {len(plan.seed_files)} SQL file(s) with psql")
        if plan.seed is not None:
            steps.append(f"seed: {shlex.join(plan.seed.argv)} in {plan.seed.cwd}")
        if plan.runs_commands:
            steps.append(f"while the app's commands run, {', '.join(plan.live)} accept no new connections")
        if plan.database.tables:
            steps.append(f"verify {len(plan.database.tables)} expected table(s)")
        steps.append(f"terminate sessions on {plan.name}, swap the new copy into place, drop the old one")
        out.append(
            DatabasePlan(plan.name, tuple(steps), plan.files, plan.database.alembic_revision, dict(plan.variables))
        )
    return FreshPlan(cfg.target, make_target(cfg).container, tuple(out))


def tables_at_risk(server: Server, names: Sequence[str]) -> dict[str, int]:
    """Which of `names` exist and hold tables: what `fresh` would destroy."""
    from . import dbops

    at_risk = {}
    with dbops.connection(server.endpoint) as admin:
        existing = dbops.list_databases(admin)
    for name in names:
        if name in existing:
            with dbops.connection(server.endpoint, name) as conn:
                count = dbops.table_count(conn)
            if count:
                at_risk[name] = count
    return at_risk


def fresh(
    cfg: Config,
    *,
    yes: bool = False,
    confirm: Callable[[dict[str, int]], bool] | None = None,
    only: Sequence[str] = (),
    skip_demo: bool = False,
    use_cache: bool | None = None,
    wait_for_lock: bool = True,
    recreate: bool = False,
    timeout: float | None = None,
    on_event: EventFn | None = None,
) -> FreshResult:
    """Rebuild the configured databases: build privately, verify, swap into place, tidy up.

    Databases that hold tables are only replaced with yes=True or when `confirm` returns True;
    otherwise Refused is raised and nothing is touched.
    """
    from . import dbops, housekeeping
    from .pipeline import cleanup_leftovers, fresh_databases, housekeep

    emit = on_event or ignore
    started = time.monotonic()
    use_cache = cfg.cache if use_cache is None else use_cache
    # Validates every source before anything is touched. Without the cache, the files are
    # hashed (for provenance) while they stream instead of in a pass of their own.
    plans = _selected(cfg, only, skip_demo, hash_files=use_cache)
    server, up_result = _ready(cfg, recreate=recreate, timeout=timeout, on_event=emit)

    with _holding_lock(cfg, server, "fresh", emit, wait=wait_for_lock) as lock_conn:
        names = [p.name for p in plans]
        if not yes:
            _confirm_replace(server, names, confirm)
        cleanup_leftovers(lock_conn, names, emit)
        results = fresh_databases(server, lock_conn, plans, use_cache, emit, template_now=cfg.cleanup == "sync")
        mode: Literal["background", "sync"]
        if cfg.cleanup == "background":
            dbops.release_lock(lock_conn)
            lock_conn.close()
            housekeeping.spawn(cfg, server.endpoint, names, use_cache)
            mode = "background"
        else:
            housekeep(server, plans, cfg.keep_templates, use_cache, emit)
            mode = "sync"
    return FreshResult(tuple(results), time.monotonic() - started, mode, up_result)


def _confirm_replace(server: Server, names: Sequence[str], confirm: Callable[[dict[str, int]], bool] | None) -> None:
    """Refused unless `confirm` agrees to replace those of `names` that hold tables."""
    at_risk = tables_at_risk(server, names)
    if at_risk and not (confirm is not None and confirm(at_risk)):
        listing = ", ".join(f"{n} ({c} tables)" for n, c in at_risk.items())
        raise Refused(
            f"not replacing databases that hold data without confirmation: {listing}",
            hint="pass --yes (or yes=True) to replace them",
        )


@contextlib.contextmanager
def _timed_lock(emit: EventFn) -> Iterator[None]:
    started = time.monotonic()
    yield
    waited = time.monotonic() - started
    if waited > 0.5:
        emit(Event("step", "acquired the provisioner lock", None, waited))


def wait_for_housekeeping(cfg: Config, timeout: float = 120.0) -> None:
    """Block until the background tidy-up of earlier `fresh` runs on this machine has finished
    and no provisioner holds the server-wide lock (benchmarks and tests use it)."""
    from . import housekeeping

    housekeeping.wait(endpoint(cfg), timeout)


# ---------------------------------------------------------------- snapshots


def _snapshot_targets(cfg: Config, databases: Sequence[str]) -> list[str]:
    for name in databases:
        cfg.database(name)  # a clear error for a database that is not configured
    return list(databases) or [db.name for db in cfg.databases]


def _tidy_after(cfg: Config, server: Server, names: Sequence[str], emit: EventFn) -> Literal["background", "sync"]:
    """Drop the replaced copies and clone the standbys: detached, or now with cleanup: sync."""
    from . import housekeeping

    if cfg.cleanup == "background":
        housekeeping.spawn(cfg, server.endpoint, names, cfg.cache, templates=False)
        return "background"
    job = housekeeping.Job(cfg, server.endpoint, tuple(names), cfg.cache, templates=False)
    housekeeping.tidy_up(job, server.server_version, emit)
    return "sync"


def snapshot_save(
    cfg: Config,
    name: str,
    *,
    databases: Sequence[str] = (),
    force: bool = False,
    on_event: EventFn | None = None,
) -> SnapshotSaveResult:
    """Save snapshot `name` of each database (default: every configured one that exists).

    Sessions on those databases are ended (a template copy needs that). Refused when a snapshot of
    that name exists (unless force) or when the snapshots would pass `snapshot_limit_mb`."""
    from . import dbops, snapshots
    from .pipeline import cleanup_leftovers

    emit = on_event or ignore
    started = time.monotonic()
    snapshots.validate_name(name)
    names = _snapshot_targets(cfg, databases)
    with _locked(cfg, emit, "snapshot") as (server, admin):
        cleanup_leftovers(admin, names, emit)
        if not databases:
            existing = dbops.list_databases(admin)
            names = [n for n in names if n in existing] or names
        _check_snapshot_limit(cfg, admin, names, name)
        saved, replaced = [], []
        for database in names:
            snap, was_replaced = snapshots.save(server.endpoint, admin, database, name, force, emit)
            saved.append(snap)
            if was_replaced:
                replaced.append(database)
        mode = _tidy_after(cfg, server, names, emit)
    return snapshots.SnapshotSaveResult(name, tuple(saved), tuple(replaced), time.monotonic() - started, mode)


def _check_snapshot_limit(cfg: Config, admin: Connection, names: Sequence[str], name: str) -> None:
    from . import dbops, snapshots

    if not cfg.snapshot_limit_mb:
        return
    current = sum(s.disk_bytes for s in snapshots.list_snapshots(admin, [db.name for db in cfg.databases]))
    existing = dbops.list_databases(admin)
    # A snapshot and its standby each take about the database's size.
    adding = sum(2 * dbops.database_size(admin, n) for n in names if n in existing)
    limit = cfg.snapshot_limit_mb * 1_000_000
    if current + adding > limit:
        raise Refused(
            f"saving snapshot {name} would take snapshots to {(current + adding) / 1e6:.0f} MB, past "
            f"snapshot_limit_mb ({cfg.snapshot_limit_mb} MB); they take {current / 1e6:.0f} MB now",
            hint="remove old ones (`provision snapshot list`, then `snapshot rm NAME`), or raise snapshot_limit_mb",
        )


def snapshot_list(cfg: Config, *, databases: Sequence[str] = ()) -> SnapshotList:
    """Every snapshot of the configured databases, with sizes, and their total disk use."""
    from . import snapshots

    names = _snapshot_targets(cfg, databases)
    server, _ = make_target(cfg).ready(create=False, recreate=False, timeout=cfg.timeout, on_event=ignore)
    admin = server.admin_connection("provision snapshot")
    try:
        found = tuple(snapshots.list_snapshots(admin, names))
    finally:
        admin.close()
    limit = cfg.snapshot_limit_mb * 1_000_000 or None
    return snapshots.SnapshotList(found, sum(s.disk_bytes for s in found), limit)


def _find_snapshots(cfg: Config, admin: Connection, name: str, databases: Sequence[str]) -> list[Snapshot]:
    """The snapshots called `name` of `databases` (default: every configured database that has one)."""
    from . import snapshots

    snapshots.validate_name(name)
    known = snapshots.list_snapshots(admin, [db.name for db in cfg.databases])
    targets = _snapshot_targets(cfg, databases)
    found = [s for s in known if s.name == name and s.database in targets]
    missing = [d for d in targets if d not in {s.database for s in found}]
    if found and not (databases and missing):
        return found
    asked = missing if databases else targets
    damaged = [d for d in asked if snapshots.standby_db(d, name) in snapshots.orphaned_standbys(admin, [d])]
    if damaged:
        raise ConfigError(
            f"snapshot {name!r} of {', '.join(damaged)} is gone: its database was dropped by hand, "
            "and only its standby copy is left",
            hint=f"`provision snapshot rm {name}` removes what is left; save it again to have it back",
        )
    raise snapshots.unknown(name, asked[0] if databases else None, known)


def snapshot_restore(
    cfg: Config,
    name: str,
    *,
    databases: Sequence[str] = (),
    yes: bool = False,
    confirm: Callable[[dict[str, int]], bool] | None = None,
    on_event: EventFn | None = None,
) -> SnapshotRestoreResult:
    """Put snapshot `name` back in place of each database that has one (or of `databases`).

    The same atomic swap as `fresh`: other sessions are ended, the current database is renamed
    aside and dropped afterwards. Databases that hold tables are only replaced with yes=True or
    when `confirm` returns True. With a standby ready, the restore is a rename."""
    from . import snapshots
    from .pipeline import cleanup_leftovers

    emit = on_event or ignore
    started = time.monotonic()
    with _locked(cfg, emit, "snapshot") as (server, admin):
        found = _find_snapshots(cfg, admin, name, databases)
        names = [s.database for s in found]
        if not yes:
            _confirm_replace(server, names, confirm)
        cleanup_leftovers(admin, names, emit)
        done = snapshots.restore(admin, found, emit)
        mode = _tidy_after(cfg, server, names, emit)
    restored = tuple(snapshots.RestoredDatabase(s.database, *done[s.database], s.alembic_versions) for s in found)
    return snapshots.SnapshotRestoreResult(name, restored, time.monotonic() - started, mode)


def snapshot_rm(cfg: Config, name: str, *, databases: Sequence[str] = ()) -> SnapshotRemoveResult:
    """Remove snapshot `name` (and its standby) of each database that has one (or of `databases`)."""
    from . import dbops, snapshots

    with _locked(cfg, ignore, "snapshot") as (_, admin):
        try:
            found = _find_snapshots(cfg, admin, name, databases)
        except ConfigError:
            # What is left of a snapshot whose template was dropped by hand: its standby.
            leftovers = [
                s
                for s in snapshots.orphaned_standbys(admin, _snapshot_targets(cfg, databases))
                if s.endswith("_" + name)
            ]
            if not leftovers:
                raise
            for standby in leftovers:
                dbops.drop_database(admin, standby)
            return snapshots.SnapshotRemoveResult(name, tuple(leftovers))
        for snap in found:
            snapshots.remove(admin, snap)
    return snapshots.SnapshotRemoveResult(name, tuple(s.database for s in found))


def snapshot_export(
    cfg: Config, name: str, path: str | os.PathLike[str], *, database: str | None = None
) -> SnapshotExportResult:
    """Write snapshot `name` of `database` (default: the first configured) as a `pg_dump -Fc` file,
    made by the server's own pg_dump (the local one for a server target) and streamed to disk.

    The file appears only when the dump is complete (it is written beside it, then renamed)."""
    from pathlib import Path

    from . import snapshots
    from .errors import ServerError

    started = time.monotonic()
    target_path = Path(path)
    if not target_path.parent.is_dir():
        raise ConfigError(f"cannot write {target_path}: its directory does not exist")
    partial = target_path.with_name(target_path.name + ".partial")
    with _locked(cfg, ignore, "snapshot", writes=False) as (server, admin):
        snap = _find_snapshots(cfg, admin, name, [database or cfg.databases[0].name])[0]
        with _readable_copy(server, admin, snap) as source, partial.open("wb") as out:
            output = make_target(cfg).dump(source, out)
        if output.exit_code != 0:
            partial.unlink(missing_ok=True)
            raise ServerError(
                f"pg_dump of snapshot {name} of {snap.database} failed: {output.stderr.strip()[-500:]}",
                hint=f"{target_path} was not written",
            )
    os.replace(partial, target_path)
    size = target_path.stat().st_size
    return snapshots.SnapshotExportResult(name, snap.database, str(target_path), size, time.monotonic() - started)


@contextlib.contextmanager
def _readable_copy(server: Server, admin: Connection, snap: Snapshot) -> Iterator[str]:
    """A database pg_dump can read that holds the snapshot: its standby, or a scratch clone."""
    from . import dbops, drift, snapshots

    if snap.standby:
        yield snapshots.standby_db(snap.database, snap.name)
        return
    with drift.scratch(server.endpoint, snap.database) as scratch:
        dbops.create_database(admin, scratch, template=snapshots.snapshot_db(snap.database, snap.name))
        yield scratch


# ---------------------------------------------------------------- doctor


def doctor(cfg: Config) -> DoctorResult:
    """Check this machine's setup for the configured target, changing nothing: DoctorResult.passed
    is False when any check failed."""
    from . import doctor as checks

    target_checks, admin = make_target(cfg).diagnose()
    found = list(target_checks)
    if admin is not None:
        try:
            found += checks.server_checks(cfg, admin)
        finally:
            admin.close()
    return checks.DoctorResult(tuple(found))


# ---------------------------------------------------------------- check


def check(
    cfg: Config,
    *,
    only: Sequence[str] = (),
    live: bool = False,
    column_order: bool = False,
    timeout: float | None = None,
    on_event: EventFn | None = None,
) -> CheckResult:
    """Compare schemas, touching no database in place: by default each database built from its SQL
    sources against the same built by its migrations; with live=True the live database against a
    fresh build. Scratch copies are dropped however it ends. CheckResult.drift says if any differ."""
    from . import drift

    emit = on_event or ignore
    started = time.monotonic()
    plans = _selected(cfg, only, False)
    if not live:
        both = [p for p in plans if p.migrations is not None and p.files]
        migrations_only = [p.name for p in plans if p.migrations is not None and not p.files]
        if not both or (only and len(both) < len(plans)):
            if migrations_only:
                raise ConfigError(
                    f"{', '.join(migrations_only)}: built by migrations alone (no `sql:`), so there is no bootstrap "
                    "SQL to compare the migrations with",
                    hint="`provision check --live` compares the live database with a fresh build from its migrations",
                )
            raise ConfigError(
                "no database has both `sql:` sources and `migrations:`, so there is no bootstrap to check",
                hint="configure `migrations:` for a database, or use `provision check --live` to compare the live "
                "database with a fresh build",
            )
        plans = both
    # Under the lock: the scratch copies are then safe from (and safe for) a concurrent fresh,
    # and a killed check's copies are dropped by the next run as leftovers.
    with _locked(cfg, emit, "check", timeout=timeout) as (server, _):
        compare = drift.live_vs_build if live else drift.bootstrap_vs_migrations
        checks = tuple(compare(server, plan, emit, column_order) for plan in plans)
    return drift.CheckResult(checks, time.monotonic() - started)


# ---------------------------------------------------------------- status


def status(cfg: Config) -> StatusResult:
    """The server's state, and for each configured database: size, tables, Alembic, provenance; snapshots."""
    from . import dbops, snapshots
    from .pipeline import template_name

    state = make_target(cfg).server_state()
    ep = state.endpoint
    host, port = (ep.host, ep.port) if ep else (None, None)

    def result(
        version: str | None,
        error: str | None,
        databases: tuple[DatabaseStatus, ...] = (),
        templates: tuple[TemplateStatus, ...] = (),
        found: tuple[Snapshot, ...] = (),
    ) -> StatusResult:
        return StatusResult(
            cfg.target, state.container, state.state, state.image, host, port, state.volume, version,
            error is None, error, databases, templates, found,
        )  # fmt: skip

    if ep is None or state.error:
        return result(None, state.error)
    try:
        admin = dbops.connect(ep, application_name="provision status")
    except ProvisionError as exc:
        return result(None, str(exc))
    try:
        version = admin.server_version
        rows = dbops.list_databases(admin)
        databases = []
        templates = []
        for db in cfg.databases:
            current_hash: str | None = None
            plan: BuildPlan | None = None
            with contextlib.suppress(ProvisionError):
                plan = plan_database(cfg, db)
                current_hash = plan.content_hash(version)
            current_tpl = template_name(db.name, current_hash) if current_hash else None
            for name, row in rows.items():
                if name.startswith(dbops.derived_prefix(db.name, "tpl")):
                    record = read_provenance(row.comment) or {}
                    templates.append(
                        TemplateStatus(
                            name, db.name, _str(record.get("hash")), _str(record.get("built_at")), name == current_tpl
                        )
                    )
            if db.name not in rows:
                databases.append(DatabaseStatus(db.name, False, current_hash=current_hash))
                continue
            if not rows[db.name].allow_connections:
                databases.append(DatabaseStatus(db.name, True, current_hash=current_hash, accepting_connections=False))
                continue
            record = read_provenance(rows[db.name].comment) or {}
            with dbops.connection(ep, db.name, application_name="provision status") as conn:
                tables = dbops.table_count(conn)
                versions = dbops.alembic_versions(conn)
            recorded = _str(record.get("hash"))
            head, behind = _migration_state(plan, versions)
            databases.append(
                DatabaseStatus(
                    db.name,
                    True,
                    size_bytes=dbops.database_size(admin, db.name),
                    tables=tables,
                    alembic_versions=versions,
                    content_hash=recorded,
                    built_at=_str(record.get("built_at")),
                    provisioned_at=_str(record.get("provisioned_at")),
                    sources=record.get("sources") if isinstance(record.get("sources"), list) else None,  # type: ignore[arg-type]
                    current_hash=current_hash,
                    stale=None if recorded is None or current_hash is None else recorded != current_hash,
                    stale_reason=_stale_reason(record, plan, current_hash, behind),
                    alembic_head=head,
                    revisions_behind=behind,
                    restored_from=_str(record.get("restored_from")),
                )
            )
        found = tuple(snapshots.list_snapshots(admin, [db.name for db in cfg.databases]))
    finally:
        admin.close()
    pretty = f"{version // 10000}.{version % 10000}"
    return result(pretty, None, tuple(databases), tuple(templates), found)


def _stale_reason(
    record: dict[str, object], plan: BuildPlan | None, current: str | None, behind: int | None
) -> str | None:
    """Why a database differs from what its configuration builds now, in words; None when it does not."""
    if plan is None or current is None or record.get("hash") in (None, current):
        return None
    reasons = []
    sources = record.get("sources")
    built = (
        {str(p[0]): str(p[1]) for p in sources if isinstance(p, list) and len(p) == 2}
        if isinstance(sources, list)
        else {}
    )
    now = {f.display: f.sha256 for f in plan.files}
    changed = sorted(name for name in now.keys() | built.keys() if now.get(name) != built.get(name))
    if changed:
        reasons.append("sources changed: " + ", ".join(changed))
    was = _mapping(record.get("variables"))
    for name, value in sorted(dict(plan.variables).items()):
        if str(was.get(name)) != value:
            reasons.append(f"variable {name} is {was.get(name)} in the database, {value} in the config")
    if plan.migrations is not None:
        if _mapping(record.get("migrations")).get("inputs") != plan.migrations.digest:
            reasons.append("migrations changed")
        if behind:
            reasons.append(f"{behind} migration{'s' if behind != 1 else ''} pending")
    return "; ".join(reasons) or "built by another version of provision or of the server"


def _mapping(value: object) -> dict[str, object]:
    return value if isinstance(value, dict) else {}


def _migration_state(plan: BuildPlan | None, versions: list[str] | None) -> tuple[str | None, int | None]:
    """The head the configured Alembic migrations reach, and how many of them the database lacks."""
    if plan is None or plan.migrations is None or plan.migrations.alembic is None or plan.revision is None:
        return None, None
    return plan.revision, plan.migrations.alembic.behind(versions or [], plan.revision)


def _str(value: object) -> str | None:
    return None if value is None else str(value)


# ---------------------------------------------------------------- test support (the pytest plugin's library half)


def config_for_tests(cfg: Config) -> Config:
    """The config a test run uses: for the docker target its own container `<container>-test` on a
    free port, data in memory, fsync and friends off; a server target is used as it is."""
    return make_target(cfg).for_tests()


@dataclass(frozen=True)
class TemplateSet:
    """A ready server with an up-to-date template for each requested database."""

    endpoint: Endpoint
    templates: dict[str, str]
    up: UpResult


def ensure_templates(cfg: Config, names: Sequence[str] = (), *, on_event: EventFn | None = None) -> TemplateSet:
    """Bring the server up and make sure each database has a template for its current sources.

    A template is rebuilt only when its content hash changes. Serialised by the server-wide
    lock, so parallel test workers build each template once. Also drops pool copies left by
    test sessions that died.
    """
    from . import recycling
    from .errors import DriftDetected
    from .pipeline import ensure_template, prune_templates
    from .pool import remove_dead_copies

    emit = on_event or ignore
    plans = _selected(cfg, names, False)
    try:
        server, up_result = _ready(cfg, on_event=emit)
    except DriftDetected as exc:
        if not cfg.tmpfs:
            raise
        # A test server keeps its data in memory, so it holds nothing a rebuild loses.
        emit(Event("info", f"{exc}; recreating the test server"))
        server, up_result = _ready(cfg, recreate=True, on_event=emit)
    with _holding_lock(cfg, server, "templates", emit) as lock_conn:
        templates = {plan.name: ensure_template(server, plan, emit) for plan in plans}
        for name, tpl in templates.items():
            prune_templates(lock_conn, name, cfg.keep_templates, tpl, emit)
        remove_dead_copies(lock_conn, [plan.name for plan in plans], server.endpoint)
        if cfg.tmpfs:
            # provision's own throwaway test server: pool copies a test left unchanged are reused.
            recycling.enable(lock_conn)
    return TemplateSet(server.endpoint, templates, up_result)
