"""One function per verb: each takes a resolved Config and returns a result dataclass, and never prints."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from . import session
from .builds import branches, snapshots
from .builds.pipeline import Server
from .config import Config
from .errors import ConfigError, ProvisionError
from .events import Event, EventFn, ignore
from .results import (
    BranchList,
    BranchPruneResult,
    BranchSwitchResult,
    CheckResult,
    Command,
    DatabasePlan,
    DatabaseStatus,
    DoctorResult,
    DownResult,
    FreshPlan,
    FreshResult,
    HookResult,
    RestoredDatabase,
    Snapshot,
    SnapshotExportResult,
    SnapshotList,
    SnapshotRemoveResult,
    SnapshotRestoreResult,
    SnapshotSaveResult,
    StatusResult,
    TemplateStatus,
    UpResult,
)
from .targets import make_target

if TYPE_CHECKING:
    from .builds.leases import GcResult, Lease, LeaseList, LeaseResult
    from .endpoint import Endpoint
    from .postgres.dbops import Connection


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
    out = tuple(
        DatabasePlan(plan.name, plan.steps(use_cache), plan.files, plan.database.alembic_revision, dict(plan.variables))
        for plan in plans
    )
    return FreshPlan(cfg.target, make_target(cfg).container, out)


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
    from .builds.pipeline import cleanup_leftovers, fresh_databases, housekeep
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
        here = branches.checkout_or_none(cfg.base_dir)
        note = branches.note_for(lock_conn, names, here, replacing=True)
        if note:
            emit(Event("info", note))
        if not yes:
            session.confirm_replace(server, names, confirm)
        cleanup_leftovers(lock_conn, names, emit)
        results = fresh_databases(server, lock_conn, plans, use_cache, emit, template_now=cfg.cleanup == "sync")
        branches.mark_here(cfg, lock_conn, names, here)
        mode: Literal["background", "sync"]
        if cfg.cleanup == "background":
            dbops.release_lock(lock_conn)
            lock_conn.close()
            housekeeping.spawn(cfg, server.endpoint, names, use_cache)
            mode = "background"
        else:
            housekeep(server, plans, cfg.keep_templates, use_cache, emit)
            mode = "sync"
    return FreshResult(tuple(results), time.monotonic() - started, mode, up_result, note)


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
    from .builds.pipeline import cleanup_leftovers
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
        snapshots.check_limit(cfg, admin, names, name, branches.kept_bytes(admin, [db.name for db in cfg.databases]))
        saved, replaced = [], []
        for database in names:
            snap, was_replaced = snapshots.save(server.endpoint, admin, database, name, force, emit)
            saved.append(snap)
            if was_replaced:
                replaced.append(database)
        mode = _tidy_after(cfg, server, names, emit)
    return SnapshotSaveResult(name, tuple(saved), tuple(replaced), time.monotonic() - started, mode)


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
    return SnapshotList(found, sum(s.disk_bytes for s in found), limit)


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
    from .builds.pipeline import cleanup_leftovers

    emit = on_event or ignore
    started = time.monotonic()
    with session.locked(cfg, emit, "snapshot") as (server, admin):
        found = snapshots.find(cfg, admin, name, databases)
        names = [s.database for s in found]
        if not yes:
            session.confirm_replace(server, names, confirm)
        cleanup_leftovers(admin, names, emit)
        done = snapshots.restore(admin, found, emit)
        branches.mark_here(cfg, admin, names, branches.checkout_or_none(cfg.base_dir))
        mode = _tidy_after(cfg, server, names, emit)
    restored = tuple(RestoredDatabase(s.database, *done[s.database], s.alembic_versions) for s in found)
    return SnapshotRestoreResult(name, restored, time.monotonic() - started, mode)


def snapshot_rm(cfg: Config, name: str, *, databases: Sequence[str] = ()) -> SnapshotRemoveResult:
    """Remove snapshot `name` (and its standby) of each database that has one (or of `databases`)."""
    with session.locked(cfg, ignore, "snapshot") as (_, admin):
        return SnapshotRemoveResult(name, tuple(snapshots.remove_named(cfg, admin, name, databases)))


def snapshot_export(
    cfg: Config, name: str, path: str | os.PathLike[str], *, database: str | None = None
) -> SnapshotExportResult:
    """Write snapshot `name` of `database` (default: the first configured) as a `pg_dump -Fc` file,
    made by the server's own pg_dump (the local one for a server target) and streamed to disk.

    The file appears only when the dump is complete (it is written beside it, then renamed)."""

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
    return SnapshotExportResult(name, snap.database, str(target_path), size, time.monotonic() - started)


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
    return DoctorResult(tuple(found))


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
    from .builds import drift

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
    return CheckResult(checks, time.monotonic() - started)


# ---------------------------------------------------------------- status


def status(cfg: Config) -> StatusResult:
    """The server's state, and for each configured database: size, tables, Alembic, provenance; snapshots."""
    from .builds import staleness
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
            error is None, error, databases, templates, found, copy_on_write=cow,
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
        note = branches.note_for(admin, [db.name for db in cfg.databases], branches.checkout_or_none(cfg.base_dir))
        cow = dbops.copy_on_write_state(admin)
    finally:
        admin.close()
    pretty = f"{version // 10000}.{version % 10000}"
    return dataclasses.replace(result(pretty, None, tuple(databases), tuple(templates), found, cow), branch_note=note)


