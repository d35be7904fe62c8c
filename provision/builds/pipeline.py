"""The fresh pipeline: build into staging (or clone a cached template), verify, swap into place, tidy up."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shlex
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ..checkpoints import checkpoint
from ..config import Config, DatabaseConfig, SeedConfig, resolve_sql_files
from ..endpoint import Endpoint
from ..errors import ConfigError, ProvisionError, VerifyFailed
from ..events import Event, EventFn, ignore
from ..names import derived_name, derived_prefix, spare_name, template_name
from ..postgres import dbops
from ..postgres.dbops import Connection
from ..postgres.retry import call_with_retries
from ..postgres.sqlstream import (
    BUILD_APP,
    PsqlRunner,
    SourceMap,
    describe_psql_failure,
    describe_restore_failure,
    psql_args,
    restore_args,
    source_kind,
    stream_dump,
    stream_files,
)
from ..results import DatabaseResult, SourceFile
from .alembic_stamp import stamp_alembic

if TYPE_CHECKING:
    from .appcommand import CommandPlan
    from .migrations import MigrationPlan

# Private copies that exist only while a run holds the lock: whatever is left of them is a dead run's.
LEFTOVER_KINDS = ("stage", "old", "check")
# Bump when what a build produces changes for the same sources, so old templates are not reused.
PIPELINE_VERSION = "3"


@dataclass(frozen=True)
class BuildPlan:
    """What one database is built from, resolved before anything is touched."""

    database: DatabaseConfig
    files: tuple[SourceFile, ...]
    variables: tuple[tuple[str, str], ...]
    migrations: MigrationPlan | None = None
    seed_files: tuple[SourceFile, ...] = ()  # run by psql after the migrations
    seed: CommandPlan | None = None  # run after the seed files
    # Every database the config manages: none of them accepts new connections while an app's
    # command (migrations, seed) runs against the copy (seal.py).
    live: tuple[str, ...] = ()

    @property
    def runs_commands(self) -> bool:
        """Whether the build runs the app's own commands, which can be slow and are worth not repeating."""
        return self.migrations is not None or self.seed is not None

    @property
    def name(self) -> str:
        return self.database.name

    @property
    def revision(self) -> str | None:
        """The Alembic revision the build ends at: the migrations' target, else the stamp."""
        if self.migrations is not None and self.migrations.alembic is not None:
            return self.migrations.revision
        return self.database.alembic_revision

    def steps(self, use_cache: bool) -> tuple[str, ...]:
        """What building this database does, in words (the dry run)."""
        steps = [
            f"build {self.name} into a staging database"
            + (" (or clone the cached template when its content hash matches)" if use_cache else "")
        ]
        if self.files:
            steps.append(
                f"run {len(self.files)} SQL file(s) with psql -v ON_ERROR_STOP=1"
                + (" --single-transaction" if self.database.single_transaction else "")
            )
        if self.database.alembic_revision:
            steps.append(f"stamp alembic_version = {self.database.alembic_revision}")
        if self.migrations:
            runner = self.migrations.runner
            to = f" (to {self.revision})" if self.migrations.alembic else ""
            names = f", and {', '.join(k for k, _ in runner.env)} from `env:`" if runner.env else ""
            steps.append(
                f"run the migrations{to}: {shlex.join(self.migrations.command())} in {runner.cwd}, "
                f"with the copy's URL in ${runner.url_env}{names}"
            )
        if self.seed_files:
            steps.append(f"seed: run {len(self.seed_files)} SQL file(s) with psql")
        if self.seed is not None:
            steps.append(f"seed: {shlex.join(self.seed.argv)} in {self.seed.cwd}")
        if self.runs_commands:
            steps.append(f"while the app's commands run, {', '.join(self.live)} accept no new connections")
        if self.database.tables:
            steps.append(f"verify {len(self.database.tables)} expected table(s)")
        steps.append(f"terminate sessions on {self.name}, swap the new copy into place, drop the old one")
        return tuple(steps)

    def with_digests(self, digests: Mapping[Path, str]) -> BuildPlan:
        """The same plan with the sha256 of files that were hashed while streaming."""
        files = tuple(replace(f, sha256=f.sha256 or digests[f.path]) for f in self.files)
        return replace(self, files=files)

    def content_hash(self, server_version: int) -> str:
        """Everything that decides what the build produces: sources, variables, revision, migrations, server major."""
        h = hashlib.sha256()
        parts = [
            PIPELINE_VERSION,
            str(server_version // 10000),
            self.database.alembic_revision or "",
            str(self.database.single_transaction),
            json.dumps(self.variables),
            *(f.sha256 for f in self.files),
        ]
        if self.migrations is not None:
            parts += [
                "migrations",
                self.migrations.digest,
                self.migrations.revision or "",
                self.migrations.runner.url_env,
            ]
        if self.database.extensions:
            # Only when set, so the hash of a database without extensions stays what it was.
            parts += ["extensions", *self.database.extensions]
        if self.seed_files or self.seed is not None:
            parts += ["seed", *(f.sha256 for f in self.seed_files), self.seed.digest if self.seed else ""]
        h.update("\x00".join(parts).encode())
        return h.hexdigest()


def plan_database(cfg: Config, db: DatabaseConfig, hash_files: bool = True) -> BuildPlan:
    """Resolve and check a database's sources and migrations. With hash_files=False the files' sha256
    are left empty, to be filled in while they stream (see with_digests): a build that skips the
    cache then reads a large file once, not twice."""
    files = [_source_file(cfg, path, hash_files) for path in resolve_sql_files(cfg, db)]
    variables = tuple(db.variables)
    if db.demo:
        variables += (("scale", str(cfg.demo_scale)),)
    migrations = None
    if db.migrations is not None:
        from .migrations import plan_migrations

        migrations = plan_migrations(cfg, db.name, db.migrations)
        stamp = db.alembic_revision
        if migrations.alembic is not None and stamp and stamp not in migrations.alembic.revisions:
            raise ConfigError(
                f"databases.{db.name}: alembic_revision {stamp!r} is not among the migrations, so they cannot "
                f"continue from it ({cfg.source})",
                hint="set alembic_revision to the revision the SQL sources correspond to",
            )
    seed_files = tuple(_source_file(cfg, path, True) for path in resolve_sql_files(cfg, db, seed=True))
    seed = _plan_seed(cfg, db.name, db.seed) if db.seed is not None and db.seed.command else None
    live = tuple(d.name for d in cfg.databases)
    return BuildPlan(db, tuple(files), variables, migrations, seed_files, seed, live)


def _source_file(cfg: Config, path: Path, hash_files: bool) -> SourceFile:
    digest = hashlib.sha256()
    if hash_files:
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    try:
        display = str(path.relative_to(cfg.base_dir))
    except ValueError:
        display = path.name if "site-packages" in str(path) or "/sql/" in str(path) else str(path)
    with path.open("rb") as fh:
        kind = source_kind(fh.read(8))
    return SourceFile(path, display, digest.hexdigest() if hash_files else "", path.stat().st_size, kind)


def _plan_seed(cfg: Config, database: str, spec: SeedConfig) -> CommandPlan:
    """The seed command, and the files whose change means a rebuild: `inputs:`, else the files its arguments name."""
    from .appcommand import expand_input, plan_command

    where = f"databases.{database}.seed in {cfg.source}"
    cwd = cfg.base_dir / os.path.expanduser(spec.cwd) if spec.cwd else cfg.base_dir
    inputs: list[Path] = []
    for entry in spec.inputs:
        inputs += expand_input(cfg.base_dir, entry, where, "seed")
    if not spec.inputs:
        inputs = [(cwd / arg).resolve() for arg in spec.command[1:] if (cwd / arg).is_file()]
        if not inputs:
            raise ConfigError(
                f"{where}: nothing says when the seed changes: none of the command's arguments is a file",
                hint="list the seed script (and what it reads) under `seed.inputs:`, so editing it rebuilds",
            )
    return plan_command(
        "seed",
        spec.command,
        cwd=cwd,
        url_env=spec.url_env,
        env=spec.env,
        timeout=spec.timeout,
        inputs=inputs,
        where=where,
    )


@dataclass
class Server:
    """A ready server: where to connect, how to run psql, and the server's version."""

    endpoint: Endpoint
    runner: PsqlRunner
    server_version: int
    # The connection that proved readiness, until someone takes it (see admin_connection).
    spare_conn: Connection | None = field(default=None, repr=False)

    def admin_connection(self, application_name: str) -> Connection:
        """A connection to the maintenance database: the readiness check's, the first time (a
        login costs several ms of SCRAM), a new one after that."""
        conn, self.spare_conn = self.spare_conn, None
        if conn is None or conn.closed:
            return dbops.connect(self.endpoint, application_name=application_name)
        with dbops.server_errors("naming the session"):
            dbops.execute(conn, "SELECT set_config('application_name', %s, false)", [application_name])
        return conn

    def close(self) -> None:
        """Close the readiness check's connection if nobody took it."""
        if self.spare_conn is not None:
            self.spare_conn.close()
            self.spare_conn = None


def now() -> str:
    """The time now, as provenance and snapshot records write it."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def provenance(plan: BuildPlan, content_hash: str, kind: str, built_at: str, tables: int) -> str:
    from ..version import __version__

    record: dict[str, object] = {
        "provision": __version__,
        "kind": kind,
        "database": plan.name,
        "hash": content_hash,
        "alembic_revision": plan.revision,
        "sources": [[f.display, f.sha256] for f in plan.files],
        "variables": dict(plan.variables),
        "tables": tables,
        "built_at": built_at,
        "provisioned_at": now(),
    }
    if plan.migrations is not None:
        record["migrations"] = {"inputs": plan.migrations.digest, "revision": plan.migrations.revision}
    return json.dumps(record, separators=(",", ":"))


def read_comment(comment: str | None) -> dict[str, object] | None:
    """The JSON record provision keeps in a database's comment; None for any other comment."""
    if not comment or not comment.startswith("{"):
        return None
    try:
        data = json.loads(comment)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def read_provenance(comment: str | None) -> dict[str, object] | None:
    data = read_comment(comment)
    return data if data is not None and "hash" in data else None


def _token() -> str:
    return secrets.token_hex(4)


@contextlib.contextmanager
def _timed(on_event: EventFn, message: str, database: str | None) -> Iterator[None]:
    started = time.monotonic()
    yield
    on_event(Event("step", message, database, time.monotonic() - started))


# ---------------------------------------------------------------- building


@contextlib.contextmanager
def dropped_on_failure(endpoint: Endpoint, name: str) -> Iterator[None]:
    """On any failure inside, Ctrl-C included, drop `name` (a private copy) and re-raise."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception), dbops.connection(endpoint, application_name=BUILD_APP) as admin:
            dbops.drop_database(admin, name)
        raise


def build_into(
    server: Server,
    plan: BuildPlan,
    name: str,
    on_event: EventFn = ignore,
    source_map: SourceMap | None = None,
    migrate_to: str | None = None,
    seed: bool = True,
) -> int:
    """Create `name` and build it from the plan: SQL sources, Alembic stamp, migrations, seed, verification.

    Returns the number of tables; `source_map`, if given, gets the files' sha256 (hashed as they stream).
    `migrate_to` runs the migrations to that revision instead of the plan's, and `seed=False` leaves
    the seed out (`provision check` compares schemas).
    On any failure, Ctrl-C included, `name` is dropped again and the error is raised.
    """
    with dbops.connection(server.endpoint, application_name=BUILD_APP) as admin:
        dbops.create_database(admin, name)
    with dropped_on_failure(server.endpoint, name):
        checkpoint("stage-created")
        if plan.database.extensions:
            with (
                _timed(on_event, f"create extensions {', '.join(plan.database.extensions)}", plan.name),
                dbops.connection(server.endpoint, name, application_name=BUILD_APP) as conn,
            ):
                dbops.create_extensions(conn, plan.name, plan.database.extensions)
        if plan.files:
            source_map = SourceMap() if source_map is None else source_map
            for segment in _segments(plan.files):
                _load(server, plan, name, segment, source_map, on_event)
            checkpoint("sql-loaded")
        if plan.database.alembic_revision:
            with (
                _timed(on_event, f"stamp alembic {plan.database.alembic_revision}", plan.name),
                dbops.connection(server.endpoint, name, application_name=BUILD_APP) as conn,
                dbops.server_errors(f"stamping alembic in {plan.name}"),
            ):
                stamp_alembic(conn, plan.database.alembic_revision)
            checkpoint("stamped")
        if plan.migrations is not None:
            target = migrate_to or plan.revision
            with _timed(on_event, f"run the migrations{' to ' + target if target else ''}", plan.name):
                plan.migrations.run(server.endpoint, name, plan.name, revision=migrate_to, live=plan.live)
            checkpoint("migrated")
        if seed and (plan.seed_files or plan.seed is not None):
            _seed(server, plan, name, on_event)
            checkpoint("seeded")
        with dbops.connection(server.endpoint, name, application_name=BUILD_APP) as conn:
            verify(conn, plan, migrate_to or plan.revision)
            return dbops.table_count(conn)


def _seed(server: Server, plan: BuildPlan, name: str, on_event: EventFn) -> None:
    """The seed step: its SQL files through psql, then its command, all against the copy `name`."""
    if plan.seed_files:
        seeding = replace(plan, files=plan.seed_files)
        digests = SourceMap()
        for segment in _segments(plan.seed_files):
            _load(server, seeding, name, segment, digests, on_event, what="seed")
    if plan.seed is not None:
        from . import appcommand

        with _timed(on_event, "run the seed command", plan.name):
            appcommand.run(plan.seed, plan.seed.argv, server.endpoint, name, plan.name, plan.live)


# A long load reports its progress this often: often enough for a live display, cheap enough not to show.
PROGRESS_SECONDS = 0.5


def _progress(database: str, files: Sequence[SourceFile], on_event: EventFn) -> Callable[[int], None]:
    """Counts the bytes read of `files` and reports them as "progress" events, every PROGRESS_SECONDS."""
    total = sum(f.size for f in files)
    started = time.monotonic()
    state = {"done": 0, "next": started + PROGRESS_SECONDS}
    label = files[0].display if len(files) == 1 else f"{len(files)} SQL files"

    def count(read: int) -> None:
        state["done"] += read
        now = time.monotonic()
        if now >= state["next"] or state["done"] >= total:
            state["next"] = now + PROGRESS_SECONDS
            on_event(Event("progress", label, database, now - started, int(state["done"]), total))

    return count


def _segments(files: Sequence[SourceFile]) -> list[list[SourceFile]]:
    """Consecutive SQL files go through one psql; each pg_dump custom-format file through its own pg_restore."""
    out: list[list[SourceFile]] = []
    for f in files:
        if f.kind != "dump" and out and out[-1][0].kind != "dump":
            out[-1].append(f)
        else:
            out.append([f])
    return out


def _load(
    server: Server,
    plan: BuildPlan,
    name: str,
    segment: Sequence[SourceFile],
    digests: SourceMap,
    on_event: EventFn,
    what: str = "SQL",
) -> None:
    """Load one segment of the sources into `name`; the caller's map collects every file's sha256."""
    single = plan.database.single_transaction
    if segment[0].kind == "dump":
        dump = segment[0]
        with _timed(on_event, f"restore {dump.display} with pg_restore", plan.name):
            output = server.runner.run(name, restore_args(single), stream_dump(dump.path, digests), "pg_restore")
        if output.exit_code != 0:
            raise describe_restore_failure(plan.name, output, dump.display)
        return
    # Line numbers count from this psql's input: a map of its own, its digests passed on.
    lines = SourceMap()
    chunks = stream_files([f.path for f in segment], lines, on_bytes=_progress(plan.name, segment, on_event))
    with _timed(on_event, f"load {len(segment)} {what} file(s)", plan.name):
        output = server.runner.run(name, psql_args(plan.variables, single), chunks)
    digests.digests.update(lines.digests)
    if output.exit_code != 0:
        raise describe_psql_failure(plan.name, output, lines)


def verify(conn: Connection, plan: BuildPlan, revision: str | None) -> None:
    """The expected tables exist, and alembic_version holds exactly `revision` (when there is one)."""
    untouched = (
        "the migrations command succeeded but did not migrate the private copy: if it takes its "
        "database from its own settings (a .env file, POSTGRES_DB), it ran against another database. Map those "
        "settings onto the copy under `migrations.env:` (e.g. POSTGRES_DB: '{database}')"
        if plan.migrations is not None
        else ""
    )
    versions = dbops.alembic_versions(conn) if revision else None
    missing = dbops.missing_tables(conn, plan.database.tables)
    if missing:
        raise VerifyFailed(
            f"{plan.name}: the build ran, but these expected tables are missing: {', '.join(missing)}",
            hint="check the SQL sources and migrations, or the `tables:` list for this database"
            + ("; " + untouched if untouched and revision and not versions else ""),
        )
    stamp = plan.database.alembic_revision
    if revision and versions != [revision]:
        # Left as the stamp made it (or empty): the migrations never reached this copy.
        unmigrated = not versions or versions == [stamp]
        raise VerifyFailed(
            f"{plan.name}: alembic_version holds {versions}, expected exactly [{revision!r}]",
            hint=untouched
            if untouched and unmigrated
            else "the migrations did not end at the expected revision; check `migrations.command`",
        )


def cleanup_leftovers(
    admin: Connection, names: Sequence[str], on_event: EventFn = ignore, what: str = "leftovers of earlier runs"
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
        prefixes = tuple(derived_prefix(database, kind) for kind in LEFTOVER_KINDS)
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
    built_at = str(record.get("built_at", now()))
    tables = int(str(record.get("tables", 0)))
    stage = derived_name(plan.name, "stage", _token())
    spare = spare_name(plan.name, content_hash)
    if spare in rows:
        # Claimed under a staging name, so a crash from here on leaves a leftover, not a stale spare.
        dbops.rename_database(admin, spare, stage)
        on_event(Event("step", "take the spare copy of the cached template", plan.name, time.monotonic() - started))
        return Prepared(plan, stage, "spare", content_hash, built_at, tables)
    dbops.create_database(admin, stage, template=tpl)
    on_event(Event("step", "clone the cached template", plan.name, time.monotonic() - started))
    return Prepared(plan, stage, "cloned", content_hash, built_at, tables)


def _build(server: Server, plan: BuildPlan, on_event: EventFn, template_now: bool) -> Prepared:
    """Build from the SQL; with `template_now` also clone the result into the cache before it is swapped
    in (cheaper than building the template again later, when the caller waits for the tidy-up anyway)."""
    stage = derived_name(plan.name, "stage", _token())
    streamed = SourceMap()
    tables = build_into(server, plan, stage, on_event, streamed)
    plan = plan.with_digests(streamed.digests)
    content_hash = plan.content_hash(server.server_version)
    if template_now:
        with dropped_on_failure(server.endpoint, stage):
            ensure_template(server, plan, on_event, clone_from=(stage, tables))
    return Prepared(plan, stage, "built", content_hash, now(), tables)


def fresh_databases(
    server: Server,
    admin: Connection,
    plans: Sequence[BuildPlan],
    use_cache: bool,
    on_event: EventFn = ignore,
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

        cancelled = threading.Event()

        def work(plan: BuildPlan) -> None:
            try:
                if cancelled.is_set():
                    raise KeyboardInterrupt
                # A build that ran the app's commands is cloned into the cache before the swap, so
                # a `fresh` right after this one takes it instead of running them again.
                now_too = template_now or plan.runs_commands
                prepared.append(_build(server, plan, on_event, use_cache and now_too))
            except BaseException as exc:  # noqa: BLE001 - collected and re-raised below
                errors.append(exc)

        if parallel and len(to_build) > 1:
            from concurrent.futures import ThreadPoolExecutor  # only builds need it (and logging, 4 ms)

            with ThreadPoolExecutor(max_workers=2, thread_name_prefix="provision-build") as pool:
                futures = [pool.submit(work, plan) for plan in to_build]
                try:
                    for future in futures:
                        future.result()
                except KeyboardInterrupt:
                    # Ctrl-C reaches only this thread; end the builds' sessions in the server so
                    # their psql stops now instead of running to the end of its input. Again until
                    # every build has stopped: one may open its session after the first round.
                    cancelled.set()
                    with contextlib.suppress(Exception):
                        while not all(future.done() for future in futures):
                            dbops.terminate_application(admin, BUILD_APP)
                            time.sleep(0.1)
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
        results = _swap_all(admin, prepared, on_event)
    except BaseException:
        # Under the lock every staging copy of these databases is this run's (or a dead run's),
        # including one whose own clean-up was cut short by Ctrl-C.
        with contextlib.suppress(Exception):
            cleanup_leftovers(admin, [plan.name for plan in plans], what="this run's unfinished copies")
        raise
    seconds = time.monotonic() - started
    return [replace(result, seconds=seconds) for result in results]


def swap_into_place(admin: Connection, staged: Sequence[tuple[str, str, str]], on_event: EventFn) -> dict[str, bool]:
    """Put each staged copy in place, all in one transaction: (database, staging name, provenance comment).

    Sessions on the databases are ended first; the replaced copies are renamed aside (`__old_`)
    for the tidy-up to drop. Returns, per database, whether an existing one was replaced.
    """
    started = time.monotonic()
    existing = dbops.list_databases(admin)
    olds = {name: derived_name(name, "old", _token()) if name in existing else None for name, _, _ in staged}
    batch = [dbops.Swap(name, stage, olds[name], comment) for name, stage, comment in staged]

    # A client can reconnect between terminating sessions and the rename; that is
    # ObjectInUse, and worth a few quick retries. Nothing else is retried.
    def swap() -> None:
        for name, old in olds.items():
            if old:
                dbops.terminate_sessions(admin, name)
        checkpoint("before-swap")
        dbops.swap_in(admin, batch)
        checkpoint("swapped")

    with dbops.server_errors("swapping the new databases into place"):
        call_with_retries(swap, retry_on=dbops.ObjectInUse, interval=0.05, timeout=10)
    names = ", ".join(name for name, _, _ in staged)
    on_event(Event("step", f"swap {names} into place", None, time.monotonic() - started))
    return {name: old is not None for name, old in olds.items()}


def _swap_all(admin: Connection, prepared: Sequence[Prepared], on_event: EventFn) -> list[DatabaseResult]:
    staged = [
        (p.plan.name, p.stage, provenance(p.plan, p.content_hash, "database", p.built_at, p.tables)) for p in prepared
    ]
    replaced = swap_into_place(admin, staged, on_event)
    return [
        DatabaseResult(
            name=p.plan.name,
            action=p.action,
            seconds=0.0,
            content_hash=p.content_hash,
            tables=p.tables,
            alembic_revision=p.plan.revision,
            replaced=replaced[p.plan.name],
        )
        for p in prepared
    ]


# ---------------------------------------------------------------- templates and housekeeping


def ensure_template(
    server: Server,
    plan: BuildPlan,
    on_event: EventFn = ignore,
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
    stage = derived_name(plan.name, "stage", _token())
    message = "clone the new copy as the cached template" if clone_from else "build the cached template"
    with _timed(on_event, message, plan.name):
        if clone_from:
            with dbops.connection(server.endpoint, application_name=BUILD_APP) as admin:
                dbops.create_database(admin, stage, template=clone_from[0])
            tables = clone_from[1]
        else:
            tables = build_into(server, plan, stage, on_event)
        with (
            dropped_on_failure(server.endpoint, stage),
            dbops.connection(server.endpoint, application_name=BUILD_APP) as admin,
        ):
            freeze(server.endpoint, stage)
            checkpoint("template-frozen")
            comment = provenance(plan, content_hash, "template", now(), tables)
            with dbops.server_errors(f"marking the template of {plan.name}"):
                dbops.swap_in(admin, [dbops.Swap(tpl, stage, None, comment)], make_template=True)
    return tpl


def freeze(ep: Endpoint, name: str) -> None:
    """VACUUM FREEZE a copy about to become a template. A template accepts no connections, so
    nothing would do it later, and every clone would then prune and set hint bits on first
    read: work repeated per copy, and, on the test server, WAL that makes an untouched pool
    copy look changed (recycling.py)."""
    with dbops.connection(ep, name, application_name=BUILD_APP) as conn, dbops.server_errors(f"freezing {name}"):
        dbops.execute(conn, "VACUUM FREEZE")


def housekeep(
    server: Server,
    plans: Sequence[BuildPlan],
    keep_templates: int,
    use_cache: bool,
    on_event: EventFn = ignore,
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
        tpl = ensure_template(server, plan, on_event)
        checkpoint("template-built")
        spare = spare_name(plan.name, content_hash)
        with dbops.connection(server.endpoint, application_name=BUILD_APP) as admin:
            rows = dbops.list_databases(admin)
            for name in rows:
                if name.startswith(derived_prefix(plan.name, "spare")) and name != spare:
                    dbops.drop_database(admin, name)
            if spare not in rows:
                with _timed(on_event, "clone a spare copy for the next run", plan.name):
                    dbops.create_database(admin, spare, template=tpl)
                checkpoint("spare-created")
            prune_templates(admin, plan.name, keep=keep_templates, current=tpl, on_event=on_event)


def prune_templates(admin: Connection, database: str, keep: int, current: str, on_event: EventFn = ignore) -> list[str]:
    """Keep the newest `keep` templates of `database` (always the current one); drop the rest."""
    prefix = derived_prefix(database, "tpl")
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
