"""One function per verb: each takes a resolved Config and returns a result dataclass, and never prints."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from . import __version__
from .config import Config, config_from_dict, config_to_dict
from .errors import ConfigError, ContainerError, NotReady, ProvisionError, Refused
from .pipeline import BuildPlan, DatabaseResult, Event, EventFn, Server, plan_database, read_provenance

if TYPE_CHECKING:
    from .dbops import Connection, Endpoint
    from .docker_engine import ContainerInfo, DockerEngine


def _ignore(event: Event) -> None:
    return None


# ---------------------------------------------------------------- results


@dataclass(frozen=True)
class UpResult:
    action: Literal["created", "recreated", "started", "reused", "external"]
    container: str | None
    host: str
    port: int
    server_version: int
    seconds: float
    ready_seconds: float


@dataclass(frozen=True)
class SourceInfo:
    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class DatabasePlan:
    name: str
    steps: tuple[str, ...]
    sources: tuple[SourceInfo, ...]
    alembic_revision: str | None
    variables: dict[str, str]


@dataclass(frozen=True)
class FreshPlan:
    target: str
    container: str | None
    databases: tuple[DatabasePlan, ...]


@dataclass(frozen=True)
class FreshResult:
    databases: tuple[DatabaseResult, ...]
    seconds: float
    housekeeping: Literal["background", "sync"]
    up: UpResult


@dataclass(frozen=True)
class DatabaseStatus:
    name: str
    exists: bool
    size_bytes: int | None = None
    tables: int | None = None
    alembic_versions: list[str] | None = None
    content_hash: str | None = None
    built_at: str | None = None
    provisioned_at: str | None = None
    sources: list[list[str]] | None = None
    current_hash: str | None = None
    stale: bool | None = None


@dataclass(frozen=True)
class TemplateStatus:
    name: str
    database: str
    content_hash: str | None
    built_at: str | None
    current: bool


@dataclass(frozen=True)
class StatusResult:
    target: str
    container: str | None
    state: str
    image: str | None
    host: str | None
    port: int | None
    volume: str | None
    server_version: str | None
    reachable: bool
    error: str | None
    databases: tuple[DatabaseStatus, ...] = ()
    templates: tuple[TemplateStatus, ...] = ()


@dataclass(frozen=True)
class DownResult:
    container_removed: bool
    volume_removed: bool
    volume: str | None


@dataclass(frozen=True)
class Command:
    argv: list[str]
    env: dict[str, str] = field(repr=False)


# ---------------------------------------------------------------- the server


def _engine() -> DockerEngine:
    from .docker_engine import DockerEngine

    return DockerEngine.connect()


def _require_docker(cfg: Config, verb: str) -> None:
    if cfg.target != "docker":
        raise ConfigError(
            f"`{verb}` manages a Docker container, but target is {cfg.target!r}",
            hint="use target: docker, or manage the server where it runs",
        )


def _connect_host(cfg: Config, engine: DockerEngine | None) -> str:
    if engine is not None and not engine.is_local:
        host = urllib.parse.urlparse(engine.endpoint).hostname
        if host:
            return host
    if cfg.target == "docker":
        return "127.0.0.1" if cfg.bind in ("0.0.0.0", "::") else cfg.bind
    return cfg.host


def _endpoint(cfg: Config, host: str, port: int) -> Endpoint:
    from .dbops import Endpoint

    return Endpoint(host, port, cfg.user, cfg.password)


def _check_remote(cfg: Config) -> None:
    if cfg.target == "server" and not cfg.is_local_server and not cfg.allow_remote:
        raise Refused(
            f"refusing to provision {cfg.host}: it is not this machine, and `fresh` replaces databases",
            hint="pass --allow-remote (or set allow_remote: true / PROVISION_ALLOW_REMOTE=1) if you mean it",
        )


def _ensure_container(
    engine: DockerEngine, cfg: Config, recreate: bool, on_event: EventFn
) -> tuple[ContainerInfo, str]:
    from .docker_engine import NameConflict, drift_error, find_drift

    info = engine.find(cfg.container)
    if info is not None and recreate:
        started = time.monotonic()
        engine.remove(cfg.container)
        on_event(
            Event(
                "step",
                f"removed container {cfg.container} (volume {cfg.volume or 'none'} kept)",
                None,
                time.monotonic() - started,
            )
        )
        info = None
    if info is not None:
        drift = find_drift(info, cfg)
        if drift:
            raise drift_error(info, drift)
        if info.running:
            return info, "reused"
        started = time.monotonic()
        engine.start(cfg.container, cfg.port)
        on_event(Event("step", f"started container {cfg.container}", None, time.monotonic() - started))
        info = engine.find(cfg.container)
        assert info is not None
        return info, "started"
    started = time.monotonic()
    engine.ensure_image(cfg.image, lambda msg: on_event(Event("info", msg)))
    try:
        info = engine.create(cfg)
    except NameConflict:
        # Someone else (a parallel worker) won the race: use theirs, as a second `up` would.
        return _ensure_container(engine, cfg, False, on_event)
    on_event(Event("step", f"created container {cfg.container} from {cfg.image}", None, time.monotonic() - started))
    return info, "recreated" if recreate else "created"


# How long a cleanly stopped container may stay stopped while we wait (a `docker restart`).
RESTART_GRACE_SECONDS = 3.0


class _ContainerProbe:
    """What readiness needs from the container on every poll: fail at once if it exited or
    restart-loops, and the host port as it is now (a restart on `port: 0` gets a new one)."""

    def __init__(self, engine: DockerEngine, cfg: Config, host: str) -> None:
        self.engine = engine
        self.cfg = cfg
        self.host = host
        self.initial_restarts: int | None = None
        self.port: int | None = None
        self.stopped_since: float | None = None

    def check(self) -> None:
        name = self.cfg.container
        info = self.engine.find(name)
        if info is None:
            raise NotReady(f"container {name} disappeared while waiting for it", hint="run `provision up` again")
        if self.initial_restarts is None:
            self.initial_restarts = info.restart_count
        if info.status == "exited" and info.exit_code == 0 and not info.oom_killed:
            # A clean stop: `docker restart` passes through this state, so give it a moment to
            # come back before calling it dead. A crash (non-zero exit) fails at once.
            now = time.monotonic()
            self.stopped_since = self.stopped_since or now
            if now - self.stopped_since < RESTART_GRACE_SECONDS:
                from .dbops import ServerUnavailable

                raise ServerUnavailable(f"container {name} is stopped; waiting briefly in case it is restarting")
        else:
            self.stopped_since = None
        if info.status in ("exited", "dead", "restarting") or info.restart_count > self.initial_restarts:
            what = (
                f"exited with code {info.exit_code}" + (" (killed: out of memory)" if info.oom_killed else "")
                if info.status in ("exited", "dead")
                else "is restarting in a loop"
            )
            stopped = info.status == "exited" and info.exit_code == 0
            raise NotReady(
                f"container {name} {what} before the server was ready",
                hint="it was stopped; `provision up` starts it"
                if stopped
                else "the log below says why; a bad server_settings value or a broken init script are common causes",
                detail="last lines of the container log:\n" + self.engine.log_tail(name),
            )
        self.port = info.host_port

    def endpoint(self) -> Endpoint:
        if self.port is None:
            from .dbops import ServerUnavailable

            raise ServerUnavailable("the container has no published port yet")
        return _endpoint(self.cfg, self.host, self.port)


def _ready_server(
    cfg: Config,
    *,
    create: bool,
    recreate: bool = False,
    timeout: float | None = None,
    on_event: EventFn = _ignore,
    writes: bool = True,
) -> tuple[Server, UpResult, DockerEngine | None]:
    from .readiness import wait_until_ready
    from .sqlstream import LocalPsql

    started = time.monotonic()
    timeout = cfg.timeout if timeout is None else timeout
    if cfg.target == "server":
        if writes:
            _check_remote(cfg)
        ep = _endpoint(cfg, cfg.host, cfg.port)
        ready = wait_until_ready(lambda: ep, timeout)
        on_event(Event("step", f"server ready on {cfg.host}:{cfg.port}", None, ready.seconds))
        runner: Any = LocalPsql(cfg.host, cfg.port, cfg.user, cfg.password)
        up = UpResult(
            "external", None, cfg.host, cfg.port, ready.server_version, time.monotonic() - started, ready.seconds
        )
        return Server(ready.endpoint, runner, ready.server_version, "server"), up, None

    from .docker_engine import DockerPsql

    engine = _engine()
    if create:
        action = _ensure_container(engine, cfg, recreate, on_event)[1]
    else:
        found = engine.find(cfg.container)
        if found is None:
            raise ContainerError(f"container {cfg.container} does not exist", hint="run `provision up` first")
        # A stopped container is judged by the probe below, which allows for a restart in progress.
        action = "reused"
    host = _connect_host(cfg, engine)
    probe = _ContainerProbe(engine, cfg, host)
    ready = wait_until_ready(
        probe.endpoint,
        timeout,
        check=probe.check,
        log_tail=lambda: engine.log_tail(cfg.container),
    )
    on_event(Event("step", f"server ready on {host}:{ready.endpoint.port}", None, ready.seconds))
    up = UpResult(
        action,  # type: ignore[arg-type]
        cfg.container,
        host,
        ready.endpoint.port,
        ready.server_version,
        time.monotonic() - started,
        ready.seconds,
    )
    server = Server(
        ready.endpoint, DockerPsql(engine, cfg.container, cfg.user), ready.server_version, "docker", cfg.container
    )
    return server, up, engine


# ---------------------------------------------------------------- verbs


def up(
    cfg: Config, *, recreate: bool = False, timeout: float | None = None, on_event: EventFn | None = None
) -> UpResult:
    """Create or reuse the container, start it if stopped, and wait until it accepts logins."""
    return _ready_server(
        cfg, create=True, recreate=recreate, timeout=timeout, on_event=on_event or _ignore, writes=False
    )[1]


def wait(cfg: Config, *, timeout: float | None = None, on_event: EventFn | None = None) -> UpResult:
    """Wait until the (existing) server accepts logins."""
    return _ready_server(cfg, create=False, timeout=timeout, on_event=on_event or _ignore, writes=False)[1]


def down(cfg: Config, *, volumes: bool = False) -> DownResult:
    """Remove the container; with volumes=True also its data volume (the caller confirms that)."""
    _require_docker(cfg, "down")
    engine = _engine()
    removed = engine.remove(cfg.container)
    volume_removed = bool(cfg.volume) and volumes and engine.remove_volume(cfg.volume or "")
    return DownResult(removed, volume_removed, cfg.volume)


def logs(cfg: Config, *, follow: bool = False, tail: int | None = None) -> Iterator[bytes]:
    """The container's log, optionally following it."""
    _require_docker(cfg, "logs")
    return _engine().follow_logs(cfg.container, follow, "all" if tail is None else tail)


