"""Dev databases that follow the git branch: each branch's databases are kept under its name and swapped in by renames.

The live database DB records the branch it belongs to in its provenance comment ("branch").
When the checked-out branch differs, one transaction renames DB to `DB__br_<old branch>` (its
comment keeps its provenance, the branch and when it was put aside) and renames the new
branch's copy `DB__br_<new branch>` into place, or a copy just built from the new branch's
sources when it has none or its content hash no longer matches them. Nothing is copied on a
switch, so its cost does not depend on the size. Every step runs under the provisioner lock;
a kill -9 leaves the transaction done or not done, so each database is whole and belongs to
exactly one branch. A branch copy is never touched by the template cache or the leftover
clean-up (its kind, `br`, is neither); it goes only with `branch prune` or `down --volumes`.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ..checkpoints import checkpoint
from ..config import Config
from ..errors import ConfigError, NoGitBranch, Refused
from ..events import Event, EventFn, ignore
from ..gitrepo import Checkout, checkout, hooks_dir
from ..names import derived_name, derived_prefix, spare_name, template_name
from ..postgres import dbops
from ..postgres.dbops import Connection, DatabaseRow
from ..postgres.retry import call_with_retries
from ..results import BranchCopy, BranchInfo, BranchList, BranchMove, HookResult
from .pipeline import BuildPlan, Server, ensure_template, now, provenance, read_comment
from .snapshots import list_snapshots

KIND = "br"
# The hook's note of the branch the server's databases last followed, beside HEAD in the git directory.
STATE_FILE = "provision-branch"

ConfirmDrop = Callable[[Sequence[str]], bool]


def slug(branch: str) -> str:
    """A database-name-safe, unique suffix for a branch: readable prefix + hash (at most 24 bytes)."""
    readable = re.sub(r"[^a-z0-9]+", "-", branch.lower()).strip("-")[:15] or "branch"
    return f"{readable}-{hashlib.sha1(branch.encode()).hexdigest()[:8]}"


def branch_db(database: str, branch: str) -> str:
    return derived_name(database, KIND, slug(branch))


def owner(row: DatabaseRow | None) -> str | None:
    """The branch a database belongs to, from its comment; None when it records none."""
    record = read_comment(row.comment) if row is not None else None
    value = record.get("branch") if record else None
    return value if isinstance(value, str) else None


def _record(row: DatabaseRow) -> dict[str, object]:
    return dict(read_comment(row.comment) or {})


def _json(record: dict[str, object]) -> str:
    return json.dumps(record, separators=(",", ":"))


def copies(admin: Connection, databases: Sequence[str]) -> list[BranchCopy]:
    """Every branch's copy of `databases`, the live ones included (those that record a branch)."""
    rows = dbops.list_databases(admin)
    found = []
    for database in databases:
        live = rows.get(database)
        if live is not None and owner(live) is not None:
            record = _record(live)
            found.append(
                BranchCopy(
                    str(owner(live)), database, database, dbops.database_size(admin, database),
                    _str(record.get("branch_at")), True, _str(record.get("hash")),
                )
            )  # fmt: skip
        prefix = derived_prefix(database, KIND)
        for name, row in rows.items():
            branch = owner(row) if name.startswith(prefix) else None
            if branch is None:
                continue
            record = _record(row)
            found.append(
                BranchCopy(
                    branch, database, name, dbops.database_size(admin, name),
                    _str(record.get("stashed_at")), False, _str(record.get("hash")),
                )
            )  # fmt: skip
    return found


def _str(value: object) -> str | None:
    return str(value) if value is not None else None


def kept_bytes(admin: Connection, databases: Sequence[str]) -> int:
    """Disk taken by the branches' copies put aside (the live ones are not extra): counted against snapshot_limit_mb."""
    return sum(c.size_bytes for c in copies(admin, databases) if not c.live)


def listing(admin: Connection, databases: Sequence[str], current: str | None, in_git: set[str] | None) -> BranchList:
    """Each branch's copies, grouped; `in_git` (None when unknown) marks branches deleted from git."""
    by_branch: dict[str, list[BranchCopy]] = {}
    for copy in copies(admin, databases):
        by_branch.setdefault(copy.branch, []).append(copy)
    branches = []
    for name in sorted(by_branch, key=lambda b: (b != current, b)):
        found = tuple(sorted(by_branch[name], key=lambda c: c.database))
        used = [c.last_used for c in found if c.last_used and not c.live]
        branches.append(
            BranchInfo(
                name,
                name == current,
                any(c.live for c in found),
                None if in_git is None else name in in_git,
                found,
                sum(c.size_bytes for c in found),
                max(used) if used else None,
            )
        )
    kept = sum(c.size_bytes for b in branches for c in b.copies if not c.live)
    return BranchList(current, tuple(branches), kept)


