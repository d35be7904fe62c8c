"""The detached top-up of a lease's spare copies, so that the next lease of the same sources is a rename."""

from __future__ import annotations

import pickle
from dataclasses import dataclass

from .endpoint import Endpoint
from .housekeeping import detach


@dataclass(frozen=True)
class SpareJob:
    """What the detached child needs (it arrives as a pickle on stdin: the endpoint holds the password)."""

    endpoint: Endpoint
    database: str
    content_hash: str
    target: int
    cap: int


def spawn(job: SpareJob) -> None:
    """Top up the spares in a detached process: the caller has its lease and does not wait."""
    detach("_lease_spares", pickle.dumps(job))


def run(payload: bytes) -> list[str]:
    """The detached half (see spawn); also what `cleanup: sync` runs in place."""
    # Written by spawn() of this same program, like housekeeping's payload.
    job: SpareJob = pickle.loads(payload)
    return top_up(job)


def top_up(job: SpareJob) -> list[str]:
    from .builds.leases import top_up_spares

    return top_up_spares(job.endpoint, job.database, job.content_hash, job.target, job.cap)
