"""The fresh pipeline: build into staging (or clone a cached template), verify, swap into place, tidy up."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import signal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from . import dbops
from .alembic_stamp import stamp_alembic
from .config import Config, DatabaseConfig, resolve_sql_files
from .dbops import Connection, Endpoint
from .errors import ProvisionError, VerifyFailed
from .retry import call_with_retries
from .sqlstream import BUILD_APP, PsqlRunner, SourceMap, describe_psql_failure, psql_args, stream_files

# Bump when what a build produces changes for the same sources, so old templates are not reused.
PIPELINE_VERSION = "2"


@dataclass(frozen=True)
class Event:
    """Progress reported to the caller; the library never prints."""

    kind: Literal["step", "info", "wait"]
    message: str
    database: str | None = None
    seconds: float | None = None


EventFn = Callable[[Event], None]


def _ignore(event: Event) -> None:
    return None


@dataclass(frozen=True)
class SourceFile:
    path: Path
    display: str
    sha256: str
    size: int


@dataclass(frozen=True)
class BuildPlan:
    """What one database is built from, resolved before anything is touched."""

    database: DatabaseConfig
    files: tuple[SourceFile, ...]
    variables: tuple[tuple[str, str], ...]

    @property
    def name(self) -> str:
        return self.database.name

    def with_digests(self, digests: Mapping[Path, str]) -> BuildPlan:
        """The same plan with the sha256 of files that were hashed while streaming."""
        files = tuple(replace(f, sha256=f.sha256 or digests[f.path]) for f in self.files)
        return replace(self, files=files)

    def content_hash(self, server_version: int) -> str:
        """Everything that decides what the build produces: sources, variables, revision, server major."""
        h = hashlib.sha256()
        parts = [
            PIPELINE_VERSION,
            str(server_version // 10000),
            self.database.alembic_revision or "",
            str(self.database.single_transaction),
            json.dumps(self.variables),
            *(f.sha256 for f in self.files),
        ]
        h.update("\x00".join(parts).encode())
        return h.hexdigest()


def plan_database(cfg: Config, db: DatabaseConfig, hash_files: bool = True) -> BuildPlan:
    """Resolve and check a database's sources. With hash_files=False the files' sha256 are left
    empty, to be filled in while they stream (see with_digests): a build that skips the cache
    then reads a large file once, not twice."""
    files = []
    for path in resolve_sql_files(cfg, db):
        digest = hashlib.sha256()
        if hash_files:
            with path.open("rb") as fh:
                while chunk := fh.read(1 << 20):
                    digest.update(chunk)
        try:
            display = str(path.relative_to(cfg.base_dir))
        except ValueError:
            display = path.name if "site-packages" in str(path) or "/sql/" in str(path) else str(path)
        files.append(SourceFile(path, display, digest.hexdigest() if hash_files else "", path.stat().st_size))
    variables = tuple(db.variables)
    if db.demo:
        variables += (("scale", str(cfg.demo_scale)),)
    return BuildPlan(db, tuple(files), variables)


@dataclass
class DatabaseResult:
    name: str
    action: Literal["built", "cloned", "spare"]
    seconds: float
    content_hash: str
    tables: int
    alembic_revision: str | None
    replaced: bool


@dataclass
class Server:
    """A ready server: where to connect, how to run psql, and the server's version."""

    endpoint: Endpoint
    runner: PsqlRunner
    server_version: int
    target: str = "docker"
    container: str | None = None


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def provenance(plan: BuildPlan, content_hash: str, kind: str, built_at: str, version: str, tables: int) -> str:
    record = {
        "provision": version,
        "kind": kind,
        "database": plan.name,
        "hash": content_hash,
        "alembic_revision": plan.database.alembic_revision,
        "sources": [[f.display, f.sha256] for f in plan.files],
        "variables": dict(plan.variables),
        "tables": tables,
        "built_at": built_at,
        "provisioned_at": _now(),
    }
    return json.dumps(record, separators=(",", ":"))


def read_provenance(comment: str | None) -> dict[str, object] | None:
    if not comment or not comment.startswith("{"):
        return None
    try:
        data = json.loads(comment)
    except ValueError:
        return None
    return data if isinstance(data, dict) and "hash" in data else None


def template_name(database: str, content_hash: str) -> str:
    return dbops.derived_name(database, "tpl", content_hash[:16])


def spare_name(database: str, content_hash: str) -> str:
    return dbops.derived_name(database, "spare", content_hash[:16])


