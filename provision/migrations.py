"""The app's own migrations: where they are, what they reach, what they hash to, and running them against a copy.

Alembic's revision graph is read from the version files' `revision` / `down_revision` lines
(with `ast`, never importing them), so provision needs no Alembic of its own and knows the
head in milliseconds; the migrations themselves always run through the app's own command.
"""

from __future__ import annotations

import ast
import configparser
import contextlib
import glob
import hashlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from .checkpoints import checkpoint
from .errors import ConfigError, SqlError
from .sqlstream import BUILD_APP, Tail

if TYPE_CHECKING:
    from .config import Config, MigrationsConfig
    from .endpoint import Endpoint

# The placeholders a migrations command may use.
REVISION_PLACEHOLDER = "{revision}"
INI_PLACEHOLDER = "{ini}"
DEFAULT_ALEMBIC_COMMAND = ("alembic", "-c", INI_PLACEHOLDER, "upgrade", REVISION_PLACEHOLDER)
# What a failed migration shows of its output: enough for the revision and the error.
SHOWN_OUTPUT_LINES = 25
KEEP_OUTPUT_BYTES = 64 * 1024
# After the time limit: SIGTERM, then this long before SIGKILL.
KILL_GRACE_SECONDS = 5.0
# Runs the command with the parent-death signal set (Linux), so that no migration outlives a
# provision killed with -9. A launcher rather than preexec_fn, which is unsafe with threads
# (builds run in parallel).
_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys; "
    "ctypes.CDLL(None).prctl(1, signal.SIGKILL); "  # PR_SET_PDEATHSIG
    "os.getppid() != int(sys.argv[1]) and sys.exit(137); "  # the parent died before prctl took effect
    "os.execvp(sys.argv[2], sys.argv[2:])"
)


class MigrationFailed(SqlError):
    """The app's migrations failed or timed out; the database in place was not changed."""


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

    argv: tuple[str, ...]  # may hold {revision}
    cwd: Path
    url_env: str
    timeout: float
    inputs: tuple[Path, ...]  # files whose content decides the result
    digest: str  # sha256 over the inputs' names and contents
    alembic: RevisionGraph | None  # None for a tool other than Alembic
    revision: str | None  # the Alembic revision asked for ("head" resolved)

    def command(self, revision: str | None = None) -> list[str]:
        """The argv, with {revision} set to `revision` (default: the configured target)."""
        wanted = revision or self.revision or "head"
        return [part.replace(REVISION_PLACEHOLDER, wanted) for part in self.argv]

    @property
    def takes_revision(self) -> bool:
        return any(REVISION_PLACEHOLDER in part for part in self.argv)


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
        for directory in directories:
            inputs += _files_under(directory)
    for entry in spec.inputs:
        inputs += _expand_input(base, entry, where)
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
    if spec.cwd is not None:
        cwd = base / os.path.expanduser(spec.cwd)
    else:
        cwd = ini.parent if ini else base
    if not cwd.is_dir():
        raise ConfigError(f"migrations working directory {cwd} does not exist ({where})")
    argv[0] = _executable(argv[0], cwd, where)
    unique = sorted(set(inputs))
    return MigrationPlan(
        tuple(argv), cwd, spec.url_env, spec.timeout, tuple(unique), _digest(unique, argv), graph, revision
    )


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


def _files_under(directory: Path) -> list[Path]:
    return [
        p
        for p in directory.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
    ]


def _expand_input(base: Path, entry: str, where: str) -> list[Path]:
    pattern = os.path.expanduser(entry)
    full = Path(pattern) if os.path.isabs(pattern) else base / pattern
    if glob.has_magic(pattern):
        escaped = pattern if os.path.isabs(pattern) else os.path.join(glob.escape(str(base)), pattern)
        found = [Path(p).resolve() for p in glob.glob(escaped, recursive=True) if Path(p).is_file()]
        if not found:
            raise ConfigError(f"no files match the migrations input {entry!r} ({where})")
        return found
    if full.is_dir():
        return [p.resolve() for p in _files_under(full)]
    if full.is_file():
        return [full.resolve()]
    raise ConfigError(f"migrations input not found: {full} ({where})", hint="paths are relative to the config file")


