"""The docker target: a server in a container that provision creates, starts, probes and removes."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, BinaryIO, Literal

from ..config import is_local_host
from ..endpoint import Endpoint, connect_host
from ..errors import ConfigError, ContainerError, DockerUnavailable, ProvisionError
from ..events import Event, EventFn
from ..results import Command, DownResult, ServerState, UpResult
from . import DUMP_ARGS, Target, local_psql_command

if TYPE_CHECKING:
    from ..builds.pipeline import Server
    from ..config import Config
    from ..postgres.dbops import Connection
    from ..postgres.sqlstream import PsqlOutput, PsqlRunner
    from ..results import Check, Status
    from .docker_engine import ContainerInfo, DockerEngine

# Durability traded for speed on the throwaway server a test run uses; never used by `fresh`.
# No autovacuum: a pool copy lives for one test, and autovacuum visiting it only does work
# and writes WAL that makes an unchanged copy look changed (pool.py, recycling.py).
TEST_SERVER_SETTINGS = (
    ("fsync", "off"),
    ("synchronous_commit", "off"),
    ("full_page_writes", "off"),
    ("autovacuum", "off"),
    # Code under test may use two-phase commit; a test that leaves a prepared transaction
    # behind has it rolled back before its copy is dropped (pool.py).
    ("max_prepared_transactions", "16"),
)

Action = Literal["created", "recreated", "started", "reused"]

# Run in the container as postgres with the data directory as $1: prints the filesystem's type
# and 0 when a reflink copy works there (XFS with reflink=1, btrfs), else cp's exit code.
REFLINK_PROBE = (
    'd="$1"; t=$(stat -f -c %T "$d" 2>/dev/null || echo unknown); p="$d/.provision-reflink-probe.$$"; '
    'head -c 65536 /dev/zero > "$p" 2>/dev/null && cp --reflink=always "$p" "$p.copy" 2>/dev/null; rc=$?; '
    'rm -f "$p" "$p.copy"; echo "$t $rc"'
)


class DockerTarget(Target):
    """The engine is connected on first use, so answers that need no engine (a URL with a fixed port) stay fast."""

    kind = "docker"

    @property
    def container(self) -> str:
        return self.cfg.container

    @cached_property
    def engine(self) -> DockerEngine:
        from .docker_engine import DockerEngine

        return DockerEngine.connect()

    @cached_property
    def host(self) -> str:
        """The address the published port is reached at: the engine's host when it is remote, else the bind address."""
        from .docker_engine import remote_engine_host

        cfg = self.cfg
        if cfg.connect_host:
            return cfg.connect_host
        try:
            remote = remote_engine_host(os.environ)
        except DockerUnavailable:
            remote = None  # an unreadable docker context: the engine's own calls will say so
        if remote and not is_local_host(remote) and is_local_host(cfg.bind):
            raise ConfigError(
                f"the Docker engine runs on {remote}, and the port would be published on its loopback ({cfg.bind}), "
                "which cannot be reached from here",
                hint="set bind: 0.0.0.0 (or an address of that host) to publish it where this machine can connect, "
                "or set connect_host to the local end of a tunnel you forward to it (ssh -L)",
            )
        return remote or connect_host(cfg.bind)

    def endpoint_at(self, port: int) -> Endpoint:
        cfg = self.cfg
        return Endpoint(self.host, port, cfg.user, cfg.password)

    def endpoint(self) -> Endpoint:
        port = self.cfg.port
        if not port:
            info = self.engine.find(self.container)
            if info is None or info.host_port is None:
                raise ContainerError(
                    f"container {self.container} is not running, so its port is not known",
                    hint="run `provision up` first",
                )
            port = info.host_port
        return self.endpoint_at(port)

    # ------------------------------------------------------------ up and ready

    def ready(self, *, create: bool, recreate: bool, timeout: float, on_event: EventFn) -> tuple[Server, UpResult]:
        from ..builds.pipeline import Server
        from ..postgres.readiness import wait_until_ready
        from .probe import ContainerProbe

        started = time.monotonic()
        _ = self.host  # a port that could not be reached from here is refused before anything starts
        engine, name = self.engine, self.container
        action: Action
        if create:
            action = self._ensure_container(recreate, on_event)
        else:
            if engine.find(name) is None:
                raise ContainerError(f"container {name} does not exist", hint="run `provision up` first")
            # A stopped container is judged by the probe below, which allows for a restart in progress.
            action = "reused"
        probe = ContainerProbe(
            name,
            lambda: engine.find(name),
            lambda: engine.log_tail(name),
            self.endpoint_at,
            volume=self.cfg.volume,
            image=self.cfg.image,
        )
        ready = wait_until_ready(
            probe.endpoint, timeout, check=probe.check, log_tail=probe.log_tail, confirm=probe.confirm
        )
        ep = ready.endpoint
        on_event(Event("step", f"server ready on {ep.host}:{ep.port}", None, ready.seconds))
        if ready.server_version >= 180000:
            self._settle_copy_method(ready.conn, recheck=action != "reused", on_event=on_event)
        up = UpResult(action, name, ep.host, ep.port, ready.server_version, time.monotonic() - started, ready.seconds)
        return Server(ep, self.psql_runner(ep), ready.server_version, ready.conn), up

    def probe_reflink(self, data_directory: str) -> tuple[str, bool]:
        """(filesystem type, whether a reflink copy works) for the data directory, from inside the container."""
        code, out = self.engine.exec(
            self.container, ["sh", "-c", REFLINK_PROBE, "provision-probe", data_directory], user="postgres"
        )
        words = out.split()
        if code != 0 or len(words) < 2:
            return "unknown", False
        return words[-2], words[-1] == "0"

    def _settle_copy_method(self, conn: Connection, *, recheck: bool, on_event: EventFn) -> None:
        """Detect copy-on-write: on PostgreSQL 18+, set file_copy_method = clone server-wide when the
        data directory is on a filesystem with reflinks, else copy. Probed once per container (the
        answer is kept in postgresql.auto.conf); a file_copy_method the user set is left alone."""
        import psycopg2
        from psycopg2 import sql

        from ..postgres import dbops

        # Detection is an optimisation: a server that refuses it (not a superuser) just copies.
        with contextlib.suppress(ProvisionError, psycopg2.Error):
            setting, source, sourcefile, data_directory = dbops.execute(
                conn,
                "SELECT setting, source, coalesce(sourcefile, ''), current_setting('data_directory') "
                "FROM pg_settings WHERE name = 'file_copy_method'",
            )[0]
            ours = source == "configuration file" and str(sourcefile).endswith("postgresql.auto.conf")
            if not (source == "default" or (ours and recheck)):
                return
            fs, reflink = self.probe_reflink(str(data_directory))
            wanted = "clone" if reflink else "copy"
            if source == "default" or setting != wanted:
                dbops.execute(conn, sql.SQL("ALTER SYSTEM SET file_copy_method = {}").format(sql.Literal(wanted)))
                dbops.execute(conn, "SELECT pg_reload_conf()")
                deadline = time.monotonic() + 2
                while dbops.file_copy_method(conn) != wanted and time.monotonic() < deadline:
                    time.sleep(0.01)
            what = "on: copies are cloned" if reflink else "off: copies are copied"
            on_event(Event("info", f"copy-on-write {what} (data directory on {fs}; file_copy_method = {wanted})"))

    def _ensure_container(self, recreate: bool, on_event: EventFn) -> Action:
        from .docker_engine import NameConflict, drift_error, find_drift

        engine, cfg = self.engine, self.cfg
        info = engine.find(cfg.container)
        if info is not None and recreate:
            started = time.monotonic()
            engine.remove(cfg.container)
            message = f"removed container {cfg.container} (volume {cfg.volume or 'none'} kept)"
            on_event(Event("step", message, None, time.monotonic() - started))
            info = None
        if info is not None:
            drift = find_drift(info, cfg)
            if drift:
                raise drift_error(info, drift)
            if info.running:
                return "reused"
            started = time.monotonic()
            engine.start(cfg.container, cfg.port)
            on_event(Event("step", f"started container {cfg.container}", None, time.monotonic() - started))
            return "started"
        started = time.monotonic()
        engine.ensure_image(cfg.image, lambda msg: on_event(Event("info", msg)))
        try:
            engine.create(cfg)
        except NameConflict:
            # Someone else (a parallel worker) won the race: use theirs, as a second `up` would.
            return self._ensure_container(False, on_event)
        message = f"created container {cfg.container} from {cfg.image}"
        on_event(Event("step", message, None, time.monotonic() - started))
        return "recreated" if recreate else "created"

    # ------------------------------------------------------------ psql

    def psql_runner(self, endpoint: Endpoint) -> PsqlRunner:
        return _ContainerPsql(self)

    def psql_command(self, database: str) -> Command:
        docker_cli = shutil.which("docker")
        if not docker_cli:
            # Without the docker CLI, a local psql through the published port does the same job.
            if not shutil.which("psql"):
                raise ConfigError(
                    "`provision psql` needs the docker CLI (to run psql inside the container) or a local psql, "
                    "and neither is on PATH",
                    hint="install either (the docker CLI comes with Docker Desktop; psql with postgresql-client "
                    "or libpq), or connect your own client to `provision url --show-password`",
                )
            return local_psql_command(self.endpoint(), database)
        found = self.engine.find(self.container)
        if found is None or not found.running:
            raise ContainerError(f"container {self.container} is not running", hint="run `provision up` first")
        argv = [docker_cli]
        if not self.engine.endpoint.startswith("unix:///var/run/docker.sock"):
            argv += ["-H", self.engine.endpoint]
        tty = ["-it"] if sys.stdin.isatty() else ["-i"]
        return Command(
            [*argv, "exec", *tty, self.container, "psql", "-U", self.cfg.user, "-d", database], dict(os.environ)
        )

    # ------------------------------------------------------------ status, down, logs, tests

    def dump(self, database: str, out: BinaryIO) -> PsqlOutput:
        argv = ["pg_dump", "-U", self.cfg.user, *DUMP_ARGS, database]
        return self.engine.exec_to(self.container, argv, out, environment={"PGAPPNAME": "provision dump"})

    def server_state(self) -> ServerState:
        cfg = self.cfg
        info: ContainerInfo | None = self.engine.find(cfg.container)
        if info is None:
            return ServerState(
                cfg.container, "absent", None, cfg.volume, None, "container does not exist; run `provision up`"
            )
        ep = self.endpoint_at(info.host_port or cfg.port)
        if not info.running:
            return ServerState(
                cfg.container,
                info.status,
                info.image,
                info.volume,
                ep,
                f"container is {info.status}; run `provision up`",
            )
        return ServerState(cfg.container, info.status, info.image, info.volume, ep)

    def down(self, volumes: bool) -> DownResult:
        cfg = self.cfg
        removed = self.engine.remove(cfg.container)
        volume_removed = bool(cfg.volume) and volumes and self.engine.remove_volume(cfg.volume or "")
        return DownResult(removed, volume_removed, cfg.volume)

    def logs(self, follow: bool, tail: int | None) -> Iterator[bytes]:
        return self.engine.follow_logs(self.container, follow, "all" if tail is None else tail)

    def diagnose(self) -> tuple[list[Check], Connection | None]:
        from ..doctor import guarded
        from ..postgres import dbops
        from ..results import Check
        from .docker_engine import check_port_free, engine_origin, find_drift, well_known_sockets
        from .probe import other_major

        cfg = self.cfg
        how, address = engine_origin(os.environ)
        found = well_known_sockets(os.environ)
        others = [f"{which} ({path})" for which, path in found if f"unix://{path}" != address]
        checks = [
            Check(
                "engine address",
                "ok",
                f"{address}, from {how}" + (f"; other engines here: {', '.join(others)}" if others else ""),
            )
        ]
        if address.startswith("unix://"):
            path = address[len("unix://") :]
            if not os.path.exists(path):
                checks.append(
                    Check(
                        "socket",
                        "fail",
                        f"{path} does not exist: no engine listens there",
                        f"start the engine, or point DOCKER_HOST at one of: {', '.join(p for _, p in found)}"
                        if found
                        else "start the Docker engine (Docker Desktop, colima, OrbStack, dockerd)",
                    )
                )
                return checks, None
            if not os.access(path, os.R_OK | os.W_OK):
                checks.append(
                    Check(
                        "socket",
                        "fail",
                        f"no permission to use {path}",
                        "add your user to the `docker` group (then log in again), or run as root",
                    )
                )
                return checks, None
            checks.append(Check("socket", "ok", f"{path} is usable"))
        try:
            engine = self.engine
            version = engine.version()
        except ProvisionError as exc:
            checks.append(Check("engine", "fail", exc.message, exc.hint or None))
            return checks, None
        checks.append(
            Check("engine", "ok", f"Docker {version.get('Version', '?')}, API {version.get('ApiVersion', '?')}")
        )
        state, detail = engine.image_state(cfg.image)
        checks.append(
            Check(
                "image",
                "fail" if state == "absent" else "ok",
                detail,
                "build a local stand-in: compose/build-offline-image.sh, or set `image:`"
                if state == "absent"
                else None,
            )
        )
        checks += guarded("disk", lambda: _disk_check(engine.data_root()))
        info = engine.find(cfg.container)
        if info is None:
            checks.append(Check("container", "ok", f"{cfg.container} does not exist yet; `provision up` creates it"))
        else:
            drift = find_drift(info, cfg)
            status: Status = "fail" if drift or not info.running else "ok"
            mismatch = None if info.running else other_major(engine.log_tail(cfg.container), cfg.volume, cfg.image)
            checks.append(
                Check(
                    "container",
                    status,
                    f"{cfg.container} is {info.status}"
                    + (f"; differs from the config: {'; '.join(drift)}" if drift else "")
                    + (f"; {mismatch[0]}" if mismatch else ""),
                    "provision up --recreate (the volume is kept)"
                    if drift
                    else (mismatch[1] if mismatch else None if info.running else "provision up"),
                )
            )
        tests = engine.find(test_container(cfg))
        if tests is not None:
            checks.append(
                Check(
                    "test server",
                    "ok",
                    f"{tests.name} (the pytest plugin's, data in memory) is {tests.status}"
                    + (f" on port {tests.host_port}" if tests.running else "")
                    + f"; the next test run reuses it (`pytest --provision-down` or `docker rm -f {tests.name}` "
                    "removes it)",
                )
            )
        ours = info is not None and info.host_port == cfg.port
        if not cfg.port:
            checks.append(Check("port", "ok", "Docker chooses a free port (port: 0)"))
        elif ours:
            checks.append(Check("port", "ok", f"port {cfg.port} is published by {cfg.container}"))
        else:

            def port_free() -> Check:
                check_port_free(cfg.bind, cfg.port)
                return Check("port", "ok", f"port {cfg.port} is free")

            checks += guarded("port", port_free)
        admin = None
        if info is not None and info.running:
            try:
                admin = dbops.connect(self.endpoint_at(info.host_port or cfg.port), application_name="provision doctor")
                checks.append(Check("server", "ok", f"PostgreSQL {admin.server_version // 10000} accepts logins"))
            except ProvisionError as exc:
                checks.append(Check("server", "fail", exc.message, exc.hint or None))
        if admin is not None:
            checks += guarded("copy-on-write", lambda: self._copy_on_write_check(admin))
        return checks, admin

    def _copy_on_write_check(self, admin: Connection) -> Check:
        from ..postgres import dbops
        from ..results import Check

        method = dbops.file_copy_method(admin)
        if method is None:
            return Check("copy-on-write", "ok", dbops.copy_on_write_state(admin))
        data_directory = str(dbops.execute(admin, "SELECT current_setting('data_directory')")[0][0])
        fs, reflink = self.probe_reflink(data_directory)
        where = f"the data directory is on {fs}, {'with' if reflink else 'without'} reflinks"
        if reflink and method == "clone":
            return Check("copy-on-write", "ok", f"on: {where}; databases are cloned (file_copy_method = clone)")
        if reflink:
            return Check(
                "copy-on-write",
                "warn",
                f"off: {where}, but file_copy_method = {method}",
                "it was set by hand; remove it (ALTER SYSTEM RESET file_copy_method) and run `provision up`",
            )
        return Check(
            "copy-on-write",
            "ok",
            f"off: {where}; copies cost time and disk in proportion to size",
            "for clones of any size in a fraction of a second, put the data on XFS (reflink=1) or btrfs: "
            "`data_dir:` in provision.yaml (see the README, Copy-on-write)",
        )

    @property
    def throwaway(self) -> bool:
        # The test server's data directory is in memory (for_tests): gone when it stops anyway;
        # or, with `data_dir:`, beside the user's, holding only the test server's copies.
        return self.cfg.tmpfs or self.cfg.test_server

    def for_tests(self) -> Config:
        """Its own container `<container>-test` on a free port, its data directory in memory
        (tmpfs), with fsync and friends off, and logins without a password: the SCRAM exchange
        costs about 3.5 ms of CPU per connection, and every test opens one. Only throwaway copies
        live there, published on the configured bind address (127.0.0.1 by default)."""
        cfg = self.cfg
        settings = dict(TEST_SERVER_SETTINGS)
        settings.update(dict(cfg.server_settings))
        if cfg.data_dir:
            # The user put the data on a filesystem of their choosing (for copy-on-write): the test
            # server's copies go beside it, on the same filesystem, instead of into memory.
            return cfg.with_overrides(
                container=f"{cfg.container}-test",
                volume=None,
                data_dir=f"{cfg.data_dir}-test",
                tmpfs=False,
                port=0,
                server_settings=tuple(settings.items()),
                cleanup="sync",
                trust_local=True,
                test_server=True,
            )
        return cfg.with_overrides(
            container=test_container(cfg),
            volume=None,
            tmpfs=True,
            port=0,
            server_settings=tuple(settings.items()),
            cleanup="sync",
            trust_local=True,
            test_server=True,
        )


def test_container(cfg: Config) -> str:
    """The pytest plugin's own container for a config's tests (for_tests)."""
    return f"{cfg.container}-test"


def _disk_check(root: str | None) -> Check:
    from ..results import Check

    if root is None or not os.path.isdir(root):
        return Check("disk", "ok", "the engine keeps its data elsewhere (not visible from here)")
    stat = os.statvfs(root)
    free = stat.f_bavail * stat.f_frsize
    status: Status = "fail" if free < 1e9 else "warn" if free < 5e9 else "ok"
    return Check(
        "disk",
        status,
        f"{free / 1e9:.1f} GB free under {root}",
        None if status == "ok" else "free some space: `docker system prune`, `provision snapshot rm`, fewer templates",
    )


class _ContainerPsql:
    """psql inside the container; the engine is connected only when psql first runs (a tidy-up
    that only drops and clones never needs it)."""

    def __init__(self, target: DockerTarget) -> None:
        self.target = target

    def run(self, database: str, args: Sequence[str], chunks: Iterable[bytes], program: str = "psql") -> PsqlOutput:
        from .docker_engine import DockerPsql

        target = self.target
        return DockerPsql(target.engine, target.container, target.cfg.user).run(database, args, chunks, program)
