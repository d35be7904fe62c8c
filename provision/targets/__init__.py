"""The kinds of server provision works against: one interface, one implementation per kind, defined once here.

A target answers every question whose answer depends on where the server runs: making sure it
exists and runs, waiting until it accepts logins, where to connect, how to run psql, and what
`down`, `logs` and `psql` mean for it. Nothing outside this package compares `cfg.target`.
Lives here: the interface and the one table of kinds, `docker.py` with its engine module
(`docker_engine.py`, the only module that imports the Docker SDK) and start-up probe, `server.py`.

May import: the top-level modules below `api` (config, errors, events, endpoint, results, doctor),
`postgres/` and `builds/`. Never `testing/`, `api` or `cli`.
"""

from __future__ import annotations

import importlib
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, ClassVar

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..builds.pipeline import Server
    from ..config import Config
    from ..endpoint import Endpoint
    from ..events import EventFn
    from ..postgres.dbops import Connection
    from ..postgres.sqlstream import PsqlOutput, PsqlRunner
    from ..results import Check, Command, DownResult, ServerState, UpResult


@dataclass(frozen=True)
class Kind:
    """One kind of target: its module and class (imported on first use), and a line for the docs."""

    module: str
    cls: str
    summary: str


# The one definition of the target kinds: config validation, the CLI's --target choices and the
# README's table all come from here.
KINDS: dict[str, Kind] = {
    "docker": Kind("docker", "DockerTarget", "run the server in a container that provision creates and manages"),
    "server": Kind(
        "server", "ServerTarget", "use an existing server (compose, CI service, managed); psql runs locally"
    ),
}


def make_target(cfg: Config) -> Target:
    """The target for a resolved config."""
    kind = KINDS[cfg.target]
    module = importlib.import_module(f".{kind.module}", __name__)
    target: Target = getattr(module, kind.cls)(cfg)
    return target


class Target(ABC):
    """Where the server runs, and everything that depends on it."""

    kind: ClassVar[str]

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    @property
    def container(self) -> str | None:
        """The container this target manages, if any."""
        return None

    @abstractmethod
    def ready(self, *, create: bool, recreate: bool, timeout: float, on_event: EventFn) -> tuple[Server, UpResult]:
        """Make sure the server runs (creating it when `create`), and wait until it accepts logins."""

    def check_writable(self) -> None:  # noqa: B027 - most kinds need no consent: a default, not abstract
        """Raise Refused when replacing databases on this server needs the user's explicit consent."""

    @abstractmethod
    def endpoint(self) -> Endpoint:
        """Where to connect now, without waiting for readiness."""

    @abstractmethod
    def psql_runner(self, endpoint: Endpoint) -> PsqlRunner:
        """How the pipeline runs psql against this server."""

    @abstractmethod
    def psql_command(self, database: str) -> Command:
        """The command that opens an interactive psql on `database`."""

    @abstractmethod
    def dump(self, database: str, out: BinaryIO) -> PsqlOutput:
        """`pg_dump -Fc` of `database`, written to `out` as it arrives, by the server's own pg_dump where it can."""

    @abstractmethod
    def server_state(self) -> ServerState:
        """What `status` shows before it connects."""

    @abstractmethod
    def diagnose(self) -> tuple[list[Check], Connection | None]:
        """`provision doctor`'s checks for this kind, and a connection when the server answers."""

    def down(self, volumes: bool) -> DownResult:
        raise self.unsupported("down")

    def logs(self, follow: bool, tail: int | None) -> Iterator[bytes]:
        raise self.unsupported("logs")

    def for_tests(self) -> Config:
        """The config a test run uses against this kind of server."""
        return self.cfg

    @property
    def throwaway(self) -> bool:
        """Whether this is provision's own test server, holding nothing durable: it may be recreated
        when it drifts, and provision may install what recycling needs there."""
        return False

    def unsupported(self, verb: str) -> ConfigError:
        return ConfigError(
            f"`{verb}` manages a Docker container, but target is {self.cfg.target!r}",
            hint="use target: docker, or manage the server where it runs",
        )


DUMP_ARGS = ("--format=custom", "--no-owner", "--no-privileges")


def local_psql_command(endpoint: Endpoint, database: str) -> Command:
    """An interactive local psql on `database`; the password travels in the environment, never argv."""
    from ..postgres.sqlstream import find_local_psql
    from ..results import Command

    env = dict(os.environ, PGPASSWORD=endpoint.password)
    argv = [find_local_psql(), "-h", endpoint.host, "-p", str(endpoint.port), "-U", endpoint.user, "-d", database]
    return Command(argv, env)