# ---------------------------------------------------------------- the switch


def switch(
    cfg: Config,
    server: Server,
    admin: Connection,
    plans: Sequence[BuildPlan],
    branch: str,
    confirm_drop: ConfirmDrop | None,
    on_event: EventFn = ignore,
) -> tuple[BranchMove, ...]:
    """Put `branch`'s databases in place, keeping the current ones under their branch (call under the lock).

    Each live database that records another branch is renamed aside under that branch's name; the
    new branch's copy comes back by a rename when its content hash matches the sources now, else a
    copy is built (or cloned from the template cache) from the sources. All renames are one
    transaction. A live database that records no branch (built before this feature, or by a run
    killed before it recorded one) is adopted by `branch`. Refused, with nothing changed, when it
    would drop a copy that holds a branch's data without `confirm_drop`, or pass snapshot_limit_mb.
    """
    rows = dbops.list_databases(admin)
    version = server.server_version
    moves: list[BranchMove] = []
    renames: list[dbops.Rename] = []
    to_build: list[BuildPlan] = []
    dropping: list[tuple[str, str]] = []  # (copy, why)
    for plan in plans:
        db = plan.name
        live = rows.get(db)
        previous = owner(live)
        if live is not None and previous in (None, branch):
            moves.append(BranchMove(db, previous, "adopted" if previous is None else "unchanged", None, None))
            continue
        incoming = branch_db(db, branch)
        current_hash = plan.content_hash(version)
        stashed = rows.get(incoming)
        matches = stashed is not None and _record(stashed).get("hash") == current_hash
        kept_as = branch_db(db, previous) if live is not None and previous is not None else None
        if kept_as is not None and kept_as in rows:
            dropping.append((kept_as, f"an older copy of {previous}'s {db}, superseded by the one in place"))
        if stashed is not None and not matches:
            dropping.append((incoming, f"{branch}'s {db}, built from sources that have changed since"))
        if not matches:
            to_build.append(plan)
        moves.append(BranchMove(db, previous, "renamed" if matches else "built", kept_as, None))
    switching = [m for m in moves if m.action in ("renamed", "built")]
    if not switching:
        _adopt(admin, rows, moves, branch)
        return tuple(moves)
    if dropping and not (confirm_drop is not None and confirm_drop([f"{name} ({why})" for name, why in dropping])):
        listing = "; ".join(f"{name} ({why})" for name, why in dropping)
        raise Refused(
            f"switching to {branch} would drop {listing}: the only copy of that data. Nothing was changed",
            hint="pass --yes to drop them and rebuild from the sources; or save what you need first "
            "(`provision snapshot save NAME` after switching by hand)",
        )
    _check_limit(cfg, admin, rows, moves, [name for name, _ in dropping], branch)

    built: dict[str, tuple[str, str]] = {}  # database -> (staging copy, how)
    for plan in to_build:
        built[plan.name] = _stage(server, admin, plan, on_event)
    checkpoint("branch-staged")

    olds: list[str] = []
    final: list[BranchMove] = []
    stamp = now()
    for move in moves:
        if move.action not in ("renamed", "built"):
            final.append(move)
            continue
        db = move.database
        incoming = branch_db(db, branch)
        for name, _ in dropping:
            if name in (move.kept_as, incoming) and name in rows:
                old = derived_name(db, "old", secrets.token_hex(4))
                renames.append(dbops.Rename(name, old))
                olds.append(old)
        if move.kept_as is not None:
            aside = {**_record(rows[db]), "branch": move.previous, "stashed_at": stamp}
            renames.append(dbops.Rename(db, move.kept_as, _json(aside)))
        if move.action == "renamed":
            back = {k: v for k, v in _record(rows[incoming]).items() if k != "stashed_at"}
            renames.append(dbops.Rename(incoming, db, _json({**back, "branch": branch, "branch_at": stamp})))
            final.append(move)
        else:
            stage, how = built[db]
            plan = next(p for p in to_build if p.name == db)
            record = _built_record(admin, plan, version)
            renames.append(dbops.Rename(stage, db, _json({**record, "branch": branch, "branch_at": stamp})))
            final.append(BranchMove(db, move.previous, how, move.kept_as, None))
    _swap(admin, renames, [m.database for m in moves if m.action in ("renamed", "built")], branch)
    checkpoint("branch-swapped")
    for old in olds:
        dbops.drop_database(admin, old)
    if any(m.action == "adopted" for m in final):
        _adopt(admin, dbops.list_databases(admin), final, branch)
    final = [
        BranchMove(m.database, m.previous, m.action, m.kept_as, tuple(n for n, _ in dropping if db_of(n, m.database)))
        if m.action not in ("unchanged", "adopted")
        else m
        for m in final
    ]
    return tuple(final)