# ---------------------------------------------------------------- dev databases that follow the git branch


def branch_switch(
    cfg: Config,
    *,
    yes: bool = False,
    confirm: Callable[[Sequence[str]], bool] | None = None,
    on_event: EventFn | None = None,
) -> BranchSwitchResult:
    """Put the checked-out git branch's databases in place, keeping the current ones under their branch.

    Its copies come back by a rename when their content hash matches the sources now; otherwise they
    are built (a warm `fresh`). Copies that hold data are only dropped (stale or superseded ones)
    with yes=True or when `confirm` agrees. NoGitBranch outside git or on a detached HEAD."""
    from .builds.pipeline import cleanup_leftovers
    from .gitrepo import checkout

    emit = on_event or ignore
    started = time.monotonic()
    here = checkout(cfg.base_dir)
    # The sources are hashed while the server is made ready: the hook waits for both.
    planning = session.in_background(lambda: session.selected(cfg, (), False))
    with session.locked(cfg, emit, "branch") as (server, admin):
        plans = planning()
        cleanup_leftovers(admin, [p.name for p in plans], emit)
        agree = (lambda _: True) if yes else confirm
        moves = branches.switch(cfg, server, admin, plans, here.branch, agree, emit)
    branches.remember(cfg, here, here.branch)
    return BranchSwitchResult(here.branch, moves, time.monotonic() - started)


def branch_list(cfg: Config) -> BranchList:
    """Each branch's databases (in place or put aside), their size and when they were last used."""
    from .gitrepo import local_branches

    here = branches.checkout_or_none(cfg.base_dir)
    names = [db.name for db in cfg.databases]
    server, _ = make_target(cfg).ready(create=False, recreate=False, timeout=cfg.timeout, on_event=ignore)
    admin = server.admin_connection("provision branch")
    try:
        in_git = local_branches(here.top) if here else None
        listed = branches.listing(admin, names, here.branch if here else None, in_git)
    finally:
        admin.close()
    return dataclasses.replace(listed, limit_bytes=cfg.snapshot_limit_mb * 1_000_000 or None)


def branch_prune(
    cfg: Config,
    *,
    merged: bool = False,
    yes: bool = False,
    confirm: Callable[[Sequence[str]], bool] | None = None,
) -> BranchPruneResult:
    """Drop the copies of branches deleted from git (with merged=True also of branches merged into the
    one checked out). They are the only copy of those branches' data: yes=True or `confirm` must agree."""
    from .errors import Refused
    from .gitrepo import checkout, local_branches, merged_branches

    here = checkout(cfg.base_dir)
    in_git = local_branches(here.top)
    keep = in_git - merged_branches(here.top) if merged else in_git
    names = [db.name for db in cfg.databases]
    with session.locked(cfg, ignore, "branch") as (_, admin):
        found = branches.copies(admin, names)
        doomed = sorted({c.branch for c in found if not c.live and c.branch not in keep and c.branch != here.branch})
        if doomed and not (yes or (confirm is not None and confirm(doomed))):
            raise Refused(
                f"not dropping the databases of {', '.join(doomed)} without confirmation: they are the only copy "
                "of those branches' data",
                hint="pass --yes to drop them",
            )
        dropped, freed = branches.prune(admin, names, doomed)
    return BranchPruneResult(tuple(doomed), tuple(dropped), freed)


