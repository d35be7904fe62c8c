"""The server target: an existing PostgreSQL server (compose, a CI service, a managed one), reached over the network."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, BinaryIO

from ..endpoint import Endpoint
from ..errors import ProvisionError, Refused
from ..events import Event, EventFn
from ..results import Command, ServerState, UpResult
from . import DUMP_ARGS, Target, local_psql_command

if TYPE_CHECKING:
    from ..builds.pipeline import Server
    from ..postgres.dbops import Connection
    from ..postgres.sqlstream import PsqlOutput, PsqlRunner
    from ..results import Check


class ServerTarget(Target):
    """provision neither starts nor stops this server; psql runs locally with the password in its environment."""

    kind = "server"

    def endpoint(self) -> Endpoint:
        cfg = self.cfg
        return Endpoint(cfg.host, cfg.port, cfg.user, cfg.password)

    def check_writable(self) -> None:
        cfg = self.cfg
        if not cfg.is_local_server and not cfg.allow_remote:
            raise Refused(
                f"refusing to provision {cfg.host}: it is not this machine, and `fresh` replaces databases",
                hint="pass --allow-remote (or set allow_remote: true / PROVISION_ALLOW_REMOTE=1) if you mean it",
            )

    def ready(self, *, create: bool, recreate: bool, timeout: float, on_event: EventFn) -> tuple[Server, UpResult]:
        from ..builds.pipeline import Server
        from ..postgres.readiness import wait_until_ready

        started = time.monotonic()
        ep = self.endpoint()
        ready = wait_until_ready(lambda: ep, timeout)
        on_event(Event("step", f"server ready on {ep.host}:{ep.port}", None, ready.seconds))
        up = UpResult(
            "external", None, ep.host, ep.port, ready.server_version, time.monotonic() - started, ready.seconds
        )
        return Server(ready.endpoint, self.psql_runner(ready.endpoint), ready.server_version, ready.conn), up

    def psql_runner(self, endpoint: Endpoint) -> PsqlRunner:
        from ..postgres.sqlstream import LocalPsql

        return LocalPsql(endpoint)

    def psql_command(self, database: str) -> Command:
        return local_psql_command(self.endpoint(), database)

    def dump(self, database: str, out: BinaryIO) -> PsqlOutput:
        import os
        import subprocess

        from ..postgres.sqlstream import PsqlOutput, find_local_tool

        ep = self.endpoint()
        argv = [find_local_tool("pg_dump"), "-h", ep.host, "-p", str(ep.port), "-U", ep.user, *DUMP_ARGS, database]
        env = dict(os.environ, PGPASSWORD=ep.password, PGAPPNAME="provision dump")
        proc = subprocess.run(argv, stdout=out, stderr=subprocess.PIPE, env=env, check=False)
        return PsqlOutput(proc.returncode, proc.stderr.decode("utf-8", "replace")[-4000:])

    def diagnose(self) -> tuple[list[Check], Connection | None]:
        from ..doctor import guarded
        from ..postgres import dbops
        from ..postgres.sqlstream import find_local_tool
        from ..results import Check

        ep = self.endpoint()
        checks = guarded("psql", lambda: Check("psql", "ok", f"local psql: {find_local_tool('psql')}"))
        try:
            self.check_writable()
            checks.append(Check("host", "ok", f"{ep.host}:{ep.port}"))
        except ProvisionError as exc:
            checks.append(Check("host", "warn", exc.message, exc.hint or None))
        try:
            admin = dbops.connect(ep, application_name="provision doctor")
        except ProvisionError as exc:
            checks.append(Check("server", "fail", exc.message, exc.hint or None))
            return checks, None
        checks.append(Check("server", "ok", f"PostgreSQL {admin.server_version // 10000} accepts logins"))
        return checks, admin

    def server_state(self) -> ServerState:
        return ServerState(None, "external", None, None, self.endpoint())