def db_of(copy: str, database: str) -> bool:
    return copy.startswith(derived_prefix(database, KIND))


def _adopt(admin: Connection, rows: dict[str, DatabaseRow], moves: Sequence[BranchMove], branch: str) -> None:
    for move in moves:
        if move.action == "adopted" and move.database in rows:
            record = {**_record(rows[move.database]), "branch": branch, "branch_at": now()}
            dbops.comment_on(admin, move.database, _json(record))


def _built_record(admin: Connection, plan: BuildPlan, version: int) -> dict[str, object]:
    """The provenance of a copy of the plan's template, as `fresh` records it."""
    content_hash = plan.content_hash(version)
    tpl = dbops.list_databases(admin).get(template_name(plan.name, content_hash))
    made = read_comment(tpl.comment) if tpl is not None else None
    built_at = str((made or {}).get("built_at", now()))
    tables = int(str((made or {}).get("tables", 0)))
    return dict(json.loads(provenance(plan, content_hash, "database", built_at, tables)))


def _stage(server: Server, admin: Connection, plan: BuildPlan, on_event: EventFn) -> tuple[str, str]:
    """A copy built from the plan's sources under a staging name: the fresh machinery's template
    (built now if the cache has none), taken as its spare copy or cloned. Returns (name, how)."""
    started = time.monotonic()
    content_hash = plan.content_hash(server.server_version)
    had_template = template_name(plan.name, content_hash) in dbops.list_databases(admin)
    tpl = ensure_template(server, plan, on_event)
    stage = derived_name(plan.name, "stage", secrets.token_hex(4))
    spare = spare_name(plan.name, content_hash)
    if spare in dbops.list_databases(admin):
        # Claimed under a staging name: a kill from here on leaves a leftover, not a used spare.
        dbops.rename_database(admin, spare, stage)
    else:
        with dbops.server_errors(f"cloning the template of {plan.name}"):
            dbops.copy_database(admin, stage, tpl)
    how = "cloned" if had_template else "built"
    on_event(Event("step", f"{how} {plan.name} from its sources", plan.name, time.monotonic() - started))
    return stage, how


def _swap(admin: Connection, renames: Sequence[dbops.Rename], databases: Sequence[str], branch: str) -> None:
    # A client can reconnect between the termination and the renames (ObjectInUse): retried briefly.
    def attempt() -> None:
        for step in renames:
            dbops.terminate_sessions(admin, step.name)
        dbops.rename_all(admin, renames)

    with dbops.server_errors(f"switching {', '.join(databases)} to {branch}"):
        call_with_retries(attempt, retry_on=dbops.ObjectInUse, interval=0.05, timeout=10)


def _check_limit(
    cfg: Config,
    admin: Connection,
    rows: dict[str, DatabaseRow],
    moves: Sequence[BranchMove],
    dropped: Sequence[str],
    branch: str,
) -> None:
    """Refused when the switch would take snapshots plus the branches' copies past snapshot_limit_mb."""
    if not cfg.snapshot_limit_mb:
        return
    names = [db.name for db in cfg.databases]
    snaps = sum(s.disk_bytes for s in list_snapshots(admin, names))
    kept = {c.name: c.size_bytes for c in copies(admin, names) if not c.live}
    for move in moves:
        if move.kept_as is not None:
            kept[move.kept_as] = dbops.database_size(admin, move.database)
        if move.action == "renamed":
            kept.pop(branch_db(move.database, branch), None)
    for name in dropped:
        if name not in {m.kept_as for m in moves}:
            kept.pop(name, None)
    total = snaps + sum(kept.values())
    limit = cfg.snapshot_limit_mb * 1_000_000
    if total > limit:
        raise Refused(
            f"switching to {branch} would keep the databases of the branch in place aside and take snapshots "
            f"and branch copies to {total / 1e6:.0f} MB, past snapshot_limit_mb ({cfg.snapshot_limit_mb} MB). "
            "Nothing was changed: the databases in place still belong to the branch they were built on",
            hint="`provision branch prune` (branches deleted from git; --merged for merged ones), "
            "`provision snapshot rm NAME`, or raise snapshot_limit_mb",
        )


# ---------------------------------------------------------------- marks, notices, the hook


def mark(admin: Connection, databases: Sequence[str], branch: str) -> None:
    """Record `branch` as the owner of the live `databases` (after `fresh` or a restore built them on it)."""
    rows = dbops.list_databases(admin)
    for name in databases:
        if name in rows and owner(rows[name]) != branch:
            record = {**_record(rows[name]), "branch": branch, "branch_at": now()}
            dbops.comment_on(admin, name, _json(record))


