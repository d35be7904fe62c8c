"""The dataclasses the verbs return: plain data, safe to render or dump as JSON (no password in any field)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from pathlib import Path

    from .builds.schema import Difference
    from .endpoint import Endpoint
    from .postgres.sqlstream import SourceKind

# What `doctor` says of one check.
Status = Literal["ok", "warn", "fail"]


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
    branch_note: str | None = None  # the databases replaced belonged to another git branch


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
    branch_note: str | None = None  # the databases in place belong to another git branch than the one checked out
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


@dataclass(frozen=True)
class SourceFile:
    path: Path
    display: str
    sha256: str
    size: int
    kind: SourceKind = "sql"  # how it is loaded: psql (sql, gzip, xz) or pg_restore (dump)


@dataclass(frozen=True)
class DatabaseResult:
    name: str
    action: Literal["built", "cloned", "spare"]
    seconds: float
    content_hash: str
    tables: int
    alembic_revision: str | None
    replaced: bool


@dataclass(frozen=True)
class Snapshot:
    """One saved snapshot of one database."""

    name: str
    database: str
    size_bytes: int
    created_at: str | None
    alembic_versions: list[str] | None
    provenance: dict[str, object] | None  # the database's provenance when it was saved
    standby: bool  # a copy is ready, so a restore is a rename
    standby_bytes: int = 0

    @property
    def disk_bytes(self) -> int:
        return self.size_bytes + self.standby_bytes


@dataclass(frozen=True)
class SnapshotList:
    snapshots: tuple[Snapshot, ...]
    total_bytes: int  # snapshots and their standby copies
    limit_bytes: int | None


@dataclass(frozen=True)
class SnapshotSaveResult:
    name: str
    snapshots: tuple[Snapshot, ...]
    replaced: tuple[str, ...]  # databases whose snapshot of that name was replaced
    seconds: float
    housekeeping: Literal["background", "sync"]


@dataclass(frozen=True)
class RestoredDatabase:
    database: str
    how: str  # "standby" (a rename) or "cloned"
    replaced: bool
    alembic_versions: list[str] | None


@dataclass(frozen=True)
class SnapshotRestoreResult:
    name: str
    databases: tuple[RestoredDatabase, ...]
    seconds: float
    housekeeping: Literal["background", "sync"]


@dataclass(frozen=True)
class SnapshotRemoveResult:
    name: str
    databases: tuple[str, ...]


@dataclass(frozen=True)
class SnapshotExportResult:
    name: str
    database: str
    path: str
    size_bytes: int
    seconds: float


@dataclass(frozen=True)
class DatabaseCheck:
    """One comparison `provision check` made, and what differed."""

    name: str
    left: str  # what was compared ...
    right: str  # ... with what
    differences: tuple[Difference, ...]
    seconds: float
    note: str | None = None


@dataclass(frozen=True)
class CheckResult:
    databases: tuple[DatabaseCheck, ...]
    seconds: float

    @property
    def drift(self) -> bool:
        return any(db.differences for db in self.databases)


@dataclass(frozen=True)
class Check:
    """One thing doctor looked at: what it found, and how to fix it when it is not ok."""

    name: str
    status: Status
    detail: str
    fix: str | None = None


@dataclass(frozen=True)
class DoctorResult:
    checks: tuple[Check, ...]

    @property
    def passed(self) -> bool:
        """Every check is ok or only a warning."""
        return all(check.status != "fail" for check in self.checks)


@dataclass(frozen=True)
class TemplateSet:
    """A ready server with an up-to-date template for each requested database."""

    endpoint: Endpoint
    templates: dict[str, str]
    up: UpResult


# ---------------------------------------------------------------- dev databases that follow the git branch


@dataclass(frozen=True)
class BranchCopy:
    """One branch's copy of one configured database: in place (`live`) or put aside as `name`."""

    branch: str
    database: str
    name: str  # the database on the server: `database` itself when live, else `<database>__br_<branch>`
    size_bytes: int
    last_used: str | None  # when it was put aside (None for the one in place: in use now)
    live: bool
    content_hash: str | None  # of the sources it was built from


@dataclass(frozen=True)
class BranchInfo:
    name: str
    current: bool  # the branch checked out now
    in_place: bool  # its databases are the live ones
    in_git: bool | None  # False: deleted from git (`branch prune` removes its copies); None: unknown
    copies: tuple[BranchCopy, ...]
    size_bytes: int
    last_used: str | None


@dataclass(frozen=True)
class BranchList:
    current: str | None
    branches: tuple[BranchInfo, ...]
    kept_bytes: int  # the copies put aside: they count toward snapshot_limit_mb
    limit_bytes: int | None = None


@dataclass(frozen=True)
class BranchMove:
    """What a switch did to one database."""

    database: str
    previous: str | None  # the branch it belonged to before
    # unchanged: already the branch's; adopted: it recorded no branch, now it records this one;
    # renamed: the branch's copy came back; built/cloned: made from the branch's sources.
    action: str
    kept_as: str | None  # where the previous branch's copy was put aside
    dropped: tuple[str, ...] | None  # copies dropped with --yes (stale or superseded)


@dataclass(frozen=True)
class BranchSwitchResult:
    branch: str
    databases: tuple[BranchMove, ...]
    seconds: float

    @property
    def switched(self) -> bool:
        return any(m.action not in ("unchanged", "adopted") for m in self.databases)


@dataclass(frozen=True)
class BranchPruneResult:
    branches: tuple[str, ...]
    dropped: tuple[str, ...]  # the databases removed
    freed_bytes: int


@dataclass(frozen=True)
class HookResult:
    path: str
    replaced: bool  # an earlier provision hook was replaced
