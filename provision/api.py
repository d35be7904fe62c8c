"""One function per verb: each takes a resolved Config and returns a result dataclass, and never prints."""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Literal

from . import session
from .build import snapshots
from .build.pipeline import Server
from .config import Config
from .errors import ConfigError, ProvisionError
from .events import EventFn, ignore
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
from .session import tables_at_risk
from .targets import make_target

if TYPE_CHECKING:
    from .build.drift import CheckResult
    from .build.snapshots import (
        Snapshot,
        SnapshotExportResult,
        SnapshotList,
        SnapshotRemoveResult,
        SnapshotRestoreResult,
        SnapshotSaveResult,
    )
    from .doctor import DoctorResult
    from .endpoint import Endpoint
    from .postgres.dbops import Connection

__all__ = [
    "Command",
    "DatabasePlan",
    "DatabaseStatus",
    "DownResult",
    "FreshPlan",
    "FreshResult",
    "StatusResult",
    "TemplateStatus",
    "UpResult",
    "check",
    "connect",
    "connect_admin",
    "database_url",
    "doctor",
    "down",
    "endpoint",
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
        create=True, recreate=recreate, timeout=session.timeout_of(cfg, timeout), on_event=on_event or ignore
    )
    server.close()
    return result


def wait(cfg: Config, *, timeout: float | None = None, on_event: EventFn | None = None) -> UpResult:
    """Wait until the (existing) server accepts logins."""
    target = make_target(cfg)
    server, result = target.ready(
        create=False, recreate=False, timeout=session.timeout_of(cfg, timeout), on_event=on_event or ignore
    )
    server.close()
    return result


def down(cfg: Config, *, volumes: bool = False) -> DownResult:
    """Remove the container; with volumes=True also its data volume (the caller confirms that)."""
    return make_target(cfg).down(volumes)


def logs(cfg: Config, *, follow: bool = False, tail: int | None = None) -> Iterator[bytes]:
    """The container's log, optionally following it."""
    return make_target(cfg).logs(follow, tail)


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
    from .postgres import dbops

    return dbops.connect(endpoint(cfg), _name(cfg, database))


def connect_admin(cfg: Config) -> Connection:
    """A connection to the server's maintenance database."""
    from .postgres import dbops

    return dbops.connect(endpoint(cfg))


# ---------------------------------------------------------------- fresh


def plan_fresh(cfg: Config, *, only: Sequence[str] = (), skip_demo: bool = False, use_cache: bool = True) -> FreshPlan:
    """What `fresh` would do, touching nothing (the dry run)."""
    plans = session.selected(cfg, only, skip_demo)
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
    from . import housekeeping
    from .build.pipeline import cleanup_leftovers, fresh_databases, housekeep
    from .postgres import dbops

    emit = on_event or ignore
    started = time.monotonic()
    use_cache = cfg.cache if use_cache is None else use_cache
    # Validates every source before anything is touched. Without the cache, the files are
    # hashed (for provenance) while they stream instead of in a pass of their own.
    plans = session.selected(cfg, only, skip_demo, hash_files=use_cache)
    server, up_result = session.ready(cfg, recreate=recreate, timeout=timeout, on_event=emit)

    with session.holding_lock(cfg, server, "fresh", emit, wait=wait_for_lock) as lock_conn:
        names = [p.name for p in plans]
        if not yes:
            session.confirm_replace(server, names, confirm)
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


def wait_for_housekeeping(cfg: Config, timeout: float = 120.0) -> None:
    """Block until the background tidy-up of earlier `fresh` runs on this machine has finished
    and no provisioner holds the server-wide lock (benchmarks and tests use it)."""
    from . import housekeeping

    housekeeping.wait(endpoint(cfg), timeout)


# ---------------------------------------------------------------- snapshots


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
    from .build.pipeline import cleanup_leftovers
    from .postgres import dbops

    emit = on_event or ignore
    started = time.monotonic()
    snapshots.validate_name(name)
    names = snapshots.targets_of(cfg, databases)
    with session.locked(cfg, emit, "snapshot") as (server, admin):
        cleanup_leftovers(admin, names, emit)
        if not databases:
            existing = dbops.list_databases(admin)
            names = [n for n in names if n in existing] or names
        snapshots.check_limit(cfg, admin, names, name)
        saved, replaced = [], []
        for database in names:
            snap, was_replaced = snapshots.save(server.endpoint, admin, database, name, force, emit)
            saved.append(snap)
            if was_replaced:
                replaced.append(database)
        mode = _tidy_after(cfg, server, names, emit)
    return snapshots.SnapshotSaveResult(name, tuple(saved), tuple(replaced), time.monotonic() - started, mode)


