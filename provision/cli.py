"""The command line: parses options, calls provision.api, renders results, maps errors to exit codes."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import click

from .errors import DOCTOR_FAILED, DRIFT_FOUND, ProvisionError, Refused, exit_codes
from .targets import KINDS
from .version import __version__

if TYPE_CHECKING:
    from .config import Config
    from .events import Event

EXIT_CODES = (
    "\b\nExit codes:\n" + "\n".join(f"  {code:<3} {meaning.replace('`', '')}" for code, meaning in exit_codes()) + "\n"
)


class Context:
    def __init__(self, config_path: str | None, overrides: dict[str, Any], debug: bool) -> None:
        self.config_path = config_path
        self.overrides = overrides
        self.debug = debug

    def config(self, **extra: Any) -> Config:
        from .config import load_config

        return load_config(self.config_path, overrides={**self.overrides, **extra})


pass_ctx = click.make_pass_decorator(Context)


def complete_databases(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """Shell completion: the configured database names (from -c, $PROVISION_CONFIG or ./provision.yaml).

    Runs only when the shell asks for completions, so `provision --help` pays nothing for it."""
    from click.shell_completion import CompletionItem

    from .config import load_config

    try:
        cfg = load_config(ctx.find_root().params.get("config_path"))
    except ProvisionError:
        return []  # a broken config completes nothing rather than printing an error into the shell
    return [CompletionItem(db.name) for db in cfg.databases if db.name.startswith(incomplete)]


@click.group(epilog=EXIT_CODES, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="provision")
@click.option(
    "-c",
    "--config",
    "config_path",
    metavar="FILE",
    help="YAML config (default: $PROVISION_CONFIG, then ./provision.yaml).",
)
@click.option(
    "--target",
    type=click.Choice(list(KINDS)),
    help="Where the server runs: " + "; ".join(f"{name}: {kind.summary}" for name, kind in KINDS.items()) + ".",
)
@click.option("--container", help="Container name.")
@click.option("--image", help="Server image.")
@click.option("--port", type=int, help="Host port (docker: published on --bind; server: where it listens).")
@click.option("--host", help="Server host (target: server).")
@click.option("--user", help="Database user.")
@click.option("--debug", is_flag=True, envvar="PROVISION_DEBUG", help="Show tracebacks.")
@click.pass_context
def cli(ctx: click.Context, /, config_path: str | None, debug: bool, **overrides: Any) -> None:
    """A ready PostgreSQL in Docker, with your databases built, stamped and verified.

    \b
    Example:
      provision fresh --yes        # container up, chatbi + chatbi_demo rebuilt
      provision -c examples/sqlclient/provision.yaml fresh --yes
    """
    ctx.obj = Context(config_path, overrides, debug)


def _echo_event(quiet: bool) -> Callable[[Event], None]:
    live = not quiet and sys.stdout.isatty()

    def emit(event: Event) -> None:
        if event.kind == "progress":
            if live:
                _echo_progress(event)
            return
        if quiet and event.kind != "wait":
            return
        where = f"[{event.database}] " if event.database else ""
        took = f"  {event.seconds:.2f}s" if event.seconds is not None else ""
        mark = {"step": "  ok", "info": "  ..", "wait": "wait"}.get(event.kind, "  ..")
        click.echo(f"{mark} {where}{event.message}{took}", err=event.kind == "wait")

    return emit


def _echo_progress(event: Event) -> None:
    """One line, rewritten in place: bytes done of total, the rate, and the time left."""
    done, total, seconds = event.done or 0, event.total or 0, event.seconds or 0.0
    rate = done / seconds if seconds > 0 else 0.0
    left = f"ETA {(total - done) / rate:.0f}s" if rate > 0 and done < total else "done"
    line = (
        f"  .. [{event.database}] load {event.message}: {done / 1e6:.0f} of {total / 1e6:.0f} MB, "
        f"{rate / 1e6:.1f} MB/s, {left}"
    )
    click.echo("\r" + line.ljust(78), nl=done >= total)


def _only_option(text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option("--only", multiple=True, metavar="DB", shell_complete=complete_databases, help=text)


def _timeout_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--timeout", type=float, help="Seconds to wait for the server (default 60).")(f)


@cli.command()
@click.option(
    "--recreate", is_flag=True, help="Replace the container (keeps the volume) when it differs from the config."
)
@_timeout_option
@click.option("-q", "--quiet", is_flag=True)
@pass_ctx
def up(obj: Context, recreate: bool, timeout: float | None, quiet: bool) -> None:
    """Create or reuse the container, start it, and wait until it accepts logins.

    \b
    Example:
      provision up && psql "$(provision url --show-password)"
    """
    from . import api

    cfg = obj.config(timeout=timeout)
    result = api.up(cfg, recreate=recreate, on_event=_echo_event(quiet))
    if not quiet:
        click.echo(
            f"{result.action} {result.container or cfg.host}: ready on {result.host}:{result.port} "
            f"in {result.seconds:.2f}s"
        )


@cli.command()
@_timeout_option
@pass_ctx
def wait(obj: Context, timeout: float | None) -> None:
    """Wait until the server accepts logins with the configured credentials.

    \b
    Example:
      provision wait --timeout 30 && ./run-app
    """
    from . import api

    cfg = obj.config(timeout=timeout)
    result = api.wait(cfg)
    click.echo(f"ready on {result.host}:{result.port} after {result.ready_seconds:.2f}s")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def status(obj: Context, as_json: bool) -> None:
    """Show the container, the server and each configured database.

    \b
    Example:
      provision status --json | jq '.databases[] | {name, tables, stale}'
    """
    from . import api

    result = api.status(obj.config())
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(result), indent=2))
        return
    if result.container:
        where = f"{result.host}:{result.port}" if result.port else "-"
        click.echo(
            f"container  {result.container}  {result.state}  {result.image or '-'}  {where}  "
            f"volume {result.volume or '-'}"
        )
    if result.error:
        click.echo(f"server     not reachable: {result.error}")
        return
    click.echo(f"server     PostgreSQL {result.server_version} on {result.host}:{result.port}")
    if result.copy_on_write:
        click.echo(f"clones     copy-on-write {result.copy_on_write}")
    for db in result.databases:
        if not db.exists:
            click.echo(f"{db.name:<14} missing (run `provision fresh`)")
            continue
        if not db.accepting_connections:
            click.echo(
                f"{db.name:<14} closed to new connections: a build is running the app's commands, or one was "
                "killed (the next `provision fresh` reopens it)"
            )
            continue
        alembic = ",".join(db.alembic_versions) if db.alembic_versions else "-"
        if db.revisions_behind:
            plural = "s" if db.revisions_behind != 1 else ""
            alembic += f" ({db.revisions_behind} revision{plural} behind head {db.alembic_head})"
        elif db.alembic_head and db.revisions_behind is None:
            alembic += f" (not among the migrations; head is {db.alembic_head})"
        state = (
            "unknown origin" if db.content_hash is None else (f"STALE: {db.stale_reason}" if db.stale else "up to date")
        )
        click.echo(
            f"{db.name:<14} {(db.size_bytes or 0) / 1e6:.1f} MB  {db.tables} tables  alembic {alembic}  "
            f"hash {(db.content_hash or '-')[:12]}  built {db.built_at or '-'}  {state}"
        )
    for snap in result.snapshots:
        click.echo(
            f"snapshot   {snap.name}  of {snap.database}  {_size(snap.size_bytes)}  saved {snap.created_at or '-'}"
            + ("" if snap.standby else "  (standby not ready)")
        )
    if result.snapshots:
        total = sum(s.disk_bytes for s in result.snapshots)
        click.echo(f"snapshots  {len(result.snapshots)}, {_size(total)} on disk with their standby copies")
    for tpl in result.templates:
        click.echo(
            f"template   {tpl.name}  hash {(tpl.content_hash or '-')[:12]}  built {tpl.built_at or '-'}"
            f"{'  (current)' if tpl.current else ''}"
        )
    if result.branch_note:
        click.echo(f"branch     {result.branch_note}")


@cli.command()
@click.option("--volumes", is_flag=True, help="Also remove the data volume (asks first).")
@click.option("-y", "--yes", is_flag=True, help="Do not ask before removing the volume.")
@pass_ctx
def down(obj: Context, volumes: bool, yes: bool) -> None:
    """Remove the container; with --volumes also its data.

    \b
    Example:
      provision down --volumes --yes
    """
    from . import api

    cfg = obj.config()
    if volumes and cfg.volume and not yes:
        _confirm(f"Remove volume {cfg.volume} and all the data in it (databases, cached templates and snapshots)?")
    result = api.down(cfg, volumes=volumes)
    click.echo(f"container {cfg.container}: {'removed' if result.container_removed else 'not present'}")
    if volumes and cfg.volume:
        gone = "removed, with every database and snapshot in it" if result.volume_removed else "not present"
        click.echo(f"volume {cfg.volume}: {gone}")


@cli.command()
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@click.option("--tail", type=int, help="Only the last N lines.")
@pass_ctx
def logs(obj: Context, follow: bool, tail: int | None) -> None:
    """Print the container's log.

    \b
    Example:
      provision logs --tail 50
    """
    from . import api

    out = sys.stdout.buffer
    for chunk in api.logs(obj.config(), follow=follow, tail=tail):
        out.write(chunk)
        out.flush()


@cli.command()
@click.argument("database", required=False, shell_complete=complete_databases)
@pass_ctx
def psql(obj: Context, database: str | None) -> None:
    """Open an interactive psql on DATABASE (default: the first configured one).

    \b
    Example:
      provision psql chatbi_demo
    """
    from . import api

    command = api.psql_command(obj.config(), database)
    sys.stdout.flush()
    os.execvpe(command.argv[0], command.argv, command.env)


@cli.command()
@click.argument("database", required=False, shell_complete=complete_databases)
@click.option("--show-password", is_flag=True, help="Print the real password instead of ***.")
@pass_ctx
def url(obj: Context, database: str | None, show_password: bool) -> None:
    """Print a connection URL for DATABASE (password masked unless --show-password).

    \b
    Example:
      export DATABASE_URL="$(provision url chatbi --show-password)"
    """
    # Not through api, which imports the build pipeline and so psycopg2: a URL needs no server
    # library (the lazy boundary, see tests/unit/test_lazy_imports.py).
    from .targets import make_target

    cfg = obj.config()
    name = cfg.database(database).name if database else cfg.databases[0].name
    click.echo(make_target(cfg).endpoint().dsn(name, show_password))


@cli.command()
@click.option("-y", "--yes", is_flag=True, help="Replace databases that hold tables without asking.")
@click.option("--dry-run", is_flag=True, help="Print the plan (steps, sources with size and sha256); touch nothing.")
@_only_option("Rebuild only this database (repeatable).")
@click.option("--skip-demo", is_flag=True, help="Leave demo databases (demo: true) alone.")
@click.option("--demo-scale", type=int, help="Demo data scale (1 = about 10k orders).")
@click.option("--no-cache", is_flag=True, help="Build from the SQL even when a cached template matches.")
@click.option("--no-wait", is_flag=True, help="Fail at once if another provisioner is running.")
@click.option("--recreate", is_flag=True, help="Replace a container that differs from the config (keeps the volume).")
@click.option("--allow-remote", is_flag=True, default=None, help="Allow target: server on a non-local host.")
@click.option("--sync-cleanup", is_flag=True, help="Drop old copies and refresh the cache before exiting.")
@_timeout_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@pass_ctx
def fresh(
    obj: Context,
    yes: bool,
    dry_run: bool,
    only: tuple[str, ...],
    skip_demo: bool,
    demo_scale: int | None,
    no_cache: bool,
    no_wait: bool,
    recreate: bool,
    allow_remote: bool | None,
    sync_cleanup: bool,
    timeout: float | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Rebuild the configured databases from their SQL, safely.

    Each database is built in a staging copy (or cloned from a cached template when
    its sources are unchanged), stamped with its Alembic revision, verified, and then
    swapped into place in one transaction. On any failure the old database is untouched.

    \b
    Example:
      provision fresh --yes
      provision fresh --only chatbi --no-cache --yes
      provision -c examples/sqlclient/provision.yaml fresh --dry-run
    """
    from . import api

    cfg = obj.config(
        demo_scale=demo_scale,
        timeout=timeout,
        allow_remote=allow_remote,
        cleanup="sync" if sync_cleanup else None,
    )
    if dry_run:
        plan = api.plan_fresh(cfg, only=only, skip_demo=skip_demo, use_cache=not no_cache)
        if as_json:
            data = dataclasses.asdict(plan)
            for planned, rendered in zip(plan.databases, data["databases"], strict=True):
                rendered["sources"] = [{"path": f.display, "size": f.size, "sha256": f.sha256} for f in planned.sources]
            click.echo(json.dumps(data, indent=2))
            return
        click.echo(
            f"dry run: nothing will be touched ({plan.target} target"
            f"{', container ' + plan.container if plan.container else ''})"
        )
        for planned in plan.databases:
            click.echo(f"{planned.name}:")
            for step in planned.steps:
                click.echo(f"  - {step}")
            for src in planned.sources:
                click.echo(f"    {src.display}  {src.size} bytes  sha256 {src.sha256}")
        return

    result = api.fresh(
        cfg,
        yes=yes,
        confirm=_confirm_replace,
        only=only,
        skip_demo=skip_demo,
        use_cache=False if no_cache else None,
        wait_for_lock=not no_wait,
        recreate=recreate,
        on_event=_echo_event(quiet or as_json),
    )
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(result), indent=2))
    elif not quiet:
        for db in result.databases:
            revision = f", alembic {db.alembic_revision}" if db.alembic_revision else ""
            click.echo(f"{db.name}: {db.action}, {db.tables} tables{revision}")
        click.echo(f"done in {result.seconds:.2f}s")