def notice(rows: dict[str, DatabaseRow], databases: Sequence[str], branch: str, replacing: bool = False) -> str | None:
    """A line saying the databases in place belong to another branch than the one checked out, or None.
    `replacing`: said by `fresh`, which replaces them (and their data) with a build for this branch."""
    others = sorted({b for name in databases if (b := owner(rows.get(name))) is not None and b != branch})
    if not others:
        return None
    said = f"the git branch changed to {branch}, but the databases in place belong to {', '.join(others)}"
    if replacing:
        return said + f": this fresh replaces them; `provision branch` would have kept them as {', '.join(others)}'s"
    return said + f": `provision branch` keeps them as {', '.join(others)}'s and brings back {branch}'s"


def state_file(cfg: Config, here: Checkout) -> Path:
    """The hook's note of the branch the databases follow: per worktree, per config file."""
    source = str(Path(cfg.source).resolve()) if Path(cfg.source).is_file() else cfg.source
    tag = hashlib.sha1(source.encode()).hexdigest()[:8]
    return here.git_dir / f"{STATE_FILE}-{tag}"


def remember(cfg: Config, here: Checkout, branch: str) -> None:
    """Note for the hook that the databases follow `branch` now, so a checkout that stays on it starts no Python."""
    path = state_file(cfg, here)
    partial = path.with_name(path.name + ".partial")
    try:
        partial.write_text(branch + "\n", encoding="utf-8")
        partial.replace(path)
    except OSError:
        pass  # only a shortcut for the hook: without it, the hook asks the server


HOOK_MARK = "# provision branch install-hook"


def hook_script(command: Sequence[str], config: str, top: Path, state: Path) -> str:
    """The post-checkout hook. A checkout that leaves the branch as the databases follow it ends in the shell
    (one `git` call, no Python); so do a file checkout ($3 = 0), a detached HEAD, and a checkout in another
    worktree of the repository (hooks are shared; the config follows the worktree it was installed from)."""
    import shlex

    return f"""#!/bin/sh
{HOOK_MARK}: the dev databases follow the branch checked out.
[ "$3" = 1 ] || exit 0
[ "$(pwd -P)" = {shlex.quote(str(top))} ] || exit 0
ref=$(git symbolic-ref -q HEAD) || exit 0
if [ -f {shlex.quote(str(state))} ]; then
    read -r last < {shlex.quote(str(state))}
    [ "$last" = "${{ref#refs/heads/}}" ] && exit 0
fi
exec {shlex.join(command)} -c {shlex.quote(config)} branch --quiet
"""


def prune(admin: Connection, databases: Sequence[str], branches: Sequence[str]) -> tuple[list[str], int]:
    """Drop the copies put aside of `branches` (never a live database). Returns the names and bytes freed."""
    dropped, freed = [], 0
    for copy in copies(admin, databases):
        if copy.branch in branches and not copy.live:
            dbops.drop_database(admin, copy.name)
            dropped.append(copy.name)
            freed += copy.size_bytes
    return dropped, freed


# ---------------------------------------------------------------- what the verbs share


def checkout_or_none(base_dir: Path) -> Checkout | None:
    """The git checkout holding the config, on a branch; None outside git or on a detached HEAD."""
    try:
        return checkout(base_dir)
    except NoGitBranch:
        return None


def note_for(admin: Connection, names: Sequence[str], here: Checkout | None, replacing: bool = False) -> str | None:
    return notice(dbops.list_databases(admin), names, here.branch, replacing) if here else None


def mark_here(cfg: Config, admin: Connection, names: Sequence[str], here: Checkout | None) -> None:
    """After a verb put databases in place on this branch: they belong to it now (and the hook knows)."""
    if here is not None:
        mark(admin, names, here.branch)
        remember(cfg, here, here.branch)


def install_hook(cfg: Config, force: bool) -> HookResult:
    """Write the post-checkout hook (see api.branch_install_hook)."""
    here = checkout(cfg.base_dir)
    if cfg.source == "built-in defaults":
        raise ConfigError(
            "the hook needs a config file to run `provision branch` with",
            hint="pass -c FILE (or set $PROVISION_CONFIG)",
        )
    path = hooks_dir(here.top) / "post-checkout"
    replaced = path.exists()
    if replaced and HOOK_MARK not in path.read_text(encoding="utf-8", errors="replace") and not force:
        raise Refused(
            f"{path} exists and is not provision's",
            hint="pass --force to replace it, or add `provision -c CONFIG branch --quiet` to it yourself",
        )
    config = str(Path(cfg.source).resolve())
    # The console script beside this Python when there is one: it skips runpy, a few ms of every switch.
    script = Path(sys.executable).parent / "provision"
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "provision"]
    text = hook_script(command, config, here.top.resolve(), state_file(cfg, here).resolve())
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.chmod(0o755)
    partial.replace(path)
    return HookResult(str(path), replaced)
