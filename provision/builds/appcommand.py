"""Running an app's own command (migrations, seed) against a private copy: plan, environment, time limit, errors."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..checkpoints import checkpoint
from ..config import COPY_PLACEHOLDERS, fill_placeholders
from ..endpoint import Endpoint
from ..errors import ConfigError, SqlError
from ..postgres.sqlstream import BUILD_APP, Tail
from . import seal

# What a failed command shows of its output: enough for the revision and the error.
SHOWN_OUTPUT_LINES = 25
KEEP_OUTPUT_BYTES = 64 * 1024
# After the time limit: SIGTERM, then this long before SIGKILL.
KILL_GRACE_SECONDS = 5.0
# Runs the command with the parent-death signal set (Linux), so that no command outlives a
# provision killed with -9. A launcher rather than preexec_fn, which is unsafe with threads
# (builds run in parallel).
_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys; "
    "ctypes.CDLL(None).prctl(1, signal.SIGKILL); "  # PR_SET_PDEATHSIG
    "os.getppid() != int(sys.argv[1]) and sys.exit(137); "  # the parent died before prctl took effect
    "os.execvp(sys.argv[2], sys.argv[2:])"
)
# The server's words when a client asks for a database it cannot have: the name is in quotes.
_REACHED = re.compile(r'database "([^"]+)" (is not currently accepting connections|does not exist)')
_IMPORT_ERROR = re.compile(r"\b(ModuleNotFoundError|ImportError): (.*)")


class CommandFailed(SqlError):
    """The app's command (migrations or seed) failed or timed out; the database in place was not changed."""


class MisdirectedCommand(CommandFailed):
    """The app's command tried to reach another database than the private copy it was given."""


@dataclass(frozen=True)
class CommandPlan:
    """An app's command, resolved before anything is touched: what runs, where, and with what environment."""

    step: str  # "migrations" or "seed", for messages
    argv: tuple[str, ...]  # may hold placeholders its caller fills in ({revision})
    cwd: Path
    url_env: str
    env: tuple[tuple[str, str], ...]  # more variables, with {database}-style placeholders
    timeout: float
    inputs: tuple[Path, ...]  # files whose content decides the result
    digest: str  # sha256 over the command, its environment mapping, and the inputs' names and contents

    def environment(self, endpoint: Endpoint, database: str) -> dict[str, str]:
        """The variables the command gets on top of provision's own environment: all point at `database`."""
        env = endpoint.libpq_env(database)
        env[self.url_env] = endpoint.dsn(database, show_password=True)
        values = {
            "host": endpoint.host,
            "port": str(endpoint.port),
            "user": endpoint.user,
            "password": endpoint.password,
            "database": database,
            "url": endpoint.dsn(database, show_password=True),
        }
        assert set(values) == set(COPY_PLACEHOLDERS)
        env.update({name: fill_placeholders(value, values) for name, value in self.env})
        # A killed run's command sessions are found and ended by the next run, like its psql's.
        env["PGAPPNAME"] = BUILD_APP
        return env


def plan_command(
    step: str,
    argv: Sequence[str],
    *,
    cwd: Path,
    url_env: str,
    env: tuple[tuple[str, str], ...],
    timeout: float,
    inputs: Sequence[Path],
    where: str,
) -> CommandPlan:
    """Resolve the program now (a missing tool is a config error before anything is touched) and hash the inputs."""
    if not cwd.is_dir():
        raise ConfigError(f"{step} working directory {cwd} does not exist ({where})")
    resolved = [_executable(argv[0], cwd, where, step), *argv[1:]]
    unique = sorted(set(inputs))
    return CommandPlan(step, tuple(resolved), cwd, url_env, env, timeout, tuple(unique), _digest(unique, resolved, env))


def files_under(directory: Path) -> list[Path]:
    return [
        p
        for p in directory.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
    ]


def expand_input(base: Path, entry: str, where: str, step: str) -> list[Path]:
    """A file, directory or glob under `inputs:`, as the files it names."""
    pattern = os.path.expanduser(entry)
    full = Path(pattern) if os.path.isabs(pattern) else base / pattern
    if glob.has_magic(pattern):
        escaped = pattern if os.path.isabs(pattern) else os.path.join(glob.escape(str(base)), pattern)
        found = [Path(p).resolve() for p in glob.glob(escaped, recursive=True) if Path(p).is_file()]
        if not found:
            raise ConfigError(f"no files match the {step} input {entry!r} ({where})")
        return found
    if full.is_dir():
        return [p.resolve() for p in files_under(full)]
    if full.is_file():
        return [full.resolve()]
    raise ConfigError(f"{step} input not found: {full} ({where})", hint="paths are relative to the config file")


def _executable(program: str, cwd: Path, where: str, step: str) -> str:
    if os.sep in program:
        path = Path(program) if os.path.isabs(program) else cwd / program
        if not os.access(path, os.X_OK):
            raise ConfigError(f"{step} command {program} is not an executable file ({where})")
        return str(path)
    # Also next to this Python: a venv's tools are there even when the venv is not activated.
    search = os.pathsep.join([os.environ.get("PATH", ""), os.path.dirname(sys.executable)])
    found = shutil.which(program, path=search)
    if found is None:
        raise ConfigError(
            f"{step} command {program!r} was not found on PATH ({where})",
            hint=f"install it, or set `{step}.command` to how the app runs it "
            "(e.g. `uv run alembic -c alembic.ini upgrade {revision}`)",
        )
    return found


