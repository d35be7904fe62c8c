"""The app's own migrations: where they are, what they reach, and what they hash to (appcommand.py runs them).

Alembic's revision graph is read from the version files' `revision` / `down_revision` lines
(with `ast`, never importing them), so provision needs no Alembic of its own and knows the
head in milliseconds; the migrations themselves always run through the app's own command.
"""

from __future__ import annotations

import ast
import configparser
import contextlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..config import Config, MigrationsConfig
from ..endpoint import Endpoint
from ..errors import ConfigError
from . import appcommand
from .appcommand import CommandPlan, CommandRun, expand_input, plan_command

# The placeholders a migrations command may use.
REVISION_PLACEHOLDER = "{revision}"
INI_PLACEHOLDER = "{ini}"
DEFAULT_ALEMBIC_COMMAND = ("alembic", "-c", INI_PLACEHOLDER, "upgrade", REVISION_PLACEHOLDER)
# ---------------------------------------------------------------- Alembic's revision graph


@dataclass(frozen=True)
class Revision:
    id: str
    down: tuple[str, ...]
    path: Path


@dataclass(frozen=True)
class RevisionGraph:
    """Alembic revisions by id, read from the version files."""

    revisions: Mapping[str, Revision]

    def heads(self) -> list[str]:
        """The revisions nothing revises: what `alembic heads` reports."""
        parents = {down for rev in self.revisions.values() for down in rev.down}
        return sorted(rid for rid in self.revisions if rid not in parents)

    def ancestry(self, revision: str) -> set[str]:
        """`revision` and every revision it depends on."""
        seen: set[str] = set()
        pending = [revision]
        while pending:
            rid = pending.pop()
            if rid in seen or rid not in self.revisions:
                continue
            seen.add(rid)
            pending.extend(self.revisions[rid].down)
        return seen

    def behind(self, current: Sequence[str], target: str) -> int | None:
        """How many revisions `target` has that `current` lacks; None when a current one is unknown."""
        if any(rid not in self.revisions for rid in current):
            return None
        applied: set[str] = set()
        for rid in current:
            applied |= self.ancestry(rid)
        return len(self.ancestry(target) - applied)


def read_alembic_ini(ini: Path) -> list[Path]:
    """The directories an alembic.ini names: script_location (with env.py) and any version_locations."""
    parser = configparser.ConfigParser(defaults={"here": str(ini.parent)})
    try:
        with ini.open(encoding="utf-8") as fh:
            parser.read_file(fh)
        script = parser.get("alembic", "script_location")
    except (OSError, configparser.Error, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"cannot read script_location from {ini}: {exc}",
            hint="point `migrations.alembic` at the app's alembic.ini (it needs [alembic] script_location)",
        ) from exc
    locations = [script]
    if parser.has_option("alembic", "version_locations"):
        raw = parser.get("alembic", "version_locations")
        locations += [part for part in raw.replace(",", " ").replace(os.pathsep, " ").split() if part]
    out = []
    for location in locations:
        path = Path(location) if os.path.isabs(location) else ini.parent / location
        if not path.is_dir():
            raise ConfigError(
                f"{ini} names the migrations directory {location}, which does not exist ({path})",
                hint="a package location such as `myapp:migrations` is not supported; use a path",
            )
        out.append(path.resolve())
    return out


def read_revisions(directories: Sequence[Path]) -> RevisionGraph:
    """Every revision in `versions/` under the script location and in the version locations."""
    files: list[Path] = []
    for i, directory in enumerate(directories):
        versions = directory / "versions" if i == 0 and (directory / "versions").is_dir() else directory
        files += sorted(versions.rglob("*.py"))
    revisions: dict[str, Revision] = {}
    for path in files:
        found = _revision_of(path)
        if found is None:
            continue
        if found.id in revisions:
            raise ConfigError(f"revision {found.id} is defined twice: {revisions[found.id].path} and {path}")
        revisions[found.id] = found
    return RevisionGraph(revisions)


def _revision_of(path: Path) -> Revision | None:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    except (OSError, SyntaxError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the migration {path}: {exc}") from exc
    values: dict[str, object] = {}
    for node in tree.body:
        target: ast.expr | None = None
        value: ast.expr | None = None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign):
            target, value = node.target, node.value
        if isinstance(target, ast.Name) and target.id in ("revision", "down_revision") and value is not None:
            with contextlib.suppress(ValueError):
                values[target.id] = ast.literal_eval(value)
    revision = values.get("revision")
    if not isinstance(revision, str):
        return None
    down = values.get("down_revision")
    if down is None:
        downs: tuple[str, ...] = ()
    elif isinstance(down, str):
        downs = (down,)
    elif isinstance(down, (tuple, list)) and all(isinstance(d, str) for d in down):
        downs = tuple(str(d) for d in down)
    else:
        raise ConfigError(f"cannot read down_revision in {path}: {down!r}")
    return Revision(revision, downs, path)