@cli.command()
@click.option("--live", is_flag=True, help="Compare the live databases with a fresh build from their sources.")
@_only_option("Check only this database (repeatable).")
@click.option("--column-order", is_flag=True, help="Also report columns in a different order.")
@_timeout_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the differences.")
@pass_ctx
def check(
    obj: Context,
    live: bool,
    only: tuple[str, ...],
    column_order: bool,
    timeout: float | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Find schema drift; exit 11 when there is some.

    By default each database with both SQL sources and migrations is built both ways in scratch
    copies (the SQL stamped at its revision, and the migrations from empty to that revision) and
    their schemas are compared. With --live, the live database is compared with a fresh build.
    Nothing in place is touched.

    \b
    Example:
      provision check
      provision check --live --only chatbi --json
    """
    from . import api

    cfg = obj.config(timeout=timeout)
    result = api.check(cfg, only=only, live=live, column_order=column_order, on_event=_echo_event(True))
    if as_json:
        click.echo(json.dumps({**dataclasses.asdict(result), "drift": result.drift}, indent=2))
    else:
        from .builds.schema import render

        for db in result.databases:
            count = len(db.differences)
            verdict = f"{count} difference{'s' if count != 1 else ''}" if count else "no drift"
            if count or not quiet:
                click.echo(f"{db.name}: {verdict}: {db.left} vs {db.right}  ({db.seconds:.2f}s)")
            for line in render(db.differences):
                click.echo(f"  {line}")
            if db.note and not quiet:
                click.echo(f"  note: {db.note}")
    if result.drift:
        sys.exit(DRIFT_FOUND)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")
@pass_ctx
def doctor(obj: Context, as_json: bool) -> None:
    """Say what is wrong with this machine's setup, and how to fix it; exit 12 if a check fails.

    Checks the engine (how it was found, its socket, its version), the image, free disk, the
    port, the container and its drift, the server, copies left by crashed runs, templates and
    the provisioner lock (for target: server, psql and the server). Changes nothing.

    \b
    Example:
      provision doctor
      DOCKER_HOST=unix:///tmp/nope.sock provision doctor --json
    """
    cfg = obj.config()  # first: a broken config is reported without importing the server libraries
    from . import api

    result = api.doctor(cfg)
    if as_json:
        click.echo(json.dumps({**dataclasses.asdict(result), "passed": result.passed}, indent=2))
    else:
        marks = {"ok": "  ok", "warn": "warn", "fail": "FAIL"}
        for check in result.checks:
            click.echo(f"{marks[check.status]}  {check.name:<15} {check.detail}")
            if check.fix and check.status != "ok":
                click.echo(f"      {'':<15} fix: {check.fix}")
    if not result.passed:
        sys.exit(DOCTOR_FAILED)


@cli.group()
def snapshot() -> None:
    """Save, list, restore, remove and export snapshots of the databases.

    A snapshot is a copy of a database kept on the server; a restore swaps it back in place
    (a rename, whatever the size, once its standby copy is ready). Snapshots belong to one
    database each, survive `fresh`, and go only with `snapshot rm` or `down --volumes`.

    \b
    Example:
      provision snapshot save before-migration
      provision snapshot restore before-migration --yes
    """


def _db_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--db",
        "databases",
        multiple=True,
        metavar="DB",
        shell_complete=complete_databases,
        help="Only this database (repeatable; default: all).",
    )(f)


def _json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")(f)


def _size(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def _echo_json(result: Any) -> None:
    click.echo(json.dumps(dataclasses.asdict(result), indent=2))


@snapshot.command("save")
@click.argument("name")
@_db_option
@click.option("--force", is_flag=True, help="Replace a snapshot of the same name.")
@_json_option
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@pass_ctx
def snapshot_save(obj: Context, name: str, databases: tuple[str, ...], force: bool, as_json: bool, quiet: bool) -> None:
    """Save snapshot NAME of every configured database (or --db). Ends their other sessions.

    \b
    Example:
      provision snapshot save morning --db chatbi
    """
    from . import api

    result = api.snapshot_save(
        obj.config(), name, databases=databases, force=force, on_event=_echo_event(quiet or as_json)
    )
    if as_json:
        _echo_json(result)
    elif not quiet:
        for snap in result.snapshots:
            again = " (replaced)" if snap.database in result.replaced else ""
            click.echo(f"{snap.database}: saved snapshot {snap.name}, {_size(snap.size_bytes)}{again}")
        click.echo(f"done in {result.seconds:.2f}s")


@snapshot.command("list")
@_db_option
@_json_option
@pass_ctx
def snapshot_list(obj: Context, databases: tuple[str, ...], as_json: bool) -> None:
    """List the snapshots: name, database, size, when, and the database's revision then.

    \b
    Example:
      provision snapshot list --json | jq '.snapshots[].name'
    """
    from . import api

    result = api.snapshot_list(obj.config(), databases=databases)
    if as_json:
        _echo_json(result)
        return
    if not result.snapshots:
        click.echo("no snapshots (save one with `provision snapshot save NAME`)")
    for snap in result.snapshots:
        alembic = ",".join(snap.alembic_versions) if snap.alembic_versions else "-"
        origin = snap.provenance or {}
        built = f"hash {str(origin.get('hash') or '-')[:12]}"
        ready = "" if snap.standby else "  (standby not ready: restore clones)"
        click.echo(
            f"{snap.name:<20} {snap.database:<14} {_size(snap.size_bytes):>9}  {snap.created_at or '-'}  "
            f"alembic {alembic}  {built}{ready}"
        )
    limit = f" of {_size(result.limit_bytes)} allowed (snapshot_limit_mb)" if result.limit_bytes else ""
    click.echo(f"total {_size(result.total_bytes)} with the standby copies{limit}")


@snapshot.command("restore")
@click.argument("name")
@_db_option
@click.option("-y", "--yes", is_flag=True, help="Replace databases that hold tables without asking.")
@_json_option
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@pass_ctx
def snapshot_restore(
    obj: Context, name: str, databases: tuple[str, ...], yes: bool, as_json: bool, quiet: bool
) -> None:
    """Put snapshot NAME back in place of its databases (or --db), in one atomic swap.

    \b
    Example:
      provision snapshot restore morning --yes
    """
    from . import api

    result = api.snapshot_restore(
        obj.config(),
        name,
        databases=databases,
        yes=yes,
        confirm=_confirm_replace,
        on_event=_echo_event(quiet or as_json),
    )
    if as_json:
        _echo_json(result)
    elif not quiet:
        for db in result.databases:
            how = "from its standby copy" if db.how == "standby" else "cloned from the snapshot"
            click.echo(f"{db.database}: restored snapshot {result.name} ({how})")
        click.echo(f"done in {result.seconds:.2f}s")


@snapshot.command("rm")
@click.argument("name")
@_db_option
@_json_option
@pass_ctx
def snapshot_rm(obj: Context, name: str, databases: tuple[str, ...], as_json: bool) -> None:
    """Remove snapshot NAME of its databases (or --db).

    \b
    Example:
      provision snapshot rm morning
    """
    from . import api

    result = api.snapshot_rm(obj.config(), name, databases=databases)
    if as_json:
        _echo_json(result)
    else:
        click.echo(f"removed snapshot {result.name} of {', '.join(result.databases)}")


@snapshot.command("export")
@click.argument("name")
@click.argument("file", type=click.Path(dir_okay=False, writable=True))
@click.option(
    "--db", "database", metavar="DB", shell_complete=complete_databases, help="The database whose snapshot to export."
)
@_json_option
@pass_ctx
def snapshot_export(obj: Context, name: str, file: str, database: str | None, as_json: bool) -> None:
    """Write snapshot NAME as a pg_dump custom-format FILE (pg_restore reads it).

    \b
    Example:
      provision snapshot export morning chatbi-morning.dump --db chatbi
    """
    from . import api

    result = api.snapshot_export(obj.config(), name, file, database=database)
    if as_json:
        _echo_json(result)
    else:
        click.echo(f"{result.database}: snapshot {result.name} written to {result.path}, {_size(result.size_bytes)}")


@cli.group(invoke_without_command=True)
@click.option("-y", "--yes", is_flag=True, help="Drop stale or superseded branch copies without asking.")
@_json_option
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors (what the git hook runs).")
@click.pass_context
def branch(ctx: click.Context, yes: bool, as_json: bool, quiet: bool) -> None:
    """Dev databases that follow the git branch: put the checked-out branch's databases in place.

    The databases in place are kept under the branch they belong to (a rename); the checked-out
    branch's own come back by a rename when its sources still match them, or are built from its
    sources (a warm `fresh`). One atomic swap under the provisioner lock. Outside git or on a
    detached HEAD it says so and changes nothing (exit 13).

    \b
    Example:
      provision branch install-hook     # then every `git checkout` does it
      provision branch                  # or by hand, after switching
      provision branch list
    """
    if ctx.invoked_subcommand is not None:
        return
    from . import api

    obj: Context = ctx.obj
    result = api.branch_switch(obj.config(), yes=yes, confirm=_confirm_drop, on_event=_echo_event(quiet or as_json))
    if as_json:
        _echo_json(result)
        return
    if quiet:
        return
    for move in result.databases:
        if move.action == "unchanged":
            click.echo(f"{move.database}: already {result.branch}'s")
        elif move.action == "adopted":
            click.echo(f"{move.database}: now recorded as {result.branch}'s (it recorded no branch)")
        else:
            how = {"renamed": "brought back", "built": "built from its sources", "cloned": "cloned from its sources"}
            kept = f"; {move.previous}'s kept as {move.kept_as}" if move.kept_as else ""
            gone = f"; dropped {', '.join(move.dropped)}" if move.dropped else ""
            click.echo(f"{move.database}: {result.branch}'s {how.get(move.action, move.action)}{kept}{gone}")
    click.echo(f"on {result.branch}; done in {result.seconds:.2f}s")


@branch.command("list")
@_json_option
@pass_ctx
def branch_list(obj: Context, as_json: bool) -> None:
    """Each branch's databases: size, and when they were last used.

    \b
    Example:
      provision branch list --json | jq '.branches[].name'
    """
    from . import api

    result = api.branch_list(obj.config())
    if as_json:
        _echo_json(result)
        return
    if not result.branches:
        click.echo("no branch databases yet (`provision branch` records the branch checked out)")
    for info in result.branches:
        mark = "*" if info.current else " "
        where = "in place" if info.in_place else f"last used {info.last_used or '-'}"
        gone = "  (deleted from git: `provision branch prune`)" if info.in_git is False else ""
        dbs = ", ".join(f"{c.database} {_size(c.size_bytes)}" for c in info.copies)
        click.echo(f"{mark} {info.name:<24} {_size(info.size_bytes):>10}  {where}  [{dbs}]{gone}")
    limit = f" of {_size(result.limit_bytes)} allowed with the snapshots" if result.limit_bytes else ""
    click.echo(f"kept aside: {_size(result.kept_bytes)}{limit}")


@branch.command("prune")
@click.option("--merged", is_flag=True, help="Also the branches merged into the one checked out.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask before dropping them.")
@_json_option
@pass_ctx
def branch_prune(obj: Context, merged: bool, yes: bool, as_json: bool) -> None:
    """Drop the databases kept for branches deleted from git (--merged: merged ones too).

    \b
    Example:
      provision branch prune --merged --yes
    """
    from . import api

    result = api.branch_prune(obj.config(), merged=merged, yes=yes, confirm=_confirm_drop)
    if as_json:
        _echo_json(result)
    elif not result.branches:
        click.echo("nothing to prune")
    else:
        click.echo(f"pruned {', '.join(result.branches)}: {len(result.dropped)} databases, {_size(result.freed_bytes)}")


@branch.command("install-hook")
@click.option("--force", is_flag=True, help="Replace a post-checkout hook that is not provision's.")
@pass_ctx
def branch_install_hook(obj: Context, force: bool) -> None:
    """Install a git post-checkout hook that runs `provision branch` when the branch changes.

    A checkout that keeps the branch the databases follow ends in the shell, before any Python.

    \b
    Example:
      provision -c provision.yaml branch install-hook
    """
    from . import api

    result = api.branch_install_hook(obj.config(), force=force)
    click.echo(f"{'replaced' if result.replaced else 'installed'} {result.path}")


def _confirm_drop(names: Sequence[str]) -> bool:
    listing = ", ".join(names)
    if not sys.stdin.isatty():
        raise Refused(
            f"dropping {listing} needs confirmation and there is no terminal to ask: they hold a branch's data. "
            "Nothing was changed",
            hint="pass --yes to drop them",
        )
    return click.confirm(f"Drop {listing}? They hold a branch's data", default=False)


class _LeaseGroup(click.Group):
    """`provision lease DB ...` is `provision lease new DB ...`; the other words are subcommands."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["new", *args]
        return super().parse_args(ctx, args)


@cli.group(cls=_LeaseGroup)
def lease() -> None:
    """Lease private copies of a database on a shared server (target: server), with a time limit.

    `provision lease DB` prints a URL for a private copy of DB built from this checkout's sources:
    the template for their content hash is built once, by whichever client gets there first, and
    cloned for every lease. A lease expires after its TTL unless renewed; then whichever client
    runs next (or `lease gc` from cron) drops the copy.

    \b
    Example:
      export DATABASE_URL="$(provision lease chatbi --ttl 2h --name pr-1234 --show-password)"
      provision lease list
      provision lease release pr-1234
    """


def _ttl_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--ttl",
        metavar="DURATION",
        help="How long the lease lives unless renewed: 90s, 30m, 2h, 1d (default: lease_ttl, 2h).",
    )(f)


