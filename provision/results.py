"""The dataclasses the verbs return: plain data, safe to render or dump as JSON (no password in any field)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from .build.pipeline import DatabaseResult, SourceFile
    from .build.snapshots import Snapshot
    from .endpoint import Endpoint


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
class DatabasePlan:
    name: str
    steps: tuple[str, ...]
    sources: tuple[SourceFile, ...]
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
    stale_reason: str | None = None  # why it is stale: what differs between its build and the config now
    alembic_head: str | None = None  # the revision the configured migrations reach
    revisions_behind: int | None = None  # migrations not yet applied to the database
    restored_from: str | None = None  # the snapshot it was last restored from
    # False while an app's command runs against a copy, or after a run killed then (seal.py).
    accepting_connections: bool = True


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
    snapshots: tuple[Snapshot, ...] = ()
    copy_on_write: str | None = None  # how the server copies databases (dbops.copy_on_write_state)


@dataclass(frozen=True)
class ServerState:
    """What a target knows about its server before connecting: for `status`.

    `endpoint` is None when there is nothing to connect to (`error` says why).
    """

    container: str | None
    state: str
    image: str | None
    volume: str | None
    endpoint: Endpoint | None
    error: str | None = None


@dataclass(frozen=True)
class DownResult:
    container_removed: bool
    volume_removed: bool
    volume: str | None


@dataclass(frozen=True)
class Command:
    argv: list[str]
    env: dict[str, str] = field(repr=False)
