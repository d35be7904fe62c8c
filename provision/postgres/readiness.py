"""Waits until the server really accepts logins, polling fast with a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..endpoint import Endpoint
from ..errors import NotReady
from .dbops import Connection, ServerUnavailable, connect
from .retry import call_with_retries

POLL_SECONDS = 0.03


@dataclass(frozen=True)
class Ready:
    endpoint: Endpoint
    server_version: int
    seconds: float
    attempts: int
    # The login that proved readiness, still open: the caller's first connection, for free.
    conn: Connection = field(repr=False)


def wait_until_ready(
    endpoint: Callable[[], Endpoint],
    timeout: float,
    check: Callable[[], None] | None = None,
    log_tail: Callable[[], str] | None = None,
    interval: float = POLL_SECONDS,
    confirm: Callable[[Connection], None] | None = None,
) -> Ready:
    """Poll until a login with the configured credentials succeeds over TCP.

    The official image's init phase runs a temporary server on the unix socket only, so a
    completed TCP login means init is over; a TCP connect alone is not enough, because
    docker-proxy accepts connections before Postgres listens. `check` runs before every
    attempt and raises at once (a container that exited or restart-loops); only
    ServerUnavailable is retried, never AuthFailed. `confirm` runs on each successful login and
    raises ServerUnavailable when the server that answered is not the one that stays (an image
    whose init scripts restart the server with TCP on, as PostGIS-style images can).
    """
    started = time.monotonic()
    attempts = 0

    def attempt() -> Ready:
        nonlocal attempts
        attempts += 1
        if check is not None:
            check()
        ep = endpoint()
        remaining = max(2, int(timeout - (time.monotonic() - started)) + 1)
        conn = connect(ep, timeout=min(remaining, 5), application_name="provision wait")
        if confirm is not None:
            try:
                confirm(conn)
            except BaseException:
                conn.close()
                raise
        return Ready(ep, int(conn.server_version), time.monotonic() - started, attempts, conn)

    try:
        return call_with_retries(attempt, retry_on=ServerUnavailable, interval=interval, timeout=timeout)
    except ServerUnavailable as last:
        raise NotReady(
            f"the server was not ready after {timeout:g} s ({attempts} attempts): {last}",
            hint="raise --timeout (or `timeout:`) if the server is just slow; the log below usually says why",
            detail=tail_detail(log_tail),
        ) from last


def tail_detail(log_tail: Callable[[], str] | None) -> str | None:
    if log_tail is None:
        return None
    return "last lines of the container log:\n" + log_tail()
