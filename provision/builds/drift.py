"""`provision check`: build scratch copies, read their schemas, name what differs, and the results."""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Iterator
from dataclasses import replace

from ..endpoint import Endpoint
from ..errors import ConfigError, ServerError
from ..events import EventFn
from ..names import derived_name, template_name
from ..postgres import dbops
from ..postgres.sqlstream import BUILD_APP
from ..results import DatabaseCheck
from . import schema
from .pipeline import BuildPlan, Server, build_into


@contextlib.contextmanager
def scratch(endpoint: Endpoint, database: str) -> Iterator[str]:
    """A private name for a copy of `database` that lives only inside the block (dropped however it ends)."""
    name = derived_name(database, "check", secrets.token_hex(4))
    try:
        yield name
    finally:
        with contextlib.suppress(Exception), dbops.connection(endpoint, application_name=BUILD_APP) as admin:
            dbops.drop_database(admin, name)


def read(server: Server, database: str) -> schema.Schema:
    with dbops.connection(server.endpoint, database, application_name="provision check") as conn:
        return schema.read_schema(conn)


def bootstrap_vs_migrations(
    server: Server, plan: BuildPlan, on_event: EventFn, column_order: bool = False
) -> DatabaseCheck:
    """The database built from its SQL sources and stamped at revision R, against the migrations run
    from empty up to R: the drift every bootstrap-plus-stamp project ships sooner or later."""
    mig = plan.migrations
    if mig is None or not plan.files:
        raise ConfigError(
            f"{plan.name}: there is nothing to compare it with: it needs both `sql:` sources and `migrations:`",
            hint="use `provision check --live` to compare the live database with its sources",
        )
    stamp = plan.database.alembic_revision
    started = time.monotonic()
    migrations_only = replace(plan, files=(), database=replace(plan.database, alembic_revision=None))
    if mig.alembic is not None and stamp and mig.takes_revision:
        bootstrap, migrate_to = replace(plan, migrations=None), stamp
        left, right = f"bootstrap SQL stamped at {stamp}", f"the migrations from empty to {stamp}"
        note = None
    else:
        # The command cannot be told to stop at the stamp: compare both ways to the end instead.
        bootstrap, migrate_to = plan, None
        target = plan.revision or "their end"
        left, right = f"bootstrap SQL, then the migrations to {target}", f"the migrations from empty to {target}"
        note = None
        if mig.alembic is not None:
            note = "compared at the migrations' target: the command has no {revision} to stop at the stamp"
    with scratch(server.endpoint, plan.name) as a, scratch(server.endpoint, plan.name) as b:
        # Without the seed: its rows are the same both ways, and only the schemas are compared.
        build_into(server, bootstrap, a, on_event, seed=False)
        build_into(server, migrations_only, b, on_event, migrate_to=migrate_to, seed=False)
        differences = schema.compare(
            read(server, a), read(server, b), column_order=column_order, left_name="the SQL", right_name="migrations"
        )
    return DatabaseCheck(plan.name, left, right, tuple(differences), time.monotonic() - started, note)


def live_vs_build(server: Server, plan: BuildPlan, on_event: EventFn, column_order: bool = False) -> DatabaseCheck:
    """The live database against what its configuration builds now: hand-made changes, a migration
    applied by hand, a stale dev database. A cached template of the current sources is cloned."""
    started = time.monotonic()
    with dbops.connection(server.endpoint, application_name=BUILD_APP) as admin:
        rows = dbops.list_databases(admin)
        if plan.name not in rows:
            raise ServerError(
                f"database {plan.name} does not exist, so there is no live schema to check",
                hint="run `provision fresh` to build it",
            )
        with scratch(server.endpoint, plan.name) as build:
            tpl = template_name(plan.name, plan.content_hash(server.server_version))
            if tpl in rows and rows[tpl].is_template:
                dbops.create_database(admin, build, template=tpl)
            else:
                build_into(server, plan, build, on_event)
            differences = schema.compare(
                read(server, plan.name),
                read(server, build),
                column_order=column_order,
                left_name="the live database",
                right_name="a fresh build",
            )
    return DatabaseCheck(
        plan.name, "the live database", "a fresh build from its sources", tuple(differences), time.monotonic() - started
    )
