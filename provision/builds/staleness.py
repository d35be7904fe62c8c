"""What `status` says of each configured database: provenance, revision, and why it is stale against its sources now."""

from __future__ import annotations

import contextlib

from ..config import Config
from ..endpoint import Endpoint
from ..errors import ProvisionError
from ..names import derived_prefix, template_name
from ..postgres import dbops
from ..postgres.dbops import Connection
from ..results import DatabaseStatus, TemplateStatus
from .pipeline import BuildPlan, plan_database, read_provenance


def describe(
    cfg: Config, ep: Endpoint, admin: Connection, rows: dict[str, dbops.DatabaseRow], version: int
) -> tuple[tuple[DatabaseStatus, ...], tuple[TemplateStatus, ...]]:
    """Each configured database's status and its templates, read over `admin` (and one login per database)."""
    databases = []
    templates = []
    for db in cfg.databases:
        current_hash: str | None = None
        plan: BuildPlan | None = None
        with contextlib.suppress(ProvisionError):
            plan = plan_database(cfg, db)
            current_hash = plan.content_hash(version)
        current_tpl = template_name(db.name, current_hash) if current_hash else None
        for name, row in rows.items():
            if name.startswith(derived_prefix(db.name, "tpl")):
                record = read_provenance(row.comment) or {}
                templates.append(
                    TemplateStatus(
                        name, db.name, _str(record.get("hash")), _str(record.get("built_at")), name == current_tpl
                    )
                )
        if db.name not in rows:
            databases.append(DatabaseStatus(db.name, False, current_hash=current_hash))
            continue
        if not rows[db.name].allow_connections:
            databases.append(DatabaseStatus(db.name, True, current_hash=current_hash, accepting_connections=False))
            continue
        record = read_provenance(rows[db.name].comment) or {}
        with dbops.connection(ep, db.name, application_name="provision status") as conn:
            tables = dbops.table_count(conn)
            versions = dbops.alembic_versions(conn)
        recorded = _str(record.get("hash"))
        head, behind = migration_state(plan, versions)
        databases.append(
            DatabaseStatus(
                db.name,
                True,
                size_bytes=dbops.database_size(admin, db.name),
                tables=tables,
                alembic_versions=versions,
                content_hash=recorded,
                built_at=_str(record.get("built_at")),
                provisioned_at=_str(record.get("provisioned_at")),
                sources=record.get("sources") if isinstance(record.get("sources"), list) else None,  # type: ignore[arg-type]
                current_hash=current_hash,
                stale=None if recorded is None or current_hash is None else recorded != current_hash,
                stale_reason=stale_reason(record, plan, current_hash, behind),
                alembic_head=head,
                revisions_behind=behind,
                restored_from=_str(record.get("restored_from")),
            )
        )
    return tuple(databases), tuple(templates)


def stale_reason(
    record: dict[str, object], plan: BuildPlan | None, current: str | None, behind: int | None
) -> str | None:
    """Why a database differs from what its configuration builds now, in words; None when it does not."""
    if plan is None or current is None or record.get("hash") in (None, current):
        return None
    reasons = []
    sources = record.get("sources")
    built = (
        {str(p[0]): str(p[1]) for p in sources if isinstance(p, list) and len(p) == 2}
        if isinstance(sources, list)
        else {}
    )
    now = {f.display: f.sha256 for f in plan.files}
    changed = sorted(name for name in now.keys() | built.keys() if now.get(name) != built.get(name))
    if changed:
        reasons.append("sources changed: " + ", ".join(changed))
    was = _mapping(record.get("variables"))
    for name, value in sorted(dict(plan.variables).items()):
        if str(was.get(name)) != value:
            reasons.append(f"variable {name} is {was.get(name)} in the database, {value} in the config")
    if plan.migrations is not None:
        if _mapping(record.get("migrations")).get("inputs") != plan.migrations.digest:
            reasons.append("migrations changed")
        if behind:
            reasons.append(f"{behind} migration{'s' if behind != 1 else ''} pending")
    return "; ".join(reasons) or "built by another version of provision or of the server"


def _mapping(value: object) -> dict[str, object]:
    return value if isinstance(value, dict) else {}


def migration_state(plan: BuildPlan | None, versions: list[str] | None) -> tuple[str | None, int | None]:
    """The head the configured Alembic migrations reach, and how many of them the database lacks."""
    if plan is None or plan.migrations is None or plan.migrations.alembic is None or plan.revision is None:
        return None, None
    return plan.revision, plan.migrations.alembic.behind(versions or [], plan.revision)


def _str(value: object) -> str | None:
    return None if value is None else str(value)