def database_url(cfg: Config, database: str | None = None, *, show_password: bool = False) -> str:
    """A libpq URL for a configured database; the password is masked unless show_password."""
    name = cfg.database(database).name if database else cfg.databases[0].name
    host, port = cfg.host, cfg.port
    if cfg.target == "docker":
        host = _connect_host(cfg, None)
        if not port:
            info = _engine().find(cfg.container)
            if info is None or info.host_port is None:
                raise ContainerError(
                    f"container {cfg.container} is not running, so its port is not known",
                    hint="run `provision up` first",
                )
            port = info.host_port
    return _endpoint(cfg, host, port).dsn(name, show_password)


def psql_command(cfg: Config, database: str | None = None) -> Command:
    """The command that opens an interactive psql on a database (inside the container when there is one)."""
    import shutil

    name = cfg.database(database).name if database else cfg.databases[0].name
    docker_cli = shutil.which("docker")
    if cfg.target == "docker" and docker_cli:
        engine = _engine()
        found = engine.find(cfg.container)
        if found is None or not found.running:
            raise ContainerError(f"container {cfg.container} is not running", hint="run `provision up` first")
        argv = [docker_cli]
        if not engine.endpoint.startswith("unix:///var/run/docker.sock"):
            argv += ["-H", engine.endpoint]
        tty = ["-it"] if sys.stdin.isatty() else ["-i"]
        return Command([*argv, "exec", *tty, cfg.container, "psql", "-U", cfg.user, "-d", name], dict(os.environ))
    from .sqlstream import find_local_psql

    url = database_url(cfg, name)
    parsed = urllib.parse.urlparse(url)
    env = dict(os.environ, PGPASSWORD=cfg.password)
    return Command(
        [find_local_psql(), "-h", parsed.hostname or "", "-p", str(parsed.port), "-U", cfg.user, "-d", name], env
    )