def branch_install_hook(cfg: Config, *, force: bool = False) -> HookResult:
    """Install the git post-checkout hook that runs `provision branch` when a checkout changes the branch.

    A checkout that stays on the branch the databases follow ends in the shell, before any Python.
    Refused when another post-checkout hook exists (unless force)."""

    return branches.install_hook(cfg, force)


# ---------------------------------------------------------------- leases on a shared server


@contextlib.contextmanager
def _registry(cfg: Config) -> Iterator[tuple[Connection, Connection]]:
    """(registry, maintenance) connections to the configured server, the registry created on first use."""
    from .builds import leases
    from .postgres import dbops

    ep = endpoint(cfg)
    with dbops.connection(ep, application_name=leases.APP) as admin:
        reg = leases.connect_registry(ep, admin)
        try:
            yield reg, admin
        finally:
            reg.close()


def lease(
    cfg: Config,
    database: str | None = None,
    *,
    ttl: float | None = None,
    name: str | None = None,
    timeout: float | None = None,
    on_event: EventFn | None = None,
) -> LeaseResult:
    """Lease a private copy of `database` (default: the first configured) built from the current sources.

    The template for their content hash is built once, by whichever client gets there first. The
    lease expires `ttl` seconds from now (default `lease_ttl`) unless renewed; then whichever client
    runs next drops the copy. A `name` is found again by the next call with that name (refreshed
    from the new template when the sources changed). CapReached when `lease_max_bytes` would be
    passed even after evicting expired leases and unused templates."""
    from .builds import leases
    from .builds.pipeline import plan_database

    emit = on_event or ignore
    started = time.monotonic()
    plan = plan_database(cfg, cfg.database(_name(cfg, database)))
    server, _ = make_target(cfg).ready(
        create=True, recreate=False, timeout=session.timeout_of(cfg, timeout), on_event=emit
    )
    admin = server.admin_connection(leases.APP)
    try:
        reg = leases.connect_registry(server.endpoint, admin)
        try:
            got = leases.lease(
                server, reg, admin, plan, ttl=cfg.lease_ttl if ttl is None else ttl, name=name,
                cap=cfg.lease_max_bytes, emit=emit,
            )  # fmt: skip
        finally:
            reg.close()
        top_up = bool(cfg.lease_spares) and leases.needs_spares(
            admin, plan.name, got.lease.content_hash, cfg.lease_spares
        )
    finally:
        admin.close()
    ep = server.endpoint
    if top_up:
        from . import spares

        job = spares.SpareJob(ep, plan.name, got.lease.content_hash, cfg.lease_spares, cfg.lease_max_bytes)
        if cfg.cleanup == "sync":
            spares.top_up(job)
        else:
            spares.spawn(job)
    seconds = time.monotonic() - started
    return leases.LeaseResult(
        got.lease, got.action, got.built_template, got.from_spare, ep.dsn(got.lease.copy), ep.host, ep.port,
        ep.user, got.evicted, got.expired, seconds,
    )  # fmt: skip


def lease_renew(cfg: Config, name: str, *, ttl: float | None = None) -> Lease:
    """Extend lease `name` to `ttl` seconds from now (default `lease_ttl`); UnknownLease once it expired."""
    from .builds import leases
    from .postgres import dbops

    with dbops.connection(endpoint(cfg), leases.REGISTRY_DB, application_name=leases.APP) as reg:
        return leases.renew(reg, name, cfg.lease_ttl if ttl is None else ttl)


def lease_release(cfg: Config, name: str) -> Lease:
    """Drop lease `name` and its copy now."""
    from .builds import leases

    with _registry(cfg) as (reg, admin):
        return leases.release(reg, admin, name)


def lease_list(cfg: Config) -> LeaseList:
    """Every lease on the server (expired ones too, until collected), the templates, and their disk use."""
    from .builds import leases

    with _registry(cfg) as (reg, _):
        return leases.listing(reg, cfg.lease_max_bytes)


def lease_gc(cfg: Config) -> GcResult:
    """Drop the copies of expired leases and copies no lease names (from cron, or any client)."""
    from .builds import leases

    with _registry(cfg) as (reg, admin):
        return leases.collect(reg, admin)
