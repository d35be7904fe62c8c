"""A container watched while it starts: fail at once if it exits or restart-loops, follow its port, read its log."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from ..endpoint import Endpoint
from ..errors import NotReady
from ..postgres.dbops import Connection, ServerUnavailable, still_initialising
from .docker_engine import ContainerInfo

# How long a cleanly stopped container may stay stopped while we wait (a `docker restart`).
RESTART_GRACE_SECONDS = 3.0
# What the server logs when its data directory belongs to another major version.
_OTHER_MAJOR = re.compile(r"initialized by PostgreSQL version (\d+), which is not compatible with this version (\d+)")


def other_major(log: str, volume: str | None, image: str) -> tuple[str, str] | None:
    """(message, hint) when the log says the data volume was made by another major version; else None."""
    found = _OTHER_MAJOR.search(log)
    if found is None:
        return None
    was, now = found.groups()
    where = f"the data volume {volume}" if volume else "the data directory"
    return (
        f"{where} was initialised by PostgreSQL {was}, but the image {image} runs PostgreSQL {now}, "
        "which cannot open it",
        f"three ways out: (1) keep using PostgreSQL {was}: set `image:` (or PROVISION_IMAGE) to a PostgreSQL {was} "
        f"image, e.g. postgres:{was}; (2) move the data to {now}: start it with that image, `provision snapshot "
        f"export` (or pg_dumpall) what you need, then switch the image, recreate and restore; (3) start empty: "
        f"`provision down --volumes` DESTROYS {where} and its data, then `provision up` initialises it for {now}",
    )


class ContainerProbe:
    """What readiness needs from a container on every poll: fail at once if it exited or
    restart-loops, and its host port as it is now (a restart on `port: 0` gets a new one)."""

    def __init__(
        self,
        name: str,
        find: Callable[[], ContainerInfo | None],
        log_tail: Callable[[], str],
        endpoint_at: Callable[[int], Endpoint],
        volume: str | None = None,
        image: str = "",
    ) -> None:
        self.name = name
        self.volume = volume
        self.image = image
        self.find = find
        self.log_tail = log_tail
        self.endpoint_at = endpoint_at
        self.initial_restarts: int | None = None
        self.port: int | None = None
        self.stopped_since: float | None = None

    def confirm(self, conn: Connection) -> None:
        """Refuse a login that reached the server an init script started, which is stopped again
        before the image's real server starts."""
        why = still_initialising(conn)
        if why is not None:
            raise ServerUnavailable(f"container {self.name} is still initialising: {why}")

    def check(self) -> None:
        name = self.name
        info = self.find()
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
            log = self.log_tail()
            mismatch = other_major(log, self.volume, self.image)
            if mismatch is not None:
                raise NotReady(
                    f"container {name} {what}: {mismatch[0]}",
                    hint=mismatch[1],
                    detail="last lines of the container log:\n" + log,
                )
            raise NotReady(
                f"container {name} {what} before the server was ready",
                hint="it was stopped; `provision up` starts it"
                if stopped
                else "the log below says why; a bad server_settings value or a broken init script are common causes",
                detail="last lines of the container log:\n" + log,
            )
        self.port = info.host_port

    def endpoint(self) -> Endpoint:
        if self.port is None:
            raise ServerUnavailable("the container has no published port yet")
        return self.endpoint_at(self.port)
