"""Streams SQL sources through psql in bounded chunks and maps psql's errors back to file and line."""

from __future__ import annotations

import glob
import hashlib
import io
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast

from .errors import ConfigError, ProvisionError, ServerError, SqlError

if TYPE_CHECKING:
    from .endpoint import Endpoint

# The application_name of every session that builds or clones (psql included), so that a killed
# run's server-side work can be found and ended by the next run.
BUILD_APP = "provision build"
CHUNK_BYTES = 256 * 1024
# psql output is only kept for error reports, so memory stays flat whatever the input size.
KEEP_OUTPUT_BYTES = 64 * 1024

_PSQL_LINE = re.compile(r"^psql:(?:<stdin>|-):(\d+): (.*)$")
_ERROR_LINE = re.compile(r"^LINE (\d+): ")


@dataclass(frozen=True)
class PsqlOutput:
    exit_code: int
    stderr: str
    stdout: str = ""


class PsqlRunner(Protocol):
    """Runs psql against one database, feeding it `chunks` on stdin."""

    def run(self, database: str, args: Sequence[str], chunks: Iterable[bytes]) -> PsqlOutput: ...


def psql_args(variables: Sequence[tuple[str, str]], single_transaction: bool) -> list[str]:
    """psql flags for a build: stop at the first error, echo the failing statement, read stdin."""
    args = ["-X", "-q", "-w", "-v", "ON_ERROR_STOP=1", "-b", "-P", "pager=off"]
    for name, value in variables:
        args += ["-v", f"{name}={value}"]
    if single_transaction:
        args.append("--single-transaction")
    args += ["-f", "-"]
    return args


@dataclass
class SourceMap:
    """Which input line of the combined stream came from which file."""

    spans: list[tuple[int, int, Path]] = field(default_factory=list)  # (first line, last line, file)
    digests: dict[Path, str] = field(default_factory=dict)  # sha256 of each file streamed in full

    def locate(self, stream_line: int) -> tuple[Path, int] | None:
        for first, last, path in self.spans:
            if first <= stream_line <= last:
                return path, stream_line - first + 1
        return None