def connect(cfg: Config, database: str | None = None) -> Connection:
    """An open psycopg2 connection to a configured database (autocommit on)."""
    from . import dbops

    name = cfg.database(database).name if database else cfg.databases[0].name
    parsed = urllib.parse.urlparse(database_url(cfg, name))
    return dbops.connect(_endpoint(cfg, parsed.hostname or cfg.host, parsed.port or cfg.port), name)


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
            + (" (or clone the cached template when its content hash matches)" if use_cache else ""),
            f"run {len(plan.files)} SQL file(s) with psql -v ON_ERROR_STOP=1"
            + (" --single-transaction" if plan.database.single_transaction else ""),
        ]
        if plan.database.alembic_revision:
            steps.append(f"stamp alembic_version = {plan.database.alembic_revision}")
        if plan.database.tables:
            steps.append(f"verify {len(plan.database.tables)} expected table(s)")
        steps.append(f"terminate sessions on {plan.name}, swap the new copy into place, drop the old one")
        out.append(
            DatabasePlan(
                plan.name,
                tuple(steps),
                tuple(SourceInfo(f.display, f.size, f.sha256) for f in plan.files),
                plan.database.alembic_revision,
                dict(plan.variables),
            )
        )
    return FreshPlan(cfg.target, cfg.container if cfg.target == "docker" else None, tuple(out))


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
    from . import dbops
    from .pipeline import cleanup_leftovers, fresh_databases, housekeep

    emit = on_event or _ignore
    started = time.monotonic()
    use_cache = cfg.cache if use_cache is None else use_cache
    # Validates every source before anything is touched. Without the cache, the files are
    # hashed (for provenance) while they stream instead of in a pass of their own.
    plans = _selected(cfg, only, skip_demo, hash_files=use_cache)
    server, up_result, _ = _ready_server(cfg, create=True, recreate=recreate, timeout=timeout, on_event=emit)

    lock_conn = dbops.connect(server.endpoint, application_name="provision fresh")
    try:
        with _timed_lock(emit):
            dbops.acquire_lock(lock_conn, wait_for_lock, lambda msg: emit(Event("wait", msg)))
        names = [p.name for p in plans]
        if not yes:
            at_risk = tables_at_risk(server, names)
            if at_risk and not (confirm is not None and confirm(at_risk)):
                listing = ", ".join(f"{n} ({c} tables)" for n, c in at_risk.items())
                raise Refused(
                    f"not replacing databases that hold data without confirmation: {listing}",
                    hint="pass --yes (or yes=True) to replace them",
                )
        cleanup_leftovers(lock_conn, names, emit)
        results = fresh_databases(
            server, lock_conn, plans, use_cache, __version__, emit, template_now=cfg.cleanup == "sync"
        )
        mode: Literal["background", "sync"]
        if cfg.cleanup == "background":
            dbops.release_lock(lock_conn)
            lock_conn.close()
            _spawn_housekeeping(cfg, server, names, use_cache)
            mode = "background"
        else:
            housekeep(server, plans, cfg.keep_templates, use_cache, __version__, emit)
            mode = "sync"
    finally:
        lock_conn.close()
    return FreshResult(tuple(results), time.monotonic() - started, mode, up_result)


