"""`provision doctor`: what is wrong with this machine's setup, and how to fix it, one check at a time.

The checks that depend on where the server runs come from the target (`Target.diagnose`); the
checks on the server itself (leftovers, templates, the lock) are the same for every kind and live
here. No check changes anything, and none raises: a check that cannot run says so as its result.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .errors import ProvisionError
from .names import derived_prefix
from .results import Check

if TYPE_CHECKING:
    from .config import Config
    from .postgres.dbops import Connection


def guarded(name: str, run: Callable[[], Check | Sequence[Check]]) -> list[Check]:
    """Run one check; a ProvisionError it raises becomes a failed check with the error's hint."""
    try:
        found = run()
    except ProvisionError as exc:
        return [Check(name, "fail", exc.message, exc.hint or None)]
    return [found] if isinstance(found, Check) else list(found)


def server_checks(cfg: Config, admin: Connection) -> list[Check]:
    """The checks on a reachable server: leftovers of crashed runs, stale templates, the lock."""
    return [
        *guarded("leftovers", lambda: _leftovers(cfg, admin)),
        *guarded("templates", lambda: _templates(cfg, admin)),
        *guarded("lock", lambda: _lock(admin)),
        *guarded("extensions", lambda: _extensions(cfg, admin)),
    ]


def _extensions(cfg: Config, admin: Connection) -> list[Check]:
    from .postgres import dbops

    wanted = {db.name: db.extensions for db in cfg.databases if db.extensions}
    if not wanted:
        return []
    missing = {name: dbops.missing_extensions(admin, exts) for name, exts in wanted.items()}
    missing = {name: exts for name, exts in missing.items() if exts}
    if not missing:
        every = sorted({e for exts in wanted.values() for e in exts})
        return [Check("extensions", "ok", f"the server has every extension the config asks for: {', '.join(every)}")]
    where = "; ".join(f"{name} needs {', '.join(exts)}" for name, exts in missing.items())
    server = f"the server (image {cfg.image})" if cfg.target == "docker" else "the server"
    return [
        Check(
            "extensions",
            "fail",
            f"{server} lacks extensions the config asks for: {where}",
            "use an image that has them: `compose/build-offline-image.sh --tag postgres:18-pgvector-postgis "
            "--extensions pgvector,postgis`, or an official pgvector/pgvector or postgis/postgis image; "
            "then set `image:` and `provision up --recreate`",
        )
    ]


def _leftovers(cfg: Config, admin: Connection) -> Check:
    from .builds.pipeline import LEFTOVER_KINDS
    from .postgres import dbops

    rows = dbops.list_databases(admin)
    names = [db.name for db in cfg.databases]
    busy = {
        r[0] for r in dbops.execute(admin, "SELECT DISTINCT datname FROM pg_stat_activity WHERE datname IS NOT NULL")
    }
    found = sorted(
        row
        for row in rows
        for name in names
        for kind in (*LEFTOVER_KINDS, "pool")
        if row.startswith(derived_prefix(name, kind)) and row not in busy
    )
    if not found:
        return Check("leftovers", "ok", "no copies left by crashed runs")
    size = sum(dbops.database_size(admin, row) for row in found)
    return Check(
        "leftovers",
        "warn",
        f"{len(found)} copies left by crashed or killed runs ({size / 1e6:.0f} MB): {', '.join(found[:5])}"
        + (" ..." if len(found) > 5 else ""),
        "the next `provision fresh` (or test session) drops them",
    )


def _templates(cfg: Config, admin: Connection) -> Check:
    from .builds.pipeline import plan_database
    from .names import template_name
    from .postgres import dbops

    rows = dbops.list_databases(admin)
    version = int(admin.server_version)
    stale, total = [], 0
    for db in cfg.databases:
        current = None
        with contextlib.suppress(ProvisionError):
            current = template_name(db.name, plan_database(cfg, db).content_hash(version))
        for row in rows:
            if row.startswith(derived_prefix(db.name, "tpl")):
                size = dbops.database_size(admin, row)
                total += size
                if row != current:
                    stale.append((row, size))
    if not stale:
        return Check("templates", "ok", f"cached templates are current ({total / 1e6:.0f} MB)")
    size = sum(s for _, s in stale)
    return Check(
        "templates",
        "warn",
        f"{len(stale)} cached templates are for older sources ({size / 1e6:.0f} MB of {total / 1e6:.0f} MB)",
        "kept for switching back (keep_templates); lower keep_templates to keep fewer",
    )


def _lock(admin: Connection) -> Check:
    from .postgres import dbops

    holder = dbops.lock_holder(admin, 0)
    if holder is None:
        return Check("lock", "ok", "no provisioner is running")
    return Check(
        "lock",
        "warn",
        f"the provisioner lock is held by {holder}",
        "a fresh, snapshot or tidy-up is running; a new run waits for it (or --no-wait fails at once)",
    )