def checkpoint(name: str) -> None:
    """Fault-injection hook for the kill -9 tests: PROVISION_KILL_AT=<name> kills this process here.

    Read at call time, never at import. Names: stage-created, sql-loaded, stamped,
    before-swap, swapped, housekeeping-leftovers-dropped, template-built, spare-created.
    """
    if os.environ.get("PROVISION_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def _token() -> str:
    return secrets.token_hex(4)


@contextlib.contextmanager
def _timed(on_event: EventFn, message: str, database: str | None) -> Iterator[None]:
    started = time.monotonic()
    yield
    on_event(Event("step", message, database, time.monotonic() - started))


# ---------------------------------------------------------------- building


def build_into(
    server: Server, plan: BuildPlan, name: str, on_event: EventFn = _ignore, source_map: SourceMap | None = None
) -> int:
    """Create `name` and build it from the plan: SQL sources, Alembic stamp, verification.

    Returns the number of tables; `source_map`, if given, gets the files' line spans and sha256.
    On any failure, Ctrl-C included, `name` is dropped again and the error is raised.
    """
    with dbops.connection(server.endpoint, application_name=BUILD_APP) as admin:
        dbops.create_database(admin, name)
        try:
            checkpoint("stage-created")
            source_map = SourceMap() if source_map is None else source_map
            with _timed(on_event, f"load {len(plan.files)} SQL file(s)", plan.name):
                output = server.runner.run(
                    name,
                    psql_args(plan.variables, plan.database.single_transaction),
                    stream_files([f.path for f in plan.files], source_map),
                )
            if output.exit_code != 0:
                raise describe_psql_failure(plan.name, output, source_map)
            checkpoint("sql-loaded")
            with dbops.connection(server.endpoint, name, application_name=BUILD_APP) as conn:
                if plan.database.alembic_revision:
                    with _timed(on_event, f"stamp alembic {plan.database.alembic_revision}", plan.name):
                        with dbops.server_errors(f"stamping alembic in {plan.name}"):
                            stamp_alembic(conn, plan.database.alembic_revision)
                    checkpoint("stamped")
                verify(conn, plan)
                return dbops.table_count(conn)
        except BaseException:
            with contextlib.suppress(Exception):
                dbops.drop_database(admin, name)
            raise


def verify(conn: Connection, plan: BuildPlan) -> None:
    missing = dbops.missing_tables(conn, plan.database.tables)
    if missing:
        raise VerifyFailed(
            f"{plan.name}: the SQL ran, but these expected tables are missing: {', '.join(missing)}",
            hint="check the SQL sources, or the `tables:` list for this database",
        )
    if plan.database.alembic_revision:
        versions = dbops.alembic_versions(conn)
        if versions != [plan.database.alembic_revision]:
            raise VerifyFailed(f"{plan.name}: alembic_version holds {versions}, expected one row")


def cleanup_leftovers(
    admin: Connection, names: Sequence[str], on_event: EventFn = _ignore, what: str = "leftovers of earlier runs"
) -> list[str]:
    """Drop staging and swapped-out copies: a crashed run's, or the ones this run just replaced. Call under the lock.

    A killed run's statements go on in the server (a CREATE DATABASE could still commit a
    staging copy later), so its build sessions are ended first; under the lock, every build
    session but this caller's is a dead run's.
    """
    dbops.terminate_application(admin, BUILD_APP)
    rows = dbops.list_databases(admin)
    dropped = []
    for database in names:
        prefixes = (dbops.derived_prefix(database, "stage"), dbops.derived_prefix(database, "old"))
        for row in rows:
            if row.startswith(prefixes):
                dbops.drop_database(admin, row)
                dropped.append(row)
    if dropped:
        on_event(Event("info", f"dropped {what}: {', '.join(sorted(dropped))}"))
    return dropped


@dataclass(frozen=True)
class Prepared:
    """A complete new copy of a database, under a private staging name, ready to swap in."""

    plan: BuildPlan
    stage: str
    action: Literal["built", "cloned", "spare"]
    content_hash: str
    built_at: str
    tables: int


def _from_cache(
    admin: Connection, plan: BuildPlan, content_hash: str, rows: dict[str, dbops.DatabaseRow], on_event: EventFn
) -> Prepared | None:
    """Take the spare copy of the cached template, or clone the template; None when there is none."""
    started = time.monotonic()
    tpl = template_name(plan.name, content_hash)
    if tpl not in rows or not rows[tpl].is_template:
        return None
    record = read_provenance(rows[tpl].comment) or {}
    built_at = str(record.get("built_at", _now()))
    tables = int(str(record.get("tables", 0)))
    stage = dbops.derived_name(plan.name, "stage", _token())
    spare = spare_name(plan.name, content_hash)
    if spare in rows:
        # Claimed under a staging name, so a crash from here on leaves a leftover, not a stale spare.
        dbops.rename_database(admin, spare, stage)
        on_event(Event("step", "take the spare copy of the cached template", plan.name, time.monotonic() - started))
        return Prepared(plan, stage, "spare", content_hash, built_at, tables)
    dbops.create_database(admin, stage, template=tpl)
    on_event(Event("step", "clone the cached template", plan.name, time.monotonic() - started))
    return Prepared(plan, stage, "cloned", content_hash, built_at, tables)


def _build(server: Server, plan: BuildPlan, version: str, on_event: EventFn, template_now: bool) -> Prepared:
    """Build from the SQL; with `template_now` also clone the result into the cache before it is swapped
    in (cheaper than building the template again later, when the caller waits for the tidy-up anyway)."""
    stage = dbops.derived_name(plan.name, "stage", _token())
    streamed = SourceMap()
    tables = build_into(server, plan, stage, on_event, streamed)
    plan = plan.with_digests(streamed.digests)
    content_hash = plan.content_hash(server.server_version)
    if template_now:
        try:
            ensure_template(server, plan, version, on_event, clone_from=(stage, tables))
        except BaseException:
            with contextlib.suppress(Exception), dbops.connection(server.endpoint, application_name=BUILD_APP) as admin:
                dbops.drop_database(admin, stage)
            raise
    return Prepared(plan, stage, "built", content_hash, _now(), tables)


def fresh_databases(
    server: Server,
    admin: Connection,
    plans: Sequence[BuildPlan],
    use_cache: bool,
    version: str,
    on_event: EventFn = _ignore,
    parallel: bool = True,
    template_now: bool = False,
) -> list[DatabaseResult]:
    """Get a new copy of every planned database privately, then swap them all into place in one transaction.

    `admin` is the caller's connection, which holds the provisioner lock. Cache hits are quick
    and run on it; builds run in parallel, each on its own connections. If anything fails,
    nothing is swapped and every staging copy is removed: the databases in place are untouched.
    """
    started = time.monotonic()
    prepared: list[Prepared] = []
    errors: list[BaseException] = []
    try:
        to_build = list(plans)
        if use_cache:
            rows = dbops.list_databases(admin)
            to_build = []
            for plan in plans:
                hit = _from_cache(admin, plan, plan.content_hash(server.server_version), rows, on_event)
                if hit is None:
                    to_build.append(plan)
                else:
                    prepared.append(hit)

        def work(plan: BuildPlan) -> None:
            try:
                prepared.append(_build(server, plan, version, on_event, use_cache and template_now))
            except BaseException as exc:  # noqa: BLE001 - collected and re-raised below
                errors.append(exc)

        if parallel and len(to_build) > 1:
            with ThreadPoolExecutor(max_workers=2, thread_name_prefix="provision-build") as pool:
                try:
                    list(pool.map(work, to_build))
                except KeyboardInterrupt:
                    # Ctrl-C reaches only this thread; end the builds' sessions in the server so
                    # their psql stops now instead of running to the end of its input.
                    with contextlib.suppress(Exception):
                        dbops.terminate_application(admin, BUILD_APP)
                    raise
        else:
            for plan in to_build:
                work(plan)
                if errors:
                    break
        if errors:
            raise next((e for e in errors if isinstance(e, ProvisionError)), errors[0])
        order = {plan.name: i for i, plan in enumerate(plans)}
        prepared.sort(key=lambda p: order[p.plan.name])
        results = _swap_all(admin, prepared, version, on_event)
    except BaseException:
        # Under the lock every staging copy of these databases is this run's (or a dead run's),
        # including one whose own clean-up was cut short by Ctrl-C.
        with contextlib.suppress(Exception):
            cleanup_leftovers(admin, [plan.name for plan in plans], what="this run's unfinished copies")
        raise
    for result in results:
        result.seconds = time.monotonic() - started
    return results


def _swap_all(admin: Connection, prepared: Sequence[Prepared], version: str, on_event: EventFn) -> list[DatabaseResult]:
    started = time.monotonic()
    existing = dbops.list_databases(admin)
    olds = {
        p.plan.name: dbops.derived_name(p.plan.name, "old", _token()) if p.plan.name in existing else None
        for p in prepared
    }
    batch = [
        dbops.Swap(
            p.plan.name,
            p.stage,
            olds[p.plan.name],
            provenance(p.plan, p.content_hash, "database", p.built_at, version, p.tables),
        )
        for p in prepared
    ]

    # A client can reconnect between terminating sessions and the rename; that is
    # ObjectInUse, and worth a few quick retries. Nothing else is retried.
    def swap() -> None:
        for p in prepared:
            if olds[p.plan.name]:
                dbops.terminate_sessions(admin, p.plan.name)
        checkpoint("before-swap")
        dbops.swap_in(admin, batch)
        checkpoint("swapped")

    with dbops.server_errors("swapping the new databases into place"):
        call_with_retries(swap, retry_on=dbops.ObjectInUse, interval=0.05, timeout=10)
    on_event(
        Event("step", f"swap {', '.join(p.plan.name for p in prepared)} into place", None, time.monotonic() - started)
    )
    return [
        DatabaseResult(
            name=p.plan.name,
            action=p.action,
            seconds=0.0,
            content_hash=p.content_hash,
            tables=p.tables,
            alembic_revision=p.plan.database.alembic_revision,
            replaced=olds[p.plan.name] is not None,
        )
        for p in prepared
    ]


# ---------------------------------------------------------------- templates and housekeeping


def ensure_template(
    server: Server,
    plan: BuildPlan,
    version: str,
    on_event: EventFn = _ignore,
    clone_from: tuple[str, int] | None = None,
) -> str:
    """Make sure the template for the plan's current content exists; build it if not. Call under the lock.

    `clone_from` is (name, table count) of a database just built from the same plan that nobody
    else can reach (a staging copy): cloning it is cheaper than building again.
    """
    content_hash = plan.content_hash(server.server_version)
    tpl = template_name(plan.name, content_hash)
    with dbops.connection(server.endpoint, application_name=BUILD_APP) as admin:
        row = dbops.list_databases(admin).get(tpl)
        if row is not None and row.is_template:
            return tpl
        if row is not None:
            dbops.drop_database(admin, tpl)
    stage = dbops.derived_name(plan.name, "stage", _token())
    message = "clone the new copy as the cached template" if clone_from else "build the cached template"
    with _timed(on_event, message, plan.name):
        if clone_from:
            with dbops.connection(server.endpoint, application_name=BUILD_APP) as admin:
                dbops.create_database(admin, stage, template=clone_from[0])
            tables = clone_from[1]
        else:
            tables = build_into(server, plan, stage, on_event)
        try:
            with dbops.connection(server.endpoint, application_name=BUILD_APP) as admin:
                comment = provenance(plan, content_hash, "template", _now(), version, tables)
                with dbops.server_errors(f"marking the template of {plan.name}"):
                    dbops.swap_in(admin, [dbops.Swap(tpl, stage, None, comment)], make_template=True)
        except BaseException:
            with contextlib.suppress(Exception), dbops.connection(server.endpoint, application_name=BUILD_APP) as admin:
                dbops.drop_database(admin, stage)
            raise
    return tpl


def housekeep(
    server: Server,
    plans: Sequence[BuildPlan],
    keep_templates: int,
    use_cache: bool,
    version: str,
    on_event: EventFn = _ignore,
) -> None:
    """Drop swapped-out copies, make sure each database has a template and one spare copy, prune old templates.

    Call under the lock. Every step is safe to interrupt: the next run finishes the job.
    """
    with dbops.connection(server.endpoint, application_name=BUILD_APP) as admin:
        cleanup_leftovers(admin, [p.name for p in plans], on_event, what="the replaced copies")
    checkpoint("housekeeping-leftovers-dropped")
    if not use_cache:
        return
    for plan in plans:
        content_hash = plan.content_hash(server.server_version)
        tpl = ensure_template(server, plan, version, on_event)
        checkpoint("template-built")
        spare = spare_name(plan.name, content_hash)
        with dbops.connection(server.endpoint, application_name=BUILD_APP) as admin:
            rows = dbops.list_databases(admin)
            for name in rows:
                if name.startswith(dbops.derived_prefix(plan.name, "spare")) and name != spare:
                    dbops.drop_database(admin, name)
            if spare not in rows:
                with _timed(on_event, "clone a spare copy for the next run", plan.name):
                    dbops.create_database(admin, spare, template=tpl)
                checkpoint("spare-created")
            prune_templates(admin, plan.name, keep=keep_templates, current=tpl, on_event=on_event)


def prune_templates(
    admin: Connection, database: str, keep: int, current: str, on_event: EventFn = _ignore
) -> list[str]:
    """Keep the newest `keep` templates of `database` (always the current one); drop the rest."""
    prefix = dbops.derived_prefix(database, "tpl")
    rows = dbops.list_databases(admin)
    templates = []
    for name, row in rows.items():
        if name.startswith(prefix):
            built = read_provenance(row.comment) or {}
            templates.append((str(built.get("built_at", "")), name))
    templates.sort(reverse=True)
    keep_names = {current} | {name for _, name in templates[:keep]}
    dropped = [name for _, name in templates if name not in keep_names]
    for name in dropped:
        dbops.drop_database(admin, name)
    if dropped:
        on_event(Event("info", f"pruned {len(dropped)} old template(s) of {database}"))
    return dropped
