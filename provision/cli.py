"""The command line: parses options, calls provision.api, renders results, maps errors to exit codes."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import traceback
from collections.abc import Callable
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
        from .build.schema import render

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