def snapshot_list(cfg: Config, *, databases: Sequence[str] = ()) -> SnapshotList:
    """Every snapshot of the configured databases, with sizes, and their total disk use."""

    names = snapshots.targets_of(cfg, databases)
    server, _ = make_target(cfg).ready(create=False, recreate=False, timeout=cfg.timeout, on_event=ignore)
    admin = server.admin_connection("provision snapshot")
    try:
        found = tuple(snapshots.list_snapshots(admin, names))
    finally:
        admin.close()
    limit = cfg.snapshot_limit_mb * 1_000_000 or None
    return snapshots.SnapshotList(found, sum(s.disk_bytes for s in found), limit)


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
    from .build.pipeline import cleanup_leftovers

    emit = on_event or ignore
    started = time.monotonic()
    with session.locked(cfg, emit, "snapshot") as (server, admin):
        found = snapshots.find(cfg, admin, name, databases)
        names = [s.database for s in found]
        if not yes:
            session.confirm_replace(server, names, confirm)
        cleanup_leftovers(admin, names, emit)
        done = snapshots.restore(admin, found, emit)
        mode = _tidy_after(cfg, server, names, emit)
    restored = tuple(snapshots.RestoredDatabase(s.database, *done[s.database], s.alembic_versions) for s in found)
    return snapshots.SnapshotRestoreResult(name, restored, time.monotonic() - started, mode)


def snapshot_rm(cfg: Config, name: str, *, databases: Sequence[str] = ()) -> SnapshotRemoveResult:
    """Remove snapshot `name` (and its standby) of each database that has one (or of `databases`)."""
    from .postgres import dbops

    with session.locked(cfg, ignore, "snapshot") as (_, admin):
        try:
            found = snapshots.find(cfg, admin, name, databases)
        except ConfigError:
            # What is left of a snapshot whose template was dropped by hand: its standby.
            leftovers = [
                s
                for s in snapshots.orphaned_standbys(admin, snapshots.targets_of(cfg, databases))
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

    from .errors import ServerError

    started = time.monotonic()
    target_path = Path(path)
    if not target_path.parent.is_dir():
        raise ConfigError(f"cannot write {target_path}: its directory does not exist")
    partial = target_path.with_name(target_path.name + ".partial")
    with session.locked(cfg, ignore, "snapshot", writes=False) as (server, admin):
        snap = snapshots.find(cfg, admin, name, [database or cfg.databases[0].name])[0]
        with snapshots.readable_copy(server, admin, snap) as source, partial.open("wb") as out:
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
    from .build import drift

    emit = on_event or ignore
    started = time.monotonic()
    plans = session.selected(cfg, only, False)
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
    with session.locked(cfg, emit, "check", timeout=timeout) as (server, _):
        compare = drift.live_vs_build if live else drift.bootstrap_vs_migrations
        checks = tuple(compare(server, plan, emit, column_order) for plan in plans)
    return drift.CheckResult(checks, time.monotonic() - started)


# ---------------------------------------------------------------- status


def status(cfg: Config) -> StatusResult:
    """The server's state, and for each configured database: size, tables, Alembic, provenance; snapshots."""
    from .build import staleness
    from .postgres import dbops

    state = make_target(cfg).server_state()
    ep = state.endpoint
    host, port = (ep.host, ep.port) if ep else (None, None)

    def result(
        version: str | None,
        error: str | None,
        databases: tuple[DatabaseStatus, ...] = (),
        templates: tuple[TemplateStatus, ...] = (),
        found: tuple[Snapshot, ...] = (),
        cow: str | None = None,
    ) -> StatusResult:
        return StatusResult(
            cfg.target, state.container, state.state, state.image, host, port, state.volume, version,
            error is None, error, databases, templates, found, cow,
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
        databases, templates = staleness.describe(cfg, ep, admin, rows, version)
        found = tuple(snapshots.list_snapshots(admin, [db.name for db in cfg.databases]))
        cow = dbops.copy_on_write_state(admin)
    finally:
        admin.close()
    pretty = f"{version // 10000}.{version % 10000}"
    return result(pretty, None, tuple(databases), tuple(templates), found, cow)