def _digest(files: Sequence[Path], argv: Sequence[str], env: Sequence[tuple[str, str]]) -> str:
    h = hashlib.sha256()
    h.update("\x00".join(argv).encode())
    h.update(b"\x01" + "\x00".join(f"{k}={v}" for k, v in env).encode())
    for path in files:
        h.update(b"\x00" + str(path).encode() + b"\x00")
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------- running it


@dataclass(frozen=True)
class CommandRun:
    seconds: float
    output: str


def run(
    plan: CommandPlan, argv: Sequence[str], endpoint: Endpoint, database: str, label: str, live: Sequence[str]
) -> CommandRun:
    """Run `argv` against `database` (a private copy) while the `live` databases refuse new connections.

    Whatever the command connects to, it cannot reach a live database: they are sealed for as
    long as it runs (seal.py). The password reaches the command only through its environment
    (never argv), and is masked in any output shown. The command runs in its own process group,
    which the time limit, Ctrl-C, and the death of this process (Linux) all end.
    """
    env = dict(os.environ)
    env.update(plan.environment(endpoint, database))
    started = time.monotonic()
    launch = list(argv)
    if sys.platform.startswith("linux"):
        launch = [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), *argv]
    with seal.sealed(endpoint, live):
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
            raise CommandFailed(
                f"{label}: cannot start the {plan.step} command {argv[0]}: {exc.strerror}",
                hint=f"check `{plan.step}.command` and `{plan.step}.cwd`",
            ) from exc
        # The command is running against the copy: a kill here must leave the old database.
        checkpoint(f"{'migration' if plan.step == 'migrations' else plan.step}-started")
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
                raise CommandFailed(
                    f"{label}: the {plan.step} command was still running after {plan.timeout:g} s and was stopped",
                    hint=f"a command waiting on a lock or on input hangs; raise `{plan.step}.timeout` if it is slow",
                    detail=_shown(tail.text(), endpoint.password, plan.step),
                ) from None
        except BaseException:
            _stop(proc)
            raise
        reader.join(timeout=5)
    text = tail.text()
    output = _shown(text, endpoint.password, plan.step)
    reached = _elsewhere(text, database) if code != 0 else None
    if reached is not None:
        raise _misdirected(plan, label, database, reached, code, output)
    if code != 0:
        raise CommandFailed(
            f"{label}: the {plan.step} command exited with code {code}: {shlex.join(_masked(argv, endpoint.password))}",
            hint=_failure_hint(plan, label, text),
            detail=output,
        )
    return CommandRun(time.monotonic() - started, output)


def _elsewhere(output: str, copy: str) -> str | None:
    """The database the command asked the server for, when that was not the copy."""
    for match in _REACHED.finditer(output):
        if match.group(1) != copy:
            return match.group(1)
    return None


def _misdirected(plan: CommandPlan, label: str, copy: str, reached: str, code: int, output: str) -> MisdirectedCommand:
    names = ", ".join(f"${n}" for n in ("PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE"))
    return MisdirectedCommand(
        f"{label}: the {plan.step} command tried to connect to database {reached!r} instead of the private copy "
        f"{copy!r} it was given (it exited with code {code}). It does not take its database from "
        f"${plan.url_env} or {names}, but from its own settings. {label} was not changed: while the command "
        "runs, provision's databases refuse new connections",
        hint=f"map the app's own settings onto the copy under `{plan.step}.env:`, one line per variable it reads, "
        "e.g. `env: {POSTGRES_SERVER: '{host}', POSTGRES_PORT: '{port}', POSTGRES_USER: '{user}', "
        "POSTGRES_PASSWORD: '{password}', POSTGRES_DB: '{database}'}` (or `DATABASE_URL: '{url}'`)",
        detail=output,
    )


def _failure_hint(plan: CommandPlan, label: str, output: str) -> str:
    """Where to look, from what the command printed."""
    found = _IMPORT_ERROR.search(output)
    if found is not None:
        return (
            f"the command could not import {found.group(2).strip()!r}: that is the interpreter or the path, not "
            f"the {plan.step}. Run it with the app's own environment (`command: uv run ...`, `poetry run ...`, or "
            f"the venv's path), or set PYTHONPATH under `{plan.step}.env:`; {label} was not changed"
        )
    return f"fix the {plan.step} and run again; {label} was not changed"


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


def _shown(output: str, password: str, step: str) -> str:
    """The last lines of the command's output, with the password masked."""
    if password:
        output = output.replace(password, "***")
    lines = output.rstrip().splitlines()
    kept = lines[-SHOWN_OUTPUT_LINES:]
    head = f"output of the {step} command" + (f" (last {len(kept)} lines)" if len(lines) > len(kept) else "")
    return head + ":\n" + "\n".join("  " + line for line in kept) if kept else "(the command printed nothing)"
