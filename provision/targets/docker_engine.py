"""The Docker layer: the only module that talks to the Docker engine (the Docker SDK, and its unix socket)."""

from __future__ import annotations

import contextlib
import errno
import hmac
import importlib
import json
import os
import socket
import struct
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, BinaryIO

from ..config import Config
from ..errors import ContainerError, DockerUnavailable, DriftDetected, ImageUnavailable, PortInUse
from ..postgres.sqlstream import BUILD_APP, PsqlOutput, Tail, pump


class _Lazy:
    """A module imported on first use. The Docker SDK takes ~80 ms to import; a warm `fresh` only
    needs one inspect, which goes straight to the engine's unix socket (see _unix_get)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)


docker: Any = _Lazy("docker")
requests: Any = _Lazy("requests")


DEFAULT_ENDPOINT = "unix:///var/run/docker.sock"
PGDATA = "/var/lib/postgresql/data"
LABEL_MANAGED = "provision.managed"
LABEL_SETTINGS = "provision.server-settings"
LABEL_VERSION = "provision.version"
LABEL_TMPFS = "provision.tmpfs"

ProgressFn = Callable[[str], None]


class NameConflict(ContainerError):
    """Another process created the same container first (parallel test workers do this)."""


@dataclass(frozen=True)
class ContainerInfo:
    """What provision needs to know about a container, with no Docker SDK types."""

    name: str
    id: str
    image: str
    status: str
    exit_code: int
    restart_count: int
    oom_killed: bool
    bind: str | None
    host_port: int | None
    volume: str | None
    labels: Mapping[str, str]
    env: Mapping[str, str] = field(repr=False)
    error: str = ""
    data_dir: str | None = None  # a host directory bind-mounted as the data directory

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def managed(self) -> bool:
        return self.labels.get(LABEL_MANAGED) == "true"


def _docker_errors(action: str, endpoint: str) -> contextlib.AbstractContextManager[None]:
    """Convert the SDK's connection failures into DockerUnavailable, naming the endpoint."""

    @contextlib.contextmanager
    def guard() -> Iterator[None]:
        try:
            yield
        except PermissionError as exc:
            raise DockerUnavailable(
                f"permission denied on the Docker engine at {endpoint} while trying to {action}",
                hint="run as root, or add your user to the `docker` group (then log in again)",
            ) from exc
        except (requests.exceptions.ConnectionError, OSError) as exc:
            raise DockerUnavailable(f"cannot reach the Docker engine at {endpoint} while trying to {action}") from exc
        except docker.errors.DockerException as exc:
            if isinstance(exc, docker.errors.APIError):
                raise
            raise DockerUnavailable(
                f"cannot reach the Docker engine at {endpoint} while trying to {action}: {exc}"
            ) from exc

    return guard()


def _current_context_name(env: Mapping[str, str]) -> str:
    """DOCKER_CONTEXT, else currentContext in the docker CLI's config.json, else "default"."""
    if env.get("DOCKER_CONTEXT"):
        return env["DOCKER_CONTEXT"]
    # Like the docker CLI and the SDK, DOCKER_CONFIG may come from the process environment.
    config_dir = (
        env.get("DOCKER_CONFIG") or os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    )
    try:
        with open(os.path.join(config_dir, "config.json")) as fh:
            return str(json.load(fh).get("currentContext") or "default")
    except (OSError, ValueError, AttributeError):
        return "default"


def resolve_endpoint(env: Mapping[str, str]) -> tuple[str | None, Any]:
    """The engine address the docker CLI would use: DOCKER_HOST, then DOCKER_CONTEXT, then the current context.

    Returns (base_url or None for the SDK's own default, TLS config or None).
    """
    if env.get("DOCKER_HOST"):
        return env["DOCKER_HOST"], None
    if _current_context_name(env) == "default":
        return None, None
    name = env.get("DOCKER_CONTEXT") or None
    try:
        from docker.context import ContextAPI

        context = ContextAPI.get_context(name)
    except Exception as exc:
        raise DockerUnavailable(
            f"cannot read docker context {name or '(current)'}: {exc}",
            hint="check `docker context ls`, or set DOCKER_HOST",
        ) from exc
    if context is None:
        raise DockerUnavailable(f"docker context {name!r} does not exist", hint="check `docker context ls`")
    if context.name == "default":
        return None, None
    return context.Host, context.TLSConfig