@contextlib.contextmanager
def _timed_lock(emit: EventFn) -> Iterator[None]:
    started = time.monotonic()
    yield
    waited = time.monotonic() - started
    if waited > 0.5:
        emit(Event("step", "acquired the provisioner lock", None, waited))


def housekeeping_log() -> str:
    return os.path.join(tempfile.gettempdir(), "provision-housekeeping.log")


def _housekeeping_pids(endpoint: Endpoint) -> str:
    return os.path.join(tempfile.gettempdir(), f"provision-housekeeping-{endpoint.host}-{endpoint.port}.pids")


def _spawn_housekeeping(cfg: Config, server: Server, names: Sequence[str], use_cache: bool) -> None:
    """Drop the old copies and prepare the next run's spare in a detached process.

    The caller's databases are already in place; this work only makes the next run fast, and
    is safe to kill at any point (the next run finishes it). Its pid is recorded so that
    wait_for_housekeeping() can wait for it.
    """
    payload = json.dumps(
        {
            "config": config_to_dict(cfg),
            "host": server.endpoint.host,
            "port": server.endpoint.port,
            "databases": list(names),
            "use_cache": use_cache,
        }
    )
    with open(housekeeping_log(), "ab") as log:
        # The config (with the password) goes through stdin, never argv.
        proc = subprocess.Popen(
            [sys.executable, "-m", "provision", "_housekeep"],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=log,
            start_new_session=True,
            close_fds=True,
        )
        assert proc.stdin is not None
        proc.stdin.write(payload.encode())
        proc.stdin.close()
    with open(_housekeeping_pids(server.endpoint), "a") as pids:
        pids.write(f"{proc.pid}\n")