def _executable(program: str, cwd: Path, where: str) -> str:
    """Resolve argv[0] now, so a missing tool is a config error before anything is touched."""
    if os.sep in program:
        path = Path(program) if os.path.isabs(program) else cwd / program
        if not os.access(path, os.X_OK):
            raise ConfigError(f"migrations command {program} is not an executable file ({where})")
        return str(path)
    # Also next to this Python: a venv's tools are there even when the venv is not activated.
    search = os.pathsep.join([os.environ.get("PATH", ""), os.path.dirname(sys.executable)])
    found = shutil.which(program, path=search)
    if found is None:
        raise ConfigError(
            f"migrations command {program!r} was not found on PATH ({where})",
            hint="install it, or set `migrations.command` to how the app runs its migrations "
            "(e.g. `uv run alembic -c alembic.ini upgrade {revision}`)",
        )
    return found


def _digest(files: Sequence[Path], argv: Sequence[str]) -> str:
    h = hashlib.sha256()
    h.update("\x00".join(argv).encode())
    for path in files:
        h.update(b"\x00" + str(path).encode() + b"\x00")
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def split_command(value: str | Sequence[str]) -> tuple[str, ...]:
    """A command from the config: a string (split like a shell would, without running one) or a list."""
    return tuple(shlex.split(value) if isinstance(value, str) else value)


# ---------------------------------------------------------------- running them


@dataclass(frozen=True)
class MigrationRun:
    seconds: float
    output: str


def run(
    plan: MigrationPlan, endpoint: Endpoint, database: str, label: str, revision: str | None = None
) -> MigrationRun:
    """Run the migrations command against `database` (a private copy), with its URL in the environment.

    The password reaches the command only through its environment (never argv), and is masked
    in any output shown. The command runs in its own process group, which the time limit,
    Ctrl-C, and the death of this process (Linux) all end.
    """
    env = dict(os.environ)
    env.update(endpoint.libpq_env(database))
    env[plan.url_env] = endpoint.dsn(database, show_password=True)
    # A killed run's migration sessions are found and ended by the next run, like its psql's.
    env["PGAPPNAME"] = BUILD_APP
    argv = plan.command(revision)
    started = time.monotonic()
    launch = argv
    if sys.platform.startswith("linux"):
        launch = [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), *argv]
    try:
        proc = subprocess.Popen(
            launch,
            cwd=plan.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        raise MigrationFailed(
            f"{label}: cannot start the migrations command {argv[0]}: {exc.strerror}",
            hint="check `migrations.command` and `migrations.cwd`",
        ) from exc
    # The command is running against the copy: a kill here must leave the old database.
    checkpoint("migration-started")
    tail = Tail(KEEP_OUTPUT_BYTES)
    assert proc.stdout is not None
    stdout = proc.stdout
    reader = threading.Thread(target=lambda: _read_into(stdout, tail), daemon=True)
    reader.start()
    try:
        try:
            code = proc.wait(timeout=plan.timeout)
        except subprocess.TimeoutExpired:
            _stop(proc)
            reader.join(timeout=5)
            raise MigrationFailed(
                f"{label}: the migrations command was still running after {plan.timeout:g} s and was stopped",
                hint="a migration waiting on a lock or on input hangs; raise `migrations.timeout` if it is just slow",
                detail=_shown(tail.text(), endpoint.password),
            ) from None
    except BaseException:
        _stop(proc)
        raise
    reader.join(timeout=5)
    output = _shown(tail.text(), endpoint.password)
    if code != 0:
        raise MigrationFailed(
            f"{label}: the migrations command exited with code {code}: {shlex.join(_masked(argv, endpoint.password))}",
            hint=f"fix the migration and run again; {label} was not changed",
            detail=output,
        )
    return MigrationRun(time.monotonic() - started, output)


def _read_into(stream: IO[bytes], tail: Tail) -> None:
    while data := stream.read(65536):
        tail.add(data)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """End the command's whole process group: SIGTERM, then SIGKILL after a grace period."""
    if proc.poll() is not None:
        return
    for sig, grace in ((signal.SIGTERM, KILL_GRACE_SECONDS), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def _masked(parts: Sequence[str], password: str) -> list[str]:
    return [part.replace(password, "***") if password else part for part in parts]


def _shown(output: str, password: str) -> str:
    """The last lines of the command's output, with the password masked."""
    if password:
        output = output.replace(password, "***")
    lines = output.rstrip().splitlines()
    kept = lines[-SHOWN_OUTPUT_LINES:]
    head = "output of the migrations command" + (f" (last {len(kept)} lines)" if len(lines) > len(kept) else "")
    return head + ":\n" + "\n".join("  " + line for line in kept) if kept else "(the command printed nothing)"
