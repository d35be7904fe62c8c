"""How every verb that changes databases begins: the configured databases planned, the server ready, the lock held."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from .builds.pipeline import BuildPlan, Server, plan_database
from .config import Config
from .errors import ConfigError, Refused
from .events import Event, EventFn, ignore
from .postgres import dbops
from .postgres.dbops import Connection
from .results import UpResult
from .targets import make_target

T = TypeVar("T")


def in_background(work: Callable[[], T]) -> Callable[[], T]:
    """Start `work` in a thread now; the returned function waits for its result (or raises its error)."""
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["value"] = work()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller below
            box["error"] = exc

    thread = threading.Thread(target=run, name="provision-plan", daemon=True)
    thread.start()

    def result() -> T:
        thread.join()
        if "error" in box:
            raise box["error"]  # type: ignore[misc]
        return box["value"]  # type: ignore[return-value]

    return result


def timeout_of(cfg: Config, timeout: float | None) -> float:
    return cfg.timeout if timeout is None else timeout


def ready(
    cfg: Config, *, recreate: bool = False, timeout: float | None = None, on_event: EventFn = ignore
) -> tuple[Server, UpResult]:
    """Bring the server up for a verb that writes: a target may first refuse (a remote server)."""
    target = make_target(cfg)
    target.check_writable()
    return target.ready(create=True, recreate=recreate, timeout=timeout_of(cfg, timeout), on_event=on_event)


@contextlib.contextmanager
def holding_lock(
    cfg: Config, server: Server, purpose: str, emit: EventFn, *, wait: bool = True, writes: bool = True
) -> Iterator[Connection]:
    """An admin connection holding the server-wide provisioner lock. A verb that writes first
    reopens databases that a killed run left closed to connections (seal.py)."""
    from .builds import seal

    lock_conn = server.admin_connection(f"provision {purpose}")
    try:
        with timed_lock(emit):
            dbops.acquire_lock(lock_conn, wait, lambda msg: emit(Event("wait", msg)))
        if writes:
            reopened = seal.reopen_leftovers(lock_conn, [db.name for db in cfg.databases])
            if reopened:
                emit(Event("info", f"reopened {', '.join(reopened)} to new connections: a killed run left them closed"))
        yield lock_conn
    finally:
        lock_conn.close()


@contextlib.contextmanager
def locked(
    cfg: Config, emit: EventFn, purpose: str, *, writes: bool = True, timeout: float | None = None
) -> Iterator[tuple[Server, Connection]]:
    """The ready server and a connection holding the provisioner lock: how every verb that changes databases begins."""
    if writes:
        server, _ = ready(cfg, timeout=timeout, on_event=emit)
    else:
        server, _ = make_target(cfg).ready(
            create=False, recreate=False, timeout=timeout_of(cfg, timeout), on_event=emit
        )
    with holding_lock(cfg, server, purpose, emit, writes=writes) as lock_conn:
        yield server, lock_conn


def selected(cfg: Config, only: Sequence[str], skip_demo: bool, hash_files: bool = True) -> list[BuildPlan]:
    for name in only:
        cfg.database(name)
    chosen = [db for db in cfg.databases if (not only or db.name in only) and not (skip_demo and db.demo)]
    if not chosen:
        raise ConfigError("nothing to build: --only/--skip-demo left no databases", hint="check the names you passed")
    return [plan_database(cfg, db, hash_files) for db in chosen]


def tables_at_risk(server: Server, names: Sequence[str]) -> dict[str, int]:
    """Which of `names` exist and hold tables: what `fresh` would destroy."""

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


def confirm_replace(server: Server, names: Sequence[str], confirm: Callable[[dict[str, int]], bool] | None) -> None:
    """Refused unless `confirm` agrees to replace those of `names` that hold tables."""
    at_risk = tables_at_risk(server, names)
    if at_risk and not (confirm is not None and confirm(at_risk)):
        listing = ", ".join(f"{n} ({c} tables)" for n, c in at_risk.items())
        raise Refused(
            f"not replacing databases that hold data without confirmation: {listing}",
            hint="pass --yes (or yes=True) to replace them",
        )


@contextlib.contextmanager
def timed_lock(emit: EventFn) -> Iterator[None]:
    started = time.monotonic()
    yield
    waited = time.monotonic() - started
    if waited > 0.5:
        emit(Event("step", "acquired the provisioner lock", None, waited))
