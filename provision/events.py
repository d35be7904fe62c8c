"""Progress events: what the library reports to its caller instead of printing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Event:
    """Progress reported to the caller; the library never prints."""

    kind: Literal["step", "info", "wait", "progress"]
    message: str
    database: str | None = None
    seconds: float | None = None
    # "progress": bytes of the sources read so far, of `total` (at most a few such events a second).
    done: int | None = None
    total: int | None = None


EventFn = Callable[[Event], None]


def ignore(event: Event) -> None:
    """The default EventFn: report nothing."""
    return None