class _LazyRunner:
    """Connects to Docker only if the tidy-up has to run psql (a template build), not to drop or clone."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self.factory = factory
        self.runner: Any = None

    def run(self, database: str, args: Sequence[str], chunks: Any) -> Any:
        if self.runner is None:
            self.runner = self.factory()
        return self.runner.run(database, args, chunks)


def housekeep_from_payload(payload: str, on_event: EventFn | None = None) -> None:
    """The detached half of `fresh` (see _spawn_housekeeping)."""
    from . import dbops
    from .pipeline import housekeep

    data = json.loads(payload)
    cfg = config_from_dict(data["config"])
    ep = _endpoint(cfg, data["host"], int(data["port"]))

    def make_runner() -> Any:
        if cfg.target == "docker":
            from .docker_engine import DockerEngine, DockerPsql

            return DockerPsql(DockerEngine.connect(), cfg.container, cfg.user)
        from .sqlstream import LocalPsql

        return LocalPsql(cfg.host, cfg.port, cfg.user, cfg.password)

    lock_conn = dbops.connect(ep, application_name="provision housekeeping")
    try:
        dbops.acquire_lock(lock_conn, wait=True)
        server = Server(ep, _LazyRunner(make_runner), int(lock_conn.server_version), cfg.target)
        plans = [plan_database(cfg, cfg.database(name)) for name in data["databases"]]
        housekeep(server, plans, cfg.keep_templates, bool(data["use_cache"]), __version__, on_event or _ignore)
    finally:
        lock_conn.close()


def wait_for_housekeeping(cfg: Config, timeout: float = 120.0) -> None:
    """Block until the background tidy-up of earlier `fresh` runs on this machine has finished
    and no provisioner holds the server-wide lock (benchmarks and tests use it)."""
    from . import dbops

    parsed = urllib.parse.urlparse(database_url(cfg, cfg.databases[0].name))
    ep = _endpoint(cfg, parsed.hostname or cfg.host, parsed.port or cfg.port)
    deadline = time.monotonic() + timeout
    path = _housekeeping_pids(ep)
    try:
        with open(path) as fh:
            pids = [int(line) for line in fh if line.strip().isdigit()]
    except FileNotFoundError:
        pids = []
    for pid in pids:
        while _alive(pid):
            if time.monotonic() > deadline:
                raise NotReady(
                    f"the background tidy-up (pid {pid}) did not finish within {timeout:g} s",
                    hint=f"see {housekeeping_log()}",
                )
            time.sleep(0.02)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    conn = dbops.connect(ep, application_name="provision wait-for-housekeeping")
    try:
        dbops.acquire_lock(conn, wait=True)
        dbops.release_lock(conn)
    finally:
        conn.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        # A finished child of this process lingers as a zombie until reaped.
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return _not_zombie(pid)


def _not_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def connect_admin(cfg: Config) -> Connection:
    """A connection to the server's maintenance database."""
    from . import dbops

    parsed = urllib.parse.urlparse(database_url(cfg, cfg.databases[0].name))
    return dbops.connect(_endpoint(cfg, parsed.hostname or cfg.host, parsed.port or cfg.port))