# ---------------------------------------------------------------- the resolved plan


@dataclass(frozen=True)
class MigrationPlan:
    """A database's migrations, resolved before anything is touched."""

    runner: CommandPlan  # argv may hold {revision}
    alembic: RevisionGraph | None  # None for a tool other than Alembic
    revision: str | None  # the Alembic revision asked for ("head" resolved)

    @property
    def digest(self) -> str:
        return self.runner.digest

    def command(self, revision: str | None = None) -> list[str]:
        """The argv, with {revision} set to `revision` (default: the configured target)."""
        wanted = revision or self.revision or "head"
        return [part.replace(REVISION_PLACEHOLDER, wanted) for part in self.runner.argv]

    @property
    def takes_revision(self) -> bool:
        return any(REVISION_PLACEHOLDER in part for part in self.runner.argv)

    def run(
        self, endpoint: Endpoint, database: str, label: str, revision: str | None = None, live: Sequence[str] = ()
    ) -> CommandRun:
        """Run the migrations against `database` (a private copy) while the `live` databases are sealed."""
        return appcommand.run(self.runner, self.command(revision), endpoint, database, label, live)


def plan_migrations(cfg: Config, database: str, spec: MigrationsConfig) -> MigrationPlan:
    """Resolve paths, the command and the Alembic head; ConfigError for anything missing."""
    where = f"databases.{database}.migrations in {cfg.source}"
    base = cfg.base_dir
    graph: RevisionGraph | None = None
    inputs: list[Path] = []
    ini: Path | None = None
    if spec.alembic is not None:
        ini = _existing(base / os.path.expanduser(spec.alembic), where, "alembic")
        directories = read_alembic_ini(ini)
        graph = read_revisions(directories)
        if not graph.revisions:
            raise ConfigError(f"no Alembic revisions found under {directories[0]} ({where})")
        inputs.append(ini)
        inputs += alembic_inputs(directories)
    for entry in spec.inputs:
        inputs += expand_input(base, entry, where, "migrations")
    if not inputs:
        raise ConfigError(
            f"{where}: nothing says when the migrations change",
            hint="list the migration files or directories under `inputs:` so the template cache notices new ones",
        )
    revision: str | None = None
    if graph is not None:
        revision = _resolve_revision(graph, spec.revision, where)
    argv = list(spec.command) if spec.command else list(DEFAULT_ALEMBIC_COMMAND)
    if INI_PLACEHOLDER in " ".join(argv) and ini is None:
        raise ConfigError(f"{where}: the command uses {INI_PLACEHOLDER}, but no `alembic:` ini is configured")
    argv = [part.replace(INI_PLACEHOLDER, str(ini)) if ini else part for part in argv]
    cwd = base / os.path.expanduser(spec.cwd) if spec.cwd is not None else (ini.parent if ini else base)
    runner = plan_command(
        "migrations",
        argv,
        cwd=cwd,
        url_env=spec.url_env,
        env=spec.env,
        timeout=spec.timeout,
        inputs=inputs,
        where=where,
    )
    return MigrationPlan(runner, graph, revision)


def alembic_inputs(directories: Sequence[Path]) -> list[Path]:
    """What decides what Alembic builds: env.py and script.py.mako beside the script location, and the
    version files (`*.py` in versions/ and the version locations). Not every file there: a log, an
    editor's swap file or `.DS_Store` beside them changes nothing."""
    script = directories[0]
    found = [script / name for name in ("env.py", "script.py.mako") if (script / name).is_file()]
    for i, directory in enumerate(directories):
        versions = directory / "versions" if i == 0 and (directory / "versions").is_dir() else directory
        found += [p for p in versions.rglob("*.py") if "__pycache__" not in p.parts and p.is_file()]
    return [p.resolve() for p in found]


def _resolve_revision(graph: RevisionGraph, wanted: str, where: str) -> str:
    if wanted == "head":
        heads = graph.heads()
        if len(heads) != 1:
            raise ConfigError(
                f"the migrations have {len(heads)} heads ({', '.join(heads)}), so `head` is ambiguous ({where})",
                hint="merge them (`alembic merge heads`), or set `revision:` to the one to build",
            )
        return heads[0]
    if wanted not in graph.revisions:
        known = ", ".join(sorted(graph.revisions)[-5:])
        raise ConfigError(f"revision {wanted!r} is not among the migrations ({where})", hint=f"known: {known}")
    return wanted


def _existing(path: Path, where: str, key: str) -> Path:
    if not path.is_file():
        raise ConfigError(f"{key}: file not found: {path} ({where})", hint="paths are relative to the config file")
    return path.resolve()