def remote_engine_host(env: Mapping[str, str]) -> str | None:
    """The host of a remote engine (tcp://, ssh://), whose published ports live there; None for a local one."""
    base_url, _ = resolve_endpoint(env)
    if base_url is None or base_url.startswith(("unix://", "npipe://")):
        return None
    return urllib.parse.urlparse(base_url).hostname


class DockerEngine:
    """A connected Docker engine. The SDK client is made on first use; inspecting a container
    on a local engine goes straight to its unix socket."""

    def __init__(
        self, endpoint: str, env: Mapping[str, str] | None = None, tls: Any = None, client: Any = None
    ) -> None:
        self.endpoint = endpoint
        self._env = dict(os.environ if env is None else env)
        self._tls = tls
        self._client = client

    @classmethod
    def connect(cls, env: Mapping[str, str] | None = None) -> DockerEngine:
        env = os.environ if env is None else env
        base_url, tls = resolve_endpoint(env)
        engine = cls(base_url or DEFAULT_ENDPOINT, env, tls)
        if engine.is_local:
            with engine.guard("connect"):
                status, _ = _unix_get(engine.socket_path, "/_ping")
            if status != 200:
                raise DockerUnavailable(f"the Docker engine at {engine.endpoint} answered /_ping with HTTP {status}")
        else:
            _ = engine.client
        return engine

    @property
    def client(self) -> Any:
        if self._client is None:
            with self.guard("connect"):
                if self._env.get("DOCKER_HOST") or self.endpoint == DEFAULT_ENDPOINT:
                    self._client = docker.from_env(environment=self._env)
                else:
                    self._client = docker.DockerClient(base_url=self.endpoint, tls=self._tls or False)
        return self._client

    @property
    def api(self) -> Any:
        return self.client.api

    @property
    def socket_path(self) -> str:
        return self.endpoint[len("unix://") :]

    @property
    def is_local(self) -> bool:
        return self.endpoint.startswith("unix://")

    def guard(self, action: str) -> contextlib.AbstractContextManager[None]:
        return _docker_errors(action, self.endpoint)

    # ------------------------------------------------------------ containers

    def find(self, name: str) -> ContainerInfo | None:
        with self.guard(f"inspect container {name}"):
            if self.is_local:
                status, attrs = _unix_get(self.socket_path, f"/containers/{urllib.parse.quote(name, safe='')}/json")
                if status == 404:
                    return None
                if status != 200:
                    raise ContainerError(f"cannot inspect container {name}: HTTP {status}: {attrs}")
            else:
                try:
                    attrs = self.api.inspect_container(name)
                except docker.errors.NotFound:
                    return None
        return _container_info(attrs)

    def ensure_image(self, image: str, on_progress: ProgressFn | None = None) -> bool:
        """Pull `image` if it is not present. Returns True when it pulled."""
        with self.guard(f"look up image {image}"):
            try:
                self.api.inspect_image(image)
                return False
            except docker.errors.ImageNotFound:
                pass
            repository, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "latest")
            if on_progress:
                on_progress(f"pulling {image}")
            try:
                last = ""
                for event in self.api.pull(repository, tag=tag, stream=True, decode=True):
                    if "error" in event:
                        raise ImageUnavailable(f"cannot pull image {image}: {event['error']}")
                    status = event.get("status", "")
                    if on_progress and status and status != last:
                        on_progress(f"{image}: {status} {event.get('progress', '')}".rstrip())
                        last = status
            except docker.errors.APIError as exc:
                raise ImageUnavailable(f"cannot pull image {image}: {exc.explanation or exc}") from exc
        return True

    def create(self, cfg: Config) -> ContainerInfo:
        """Create and start the server container as configured."""
        port = cfg.port or None
        if port is not None and self.is_local:
            check_port_free(cfg.bind, port)
        labels = {
            LABEL_MANAGED: "true",
            LABEL_SETTINGS: json.dumps(dict(cfg.server_settings), sort_keys=True),
            LABEL_VERSION: _version(),
            LABEL_TMPFS: "true" if cfg.tmpfs else "false",
        }
        command = ["postgres"]
        for name, value in cfg.server_settings:
            command += ["-c", f"{name}={value}"]
        volumes = {cfg.volume: {"bind": PGDATA, "mode": "rw"}} if cfg.volume and not cfg.tmpfs else None
        if cfg.data_dir and not cfg.tmpfs:
            volumes = {cfg.data_dir: {"bind": PGDATA, "mode": "rw"}}
        # In memory: clones and drops cost a fraction; the data goes when the container stops.
        tmpfs = {PGDATA: "rw"} if cfg.tmpfs else None
        with self.guard(f"create container {cfg.container}"):
            if volumes and cfg.volume:
                self._ensure_volume(cfg.volume)
            try:
                container = self.client.containers.create(
                    cfg.image,
                    command=command,
                    name=cfg.container,
                    environment={
                        "POSTGRES_USER": cfg.user,
                        "POSTGRES_PASSWORD": cfg.password,
                        "POSTGRES_DB": "postgres",
                        # Where the volume is mounted. Said explicitly because the official
                        # postgres:18 image moved its default (to /var/lib/postgresql/18/docker)
                        # and refuses to start when data is mounted at the old place without it.
                        "PGDATA": PGDATA,
                        **({"POSTGRES_HOST_AUTH_METHOD": "trust"} if cfg.trust_local else {}),
                    },
                    ports={"5432/tcp": (cfg.bind, port)},
                    volumes=volumes,
                    tmpfs=tmpfs,
                    labels=labels,
                    detach=True,
                )
            except docker.errors.APIError as exc:
                if exc.status_code == 409:
                    raise NameConflict(f"a container named {cfg.container} was created concurrently") from exc
                raise ContainerError(f"cannot create container {cfg.container}: {exc.explanation or exc}") from exc
            try:
                self._start(cfg.container, cfg.port)
            except BaseException:
                with contextlib.suppress(docker.errors.APIError):
                    container.remove(force=True)
                raise
        info = self.find(cfg.container)
        assert info is not None
        return info

    def start(self, name: str, port: int | None = None) -> None:
        with self.guard(f"start container {name}"):
            self._start(name, port)

    def _start(self, name: str, port: int | None) -> None:
        try:
            self.api.start(name)
        except docker.errors.APIError as exc:
            text = str(exc.explanation or exc)
            if "port is already allocated" in text or "address already in use" in text:
                raise PortInUse(
                    f"port {port} is already in use on this host, so {name} cannot publish it",
                    hint="stop whatever listens there, or set another `port:` (or PROVISION_PORT / --port); "
                    "port 0 lets Docker choose a free one",
                ) from exc
            raise ContainerError(f"cannot start container {name}: {text}") from exc

    def remove(self, name: str) -> bool:
        with self.guard(f"remove container {name}"):
            try:
                # v=True removes anonymous volumes only; a named data volume is never touched here.
                self.api.remove_container(name, force=True, v=True)
                return True
            except docker.errors.NotFound:
                return False

    def remove_volume(self, name: str) -> bool:
        with self.guard(f"remove volume {name}"):
            try:
                self.api.remove_volume(name)
                return True
            except docker.errors.NotFound:
                return False
            except docker.errors.APIError as exc:
                raise ContainerError(f"cannot remove volume {name}: {exc.explanation or exc}") from exc

    def _ensure_volume(self, name: str) -> None:
        try:
            self.api.inspect_volume(name)
        except docker.errors.NotFound:
            self.api.create_volume(name, labels={LABEL_MANAGED: "true"})

    # ------------------------------------------------------------ facts for `provision doctor`

    def version(self) -> dict[str, Any]:
        """The engine's /version: Version, ApiVersion, Os, ..."""
        with self.guard("read the engine version"):
            if self.is_local:
                _, data = _unix_get(self.socket_path, "/version")
                return data if isinstance(data, dict) else {}
            return dict(self.api.version())

    def data_root(self) -> str | None:
        """Where the engine keeps its data (DockerRootDir), when it says."""
        with self.guard("read the engine info"):
            if self.is_local:
                _, data = _unix_get(self.socket_path, "/info")
            else:
                data = self.api.info()
        return str(data.get("DockerRootDir")) if isinstance(data, dict) and data.get("DockerRootDir") else None

    def image_state(self, image: str) -> tuple[str, str]:
        """("present" | "pullable" | "absent", detail): asks the registry for the manifest, pulls nothing."""
        with self.guard(f"look up image {image}"):
            try:
                self.api.inspect_image(image)
                return "present", f"{image} is present"
            except docker.errors.ImageNotFound:
                pass
            try:
                self.api.inspect_distribution(image)
                return "pullable", f"{image} is not present; its registry has it"
            except docker.errors.APIError as exc:
                return "absent", f"{image} is not present, and its registry cannot be reached: {exc.explanation or exc}"

    # ------------------------------------------------------------ logs and exec

    def log_tail(self, name: str, lines: int = 30) -> str:
        try:
            with self.guard(f"read the logs of {name}"):
                data = self.api.logs(name, stdout=True, stderr=True, tail=lines)
        except (docker.errors.APIError, DockerUnavailable):
            return "(container log not available)"
        return data.decode("utf-8", "replace").rstrip() if isinstance(data, bytes) else str(data)

    def follow_logs(self, name: str, follow: bool, tail: int | str = "all") -> Iterator[bytes]:
        with self.guard(f"read the logs of {name}"):
            try:
                stream = self.api.logs(name, stream=True, follow=follow, tail=tail)
            except docker.errors.NotFound as exc:
                raise ContainerError(f"container {name} does not exist", hint="run `provision up` first") from exc
            yield from stream

    def exec(self, name: str, argv: Sequence[str], user: str | None = None) -> tuple[int, str]:
        """Run a short command in the container; returns (exit code, combined output)."""
        with self.guard(f"exec in {name}"):
            try:
                result = self.client.containers.get(name).exec_run(list(argv), user=user or "")
            except docker.errors.APIError as exc:
                raise ContainerError(f"cannot exec in {name}: {exc.explanation or exc}") from exc
        return int(result.exit_code or 0), result.output.decode("utf-8", "replace")

    def _exec_socket(
        self, name: str, argv: Sequence[str], stdin: bool, user: str, environment: Mapping[str, str] | None
    ) -> tuple[str, socket.socket]:
        """Start `argv` in the container; returns the exec's id and the raw socket of its streams."""
        try:
            exec_id = self.api.exec_create(
                name,
                list(argv),
                stdin=stdin,
                stdout=True,
                stderr=True,
                user=user,
                environment=dict(environment or {}),
            )["Id"]
            raw = self.api.exec_start(exec_id, socket=True)
        except docker.errors.APIError as exc:
            raise ContainerError(f"cannot exec in {name}: {exc.explanation or exc}") from exc
        # The SDK hands back a SocketIO wrapper; only the socket itself can half-close,
        # and half-closing is what tells the process its stdin has ended.
        sock: socket.socket = getattr(raw, "_sock", raw)
        sock.settimeout(None)
        return str(exec_id), sock

    def exec_stream(
        self,
        name: str,
        argv: Sequence[str],
        chunks: Iterable[bytes],
        user: str = "",
        environment: Mapping[str, str] | None = None,
    ) -> PsqlOutput:
        """Run `argv` in the container with `chunks` on its stdin; memory stays flat for any input size."""
        with self.guard(f"exec in {name}"):
            exec_id, sock = self._exec_socket(name, argv, True, user, environment)
            try:
                stdout, stderr = pump(
                    chunks, sock.sendall, lambda: sock.shutdown(socket.SHUT_WR), lambda: _frames(sock)
                )
            finally:
                sock.close()
            code = self.api.exec_inspect(exec_id).get("ExitCode")
        return PsqlOutput(int(code if code is not None else -1), stderr, stdout)

    def exec_to(
        self, name: str, argv: Sequence[str], out: BinaryIO, environment: Mapping[str, str] | None = None
    ) -> PsqlOutput:
        """Run `argv` in the container, writing its stdout to `out` as it arrives (memory stays flat)."""
        err = Tail()
        with self.guard(f"exec in {name}"):
            exec_id, sock = self._exec_socket(name, argv, False, "", environment)
            try:
                for stream, data in _frames(sock):
                    if stream == 1:
                        out.write(data)
                    else:
                        err.add(data)
            finally:
                sock.close()
            code = self.api.exec_inspect(exec_id).get("ExitCode")
        return PsqlOutput(int(code if code is not None else -1), err.text())