def status(cfg: Config) -> StatusResult:
    """Container state, server version, and for each configured database: size, tables, Alembic, provenance."""
    from . import dbops
    from .pipeline import template_name

    container = cfg.container if cfg.target == "docker" else None
    state, image, volume = "external", None, None
    host, port = cfg.host, cfg.port
    if cfg.target == "docker":
        info = _engine().find(cfg.container)
        if info is None:
            return StatusResult(
                cfg.target,
                container,
                "absent",
                None,
                None,
                None,
                cfg.volume,
                None,
                False,
                "container does not exist; run `provision up`",
            )
        state, image, volume, port = info.status, info.image, info.volume, info.host_port or cfg.port
        host = _connect_host(cfg, None)
        if not info.running:
            return StatusResult(
                cfg.target,
                container,
                state,
                image,
                host,
                port,
                volume,
                None,
                False,
                f"container is {info.status}; run `provision up`",
            )
    ep = _endpoint(cfg, host, port)
    try:
        admin = dbops.connect(ep, application_name="provision status")
    except ProvisionError as exc:
        return StatusResult(cfg.target, container, state, image, host, port, volume, None, False, str(exc))
    try:
        version = admin.server_version
        rows = dbops.list_databases(admin)
        databases = []
        templates = []
        for db in cfg.databases:
            current_hash: str | None = None
            with contextlib.suppress(ProvisionError):
                current_hash = plan_database(cfg, db).content_hash(version)
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
            record = read_provenance(rows[db.name].comment) or {}
            with dbops.connection(ep, db.name, application_name="provision status") as conn:
                tables = dbops.table_count(conn)
                versions = dbops.alembic_versions(conn)
            recorded = _str(record.get("hash"))
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
                )
            )
    finally:
        admin.close()
    pretty = f"{version // 10000}.{version % 10000}"
    return StatusResult(
        cfg.target, container, state, image, host, port, volume, pretty, True, None, tuple(databases), tuple(templates)
    )


def _str(value: object) -> str | None:
    return None if value is None else str(value)


# ---------------------------------------------------------------- test support (the pytest plugin's library half)

# Durability traded for speed on the throwaway server a test run uses; never used by `fresh`.
TEST_SERVER_SETTINGS = (("fsync", "off"), ("synchronous_commit", "off"), ("full_page_writes", "off"))


def config_for_tests(cfg: Config) -> Config:
    """The config a test run uses: its own container `<container>-test` on a free port, its data
    directory in memory (tmpfs), with fsync and friends off. A server target is used as it is."""
    if cfg.target != "docker":
        return cfg
    settings = dict(TEST_SERVER_SETTINGS)
    settings.update(dict(cfg.server_settings))
    return cfg.with_overrides(
        container=f"{cfg.container}-test",
        volume=None,
        tmpfs=True,
        port=0,
        server_settings=tuple(settings.items()),
        cleanup="sync",
    )


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
    from . import dbops
    from .pipeline import ensure_template, prune_templates
    from .pool import remove_dead_copies

    emit = on_event or _ignore
    plans = _selected(cfg, names, False)
    server, up_result, _ = _ready_server(cfg, create=True, on_event=emit)
    lock_conn = dbops.connect(server.endpoint, application_name="provision templates")
    try:
        dbops.acquire_lock(lock_conn, wait=True, on_wait=lambda msg: emit(Event("wait", msg)))
        templates = {plan.name: ensure_template(server, plan, __version__, emit) for plan in plans}
        for name, tpl in templates.items():
            prune_templates(lock_conn, name, cfg.keep_templates, tpl, emit)
        remove_dead_copies(lock_conn, [plan.name for plan in plans])
    finally:
        lock_conn.close()
    return TemplateSet(server.endpoint, templates, up_result)