def stream_files(files: Sequence[Path], source_map: SourceMap, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """Yield the files' bytes one after another, as psql would read them with one -f each."""
    line = 1
    for path in files:
        first = line
        last_byte = b"\n"
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            while chunk := fh.read(chunk_bytes):
                line += chunk.count(b"\n")
                last_byte = chunk[-1:]
                digest.update(chunk)
                yield chunk
        if last_byte != b"\n":
            line += 1
            yield b"\n"
        source_map.spans.append((first, line - 1, path))
        source_map.digests[path] = digest.hexdigest()


class Tail:
    """Keeps the first and the last few KiB of a stream."""

    def __init__(self, limit: int = KEEP_OUTPUT_BYTES) -> None:
        self.limit = limit
        self.head = bytearray()
        self.tail = bytearray()
        self.dropped = False

    def add(self, data: bytes) -> None:
        if len(self.head) < self.limit:
            take = self.limit - len(self.head)
            self.head += data[:take]
            data = data[take:]
        if data:
            self.tail += data
            if len(self.tail) > self.limit:
                del self.tail[: len(self.tail) - self.limit]
                self.dropped = True

    def text(self) -> str:
        joiner = b"\n...\n" if self.dropped else b""
        return (bytes(self.head) + joiner + bytes(self.tail)).decode("utf-8", "replace")


def pump(
    chunks: Iterable[bytes],
    send: Callable[[bytes], object],
    close_send: Callable[[], None],
    receive: Callable[[], Iterator[tuple[int, bytes]]],
) -> tuple[str, str]:
    """Write `chunks` from one thread while reading (stream id, data) frames in this one.

    Two threads, because psql's output and our input share no buffer: a single thread
    that writes a large file blocks as soon as psql blocks on writing its own output.
    Returns (stdout, stderr), each trimmed to its first and last KiB.
    """
    failure: list[BaseException] = []

    def writer() -> None:
        try:
            for chunk in chunks:
                send(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # psql stopped reading: it failed, and its stderr says why.
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            failure.append(exc)
        finally:
            try:
                close_send()
            except OSError:
                pass

    thread = threading.Thread(target=writer, name="provision-sql-writer", daemon=True)
    thread.start()
    out, err = Tail(), Tail()
    for stream, data in receive():
        (err if stream == 2 else out).add(data)
    thread.join()
    if failure:
        raise failure[0]
    return out.text(), err.text()


def describe_psql_failure(database: str, output: PsqlOutput, source_map: SourceMap) -> ProvisionError:
    """Turn psql's stderr into an error naming the source file, the line and the failing statement."""
    lines = output.stderr.splitlines()
    error_at: int | None = None
    message = ""
    statement: list[str] = []
    error_line_in_statement = 1
    i = 0
    while i < len(lines):
        match = _PSQL_LINE.match(lines[i])
        if match and error_at is None and "STATEMENT:" not in match.group(2):
            error_at = int(match.group(1))
            message = match.group(2).strip()
        elif match and "STATEMENT:" in match.group(2) and not statement:
            statement = [match.group(2).split("STATEMENT:", 1)[1].strip()]
            i += 1
            while i < len(lines) and not _PSQL_LINE.match(lines[i]):
                statement.append(lines[i])
                i += 1
            continue
        elif error_at is not None and (m := _ERROR_LINE.match(lines[i])):
            error_line_in_statement = int(m.group(1))
        i += 1

    if output.exit_code == 2 or error_at is None:
        # psql exits 2 only when the connection went bad; SQL errors under ON_ERROR_STOP exit 3.
        text = output.stderr.strip()[-2000:] or f"psql exited with code {output.exit_code}"
        if output.exit_code == 2:
            return ServerErrorInSql(f"psql lost its connection while building {database}: {text}")
        return SqlError(f"psql failed while building {database}: {text}")

    # psql reports the line where the statement ended; walk back to where it started.
    stream_line = error_at
    if statement:
        start = error_at - (len(statement) - 1)
        stream_line = start + error_line_in_statement - 1
    located = source_map.locate(stream_line)
    where = f"{located[0]}:{located[1]}" if located else f"line {stream_line} of the input"
    detail_lines = []
    if statement:
        detail_lines.append(f"statement: {statement[0].strip()[:200]}")
    extra = [ln for ln in lines if ln.startswith(("LINE ", "HINT:", "DETAIL:"))]
    detail_lines += extra[:4]
    return SqlError(
        f"SQL error in {where}: {message}",
        hint=f"fix the SQL and run again; {database} was not changed",
        detail="\n".join(detail_lines) or None,
    )


class ServerErrorInSql(ServerError):
    pass


def find_local_psql() -> str:
    """The real psql binary: Debian's /usr/bin/psql is a Perl wrapper that costs ~45 ms a call."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/psql"),
        key=lambda p: tuple(int(n) for n in re.findall(r"\d+", p.split("/")[4])),
        reverse=True,
    )
    found = candidates[0] if candidates else shutil.which("psql")
    if not found:
        raise ConfigError(
            "psql is not installed, and the server target runs psql locally",
            hint="install the PostgreSQL client (Debian: apt-get install postgresql-client)",
        )
    return found


@dataclass(frozen=True)
class LocalPsql:
    """Runs a local psql over the network (the server target). The password goes in the environment."""

    endpoint: Endpoint
    psql: str = field(default_factory=find_local_psql)

    def run(self, database: str, args: Sequence[str], chunks: Iterable[bytes]) -> PsqlOutput:
        ep = self.endpoint
        env = dict(os.environ, PGPASSWORD=ep.password, PGAPPNAME=BUILD_APP, PGCONNECT_TIMEOUT="10")
        argv = [self.psql, "-h", ep.host, "-p", str(ep.port), "-U", ep.user, "-d", database, *args]
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        # Unbuffered pipes are BufferedReader/BufferedWriter at run time; typeshed says IO[bytes].
        stdin = cast(io.BufferedWriter, proc.stdin)
        stdout = cast(io.BufferedReader, proc.stdout)
        stderr = cast(io.BufferedReader, proc.stderr)
        err_tail = Tail()

        def read_stderr() -> None:
            while data := stderr.read1(65536):
                err_tail.add(data)

        err_thread = threading.Thread(target=read_stderr, daemon=True)
        err_thread.start()

        def receive() -> Iterator[tuple[int, bytes]]:
            while data := stdout.read1(65536):
                yield 1, data

        try:
            out_text, _ = pump(chunks, stdin.write, stdin.close, receive)
        finally:
            code = proc.wait()
            err_thread.join()
        return PsqlOutput(code, err_tail.text(), out_text)