@dataclass(frozen=True)
class DockerPsql:
    """Runs psql inside the container, over its unix socket (trusted there, so no password travels)."""

    engine: DockerEngine
    container: str
    user: str

    def run(self, database: str, args: Sequence[str], chunks: Iterable[bytes], program: str = "psql") -> PsqlOutput:
        argv = [program, "-U", self.user, "-d", database, *args]
        return self.engine.exec_stream(self.container, argv, chunks, environment={"PGAPPNAME": BUILD_APP})


def _frames(sock: socket.socket) -> Iterator[tuple[int, bytes]]:
    """Demultiplex Docker's attach stream: 8-byte headers (stream id, size) before each frame."""
    while True:
        header = _read_exact(sock, 8)
        if len(header) < 8:
            return
        stream, size = struct.unpack(">BxxxL", header)
        payload = _read_exact(sock, size)
        yield stream, payload
        if len(payload) < size:
            return


def _read_exact(sock: socket.socket, size: int) -> bytes:
    buf = bytearray()
    while len(buf) < size:
        data = sock.recv(size - len(buf))
        if not data:
            break
        buf += data
    return bytes(buf)


def _unix_get(path: str, url: str) -> tuple[int, Any]:
    """One GET to the Engine API over its unix socket: (status, decoded JSON or text)."""
    # http.client (~13 ms of imports) rather than the Docker SDK (~80 ms): a warm `fresh` only
    # needs one inspect. Imported here so that `provision url`, which needs no engine, skips it.
    import http.client

    class Connection(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(self.timeout)
            self.sock.connect(path)

    conn = Connection("docker", timeout=30)
    try:
        conn.request("GET", url)
        response = conn.getresponse()
        status, body = response.status, response.read()
    except http.client.HTTPException as exc:
        raise OSError(f"the Docker engine at {path} sent no valid HTTP response: {exc}") from exc
    finally:
        conn.close()
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode("utf-8", "replace")


def check_port_free(bind: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((bind, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                raise PortInUse(
                    f"port {port} on {bind} is already in use by another process",
                    hint="stop it, or set another `port:` in provision.yaml (or PROVISION_PORT / --port); "
                    "port 0 lets Docker choose a free one",
                ) from exc
            # Other errors (address not on this host, ...) are Docker's to report.


def find_drift(info: ContainerInfo, cfg: Config) -> list[str]:
    """How an existing container differs from the config, without showing secret values."""
    drift = []
    if info.image != cfg.image:
        drift.append(f"image is {info.image}, config says {cfg.image}")
    if info.bind is None:
        drift.append(f"port 5432 is not published, config says {cfg.bind}:{cfg.port}")
    elif info.bind != cfg.bind:
        drift.append(f"published on {info.bind}, config says {cfg.bind}")
    if cfg.port and info.host_port not in (None, cfg.port):
        drift.append(f"port is {info.host_port}, config says {cfg.port}")
    env_user = info.env.get("POSTGRES_USER", "postgres")
    if env_user != cfg.user:
        drift.append(f"user is {env_user}, config says {cfg.user}")
    if not hmac.compare_digest(info.env.get("POSTGRES_PASSWORD", "").encode(), cfg.password.encode()):
        drift.append("password differs from the config")
    if (info.volume or None) != (None if cfg.tmpfs else cfg.volume or None):
        drift.append(f"data volume is {info.volume or 'none'}, config says {cfg.volume or 'none'}")
    if (info.data_dir or None) != (None if cfg.tmpfs else cfg.data_dir):
        drift.append(
            f"data directory is {info.data_dir or 'not a host directory'}, config says {cfg.data_dir or 'none'}"
        )
    trusted = info.env.get("POSTGRES_HOST_AUTH_METHOD") == "trust"
    if trusted != cfg.trust_local:
        drift.append(f"logins {'need no' if trusted else 'need a'} password, config says otherwise")
    if info.managed and info.labels.get(LABEL_TMPFS, "false") != ("true" if cfg.tmpfs else "false"):
        drift.append(f"data directory {'is' if cfg.tmpfs else 'is not'} meant to be in memory (tmpfs)")
    settings = json.dumps(dict(cfg.server_settings), sort_keys=True)
    if info.managed and info.labels.get(LABEL_SETTINGS, "{}") != settings:
        drift.append("server_settings differ from the config")
    return drift


def drift_error(info: ContainerInfo, drift: list[str]) -> DriftDetected:
    return DriftDetected(f"container {info.name} does not match the config: " + "; ".join(drift))


def _container_info(attrs: Mapping[str, Any]) -> ContainerInfo:
    state = attrs.get("State") or {}
    config = attrs.get("Config") or {}
    host_config = attrs.get("HostConfig") or {}
    env = dict(item.split("=", 1) for item in (config.get("Env") or []) if "=" in item)
    wanted = (host_config.get("PortBindings") or {}).get("5432/tcp") or []
    live = ((attrs.get("NetworkSettings") or {}).get("Ports") or {}).get("5432/tcp") or []
    bind: str | None = None
    host_port: int | None = None
    if wanted:
        bind = wanted[0].get("HostIp") or "0.0.0.0"
        if wanted[0].get("HostPort"):
            host_port = int(wanted[0]["HostPort"])
    for binding in live:
        if binding.get("HostPort"):
            host_port = int(binding["HostPort"])  # the real one, when Docker chose it
            break
    volume = None
    data_dir = None
    for mount in attrs.get("Mounts") or []:
        if mount.get("Destination") == PGDATA and mount.get("Type") == "bind":
            data_dir = mount.get("Source") or None
        if mount.get("Destination") == PGDATA and mount.get("Type") == "volume" and mount.get("Name"):
            # Anonymous volumes (from the image's VOLUME line) have 64-hex names; they are not "the" volume.
            name = mount["Name"]
            if not (len(name) == 64 and all(c in "0123456789abcdef" for c in name)):
                volume = name
    return ContainerInfo(
        name=str(attrs.get("Name", "")).lstrip("/"),
        id=str(attrs.get("Id", "")),
        image=str(config.get("Image", "")),
        status=str(state.get("Status", "unknown")),
        exit_code=int(state.get("ExitCode") or 0),
        restart_count=int(attrs.get("RestartCount") or 0),
        oom_killed=bool(state.get("OOMKilled")),
        bind=bind,
        host_port=host_port,
        volume=volume,
        labels=dict(config.get("Labels") or {}),
        env=env,
        error=str(state.get("Error") or ""),
        data_dir=data_dir,
    )


def _version() -> str:
    from ..version import __version__

    return __version__


# ---------------------------------------------------------------- what `provision doctor` asks


def engine_origin(env: Mapping[str, str]) -> tuple[str, str]:
    """How the engine address was chosen, and the address: DOCKER_HOST, a docker context, or the default."""
    if env.get("DOCKER_HOST"):
        return "DOCKER_HOST", env["DOCKER_HOST"]
    context = _current_context_name(env)
    if context != "default":
        base_url, _ = resolve_endpoint(env)
        origin = "DOCKER_CONTEXT" if env.get("DOCKER_CONTEXT") else "the docker CLI's current context"
        return f"{origin} {context!r}", base_url or DEFAULT_ENDPOINT
    return "the default socket", DEFAULT_ENDPOINT


def well_known_sockets(env: Mapping[str, str]) -> list[tuple[str, str]]:
    """Engine sockets of the usual installs that exist on this machine: (which, path)."""
    home = os.path.expanduser("~")
    runtime = env.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
    candidates = [
        ("Docker Engine", "/var/run/docker.sock"),
        ("Docker Desktop", os.path.join(home, ".docker", "run", "docker.sock")),
        ("colima", os.path.join(home, ".colima", "default", "docker.sock")),
        ("OrbStack", os.path.join(home, ".orbstack", "run", "docker.sock")),
        ("Rancher Desktop", os.path.join(home, ".rd", "docker.sock")),
        ("rootless Docker", os.path.join(runtime, "docker.sock")),
        ("Podman (rootless)", os.path.join(runtime, "podman", "podman.sock")),
        ("Podman", "/run/podman/podman.sock"),
    ]
    return [(which, path) for which, path in candidates if os.path.exists(path)]