def _parse_ttl(ttl: str | None) -> float | None:
    from .config import parse_duration
    from .errors import ConfigError

    if ttl is None:
        return None
    seconds = parse_duration(ttl)
    if seconds is None:
        raise ConfigError(f"--ttl must be a duration such as 90s, 30m, 2h or 1d, got {ttl!r}")
    return seconds


def _lease_line(item: Any) -> str:
    state = "EXPIRED" if item.seconds_left <= 0 else f"expires in {item.seconds_left:.0f}s ({item.expires})"
    return f"{item.name:<20} {item.database:<12} {item.copy:<34} {_size(item.bytes):>9}  {item.owner}  {state}"


@lease.command("new")
@click.argument("database", required=False, shell_complete=complete_databases)
@_ttl_option
@click.option(
    "--name", metavar="NAME", help="Find this lease again next time (e.g. pr-1234); refreshed when the sources changed."
)
@click.option("--show-password", is_flag=True, help="Print the real password in the URL instead of ***.")
@click.option(
    "--hold", is_flag=True, help="Stay in the foreground renewing the lease; release it on Ctrl-C or SIGTERM."
)
@_timeout_option
@_json_option
@click.option("-q", "--quiet", is_flag=True, help="Print only the URL.")
@pass_ctx
def lease_new(
    obj: Context,
    database: str | None,
    ttl: str | None,
    name: str | None,
    show_password: bool,
    hold: bool,
    timeout: float | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Lease a private copy of DATABASE (default: the first configured) and print its URL.

    \b
    Example:
      provision lease chatbi --ttl 30m --name pr-1234
    """
    from . import api

    cfg = obj.config()
    seconds = _parse_ttl(ttl)

    def emit(event: Event) -> None:
        if not quiet and event.kind != "progress":
            where = f"[{event.database}] " if event.database else ""
            took = f"  {event.seconds:.2f}s" if event.seconds is not None else ""
            click.echo(f"  .. {where}{event.message}{took}", err=True)

    result = api.lease(cfg, database, ttl=seconds, name=name, timeout=timeout, on_event=emit)
    got = result.lease
    if as_json:
        _echo_json(result)
    else:
        if not quiet:
            built = ", template built" if result.built_template else ""
            click.echo(
                f"lease {got.name}: {result.action}{built}, expires {got.expires}  ({result.seconds:.3f}s)", err=True
            )
        if show_password:
            from .endpoint import Endpoint

            click.echo(Endpoint(result.host, result.port, result.user, cfg.password).dsn(got.copy, True))
        else:
            click.echo(result.url)
    if hold:
        _hold(cfg, got.name, seconds if seconds is not None else cfg.lease_ttl, quiet)


def _hold(cfg: Config, name: str, ttl: float, quiet: bool) -> None:
    """Renew every third of the TTL until Ctrl-C or SIGTERM, then release."""
    import signal
    import time

    from . import api

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    sys.stdout.flush()
    from .errors import UnknownLease

    try:
        while True:
            time.sleep(ttl / 3)
            try:
                api.lease_renew(cfg, name, ttl=ttl)
            except UnknownLease:
                raise
            except ProvisionError as exc:  # a lost connection: the next renewal may get through in time
                click.echo(f"warning: renewing lease {name} failed, trying again: {exc.message}", err=True)
    except KeyboardInterrupt:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        api.lease_release(cfg, name)
        if not quiet:
            click.echo(f"released lease {name}", err=True)


@lease.command("list")
@_json_option
@pass_ctx
def lease_list(obj: Context, as_json: bool) -> None:
    """List the leases (owner, size, expiry) and templates on the server, and their total disk use.

    \b
    Example:
      provision lease list --json
    """
    from . import api

    result = api.lease_list(obj.config())
    if as_json:
        _echo_json(result)
        return
    for item in result.leases:
        click.echo(_lease_line(item))
    for tpl in result.templates:
        click.echo(f"template {tpl.template}  {_size(tpl.bytes)}  {tpl.leases} lease(s)  last used {tpl.last_used}")
    cap = f" of {_size(result.max_bytes)} allowed (lease_max_bytes)" if result.max_bytes else ""
    click.echo(f"{len(result.leases)} lease(s), {len(result.templates)} template(s): {_size(result.total_bytes)}{cap}")


@lease.command("release")
@click.argument("name")
@_json_option
@pass_ctx
def lease_release(obj: Context, name: str, as_json: bool) -> None:
    """Drop lease NAME and its copy now.

    \b
    Example:
      provision lease release pr-1234
    """
    from . import api

    result = api.lease_release(obj.config(), name)
    if as_json:
        _echo_json(result)
    else:
        click.echo(f"released lease {result.name}: dropped {result.copy}")


@lease.command("renew")
@click.argument("name")
@_ttl_option
@_json_option
@pass_ctx
def lease_renew(obj: Context, name: str, ttl: str | None, as_json: bool) -> None:
    """Extend lease NAME to its TTL from now (exit 2 when it already expired).

    \b
    Example:
      provision lease renew pr-1234 --ttl 1h
    """
    from . import api

    result = api.lease_renew(obj.config(), name, ttl=_parse_ttl(ttl))
    if as_json:
        _echo_json(result)
    else:
        click.echo(f"renewed lease {result.name}: expires {result.expires}")


@lease.command("gc")
@_json_option
@pass_ctx
def lease_gc(obj: Context, as_json: bool) -> None:
    """Drop the copies of expired leases (and copies no lease names). Safe to run from cron.

    \b
    Example:
      provision lease gc
    """
    from . import api

    result = api.lease_gc(obj.config())
    if as_json:
        _echo_json(result)
    else:
        click.echo(f"dropped {len(result.expired)} expired lease copies, {len(result.orphans)} orphaned copies")
        for name in result.expired + result.orphans:
            click.echo(f"  {name}")


def _confirm_replace(at_risk: dict[str, int]) -> bool:
    listing = ", ".join(f"{name} ({count} tables)" for name, count in at_risk.items())
    if not sys.stdin.isatty():
        raise Refused(f"{listing} hold data and there is no terminal to ask", hint="pass --yes to replace them")
    return click.confirm(f"Replace {listing}? Their current contents will be dropped", default=False)


@cli.command("_housekeep", hidden=True)
def housekeep_command() -> None:
    """Internal: the detached tidy-up after `fresh` (config arrives on stdin)."""

    from . import housekeeping

    housekeeping.run(sys.stdin.buffer.read())


@cli.command("_lease_spares", hidden=True)
def lease_spares_command() -> None:
    """Internal: the detached top-up of a lease's spare copies (the job arrives on stdin)."""
    from . import spares

    spares.run(sys.stdin.buffer.read())


def _confirm(question: str) -> None:
    if not sys.stdin.isatty():
        raise Refused(f"{question} There is no terminal to ask", hint="pass --yes to confirm")
    if not click.confirm(question, default=False):
        raise Refused("not confirmed; nothing was removed")


def _fail(exc: ProvisionError, debug: bool) -> NoReturn:
    if debug:
        traceback.print_exception(exc)
    click.echo(f"Error: {exc.message}", err=True)
    if exc.detail:
        click.echo(exc.detail, err=True)
    if exc.hint:
        click.echo(f"Hint: {exc.hint}", err=True)
    sys.exit(exc.exit_code)


def main(argv: list[str] | None = None) -> None:
    """Entry point: the single place where errors become messages and exit codes."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:]) or os.environ.get(
        "PROVISION_DEBUG", ""
    ).lower() in ("1", "true", "yes", "on")
    try:
        code = cli.main(args=argv, prog_name="provision", standalone_mode=False)
    except ProvisionError as exc:
        _fail(exc, debug)
    except (click.exceptions.Abort, KeyboardInterrupt):
        # click turns Ctrl-C into Abort; either way nothing half-built is in place.
        click.echo("Interrupted; nothing half-built was left in place.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2 if exc.exit_code in (1, 2) else exc.exit_code)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as exc:  # noqa: BLE001 - the one place that turns surprises into exit code 1
        if debug:
            traceback.print_exception(exc)
        click.echo(f"Error: unexpected {type(exc).__name__}: {exc}", err=True)
        click.echo("Hint: run again with --debug for the traceback, and report it", err=True)
        sys.exit(1)
    if isinstance(code, int) and code:
        sys.exit(code)
