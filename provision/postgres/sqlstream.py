"""Streams SQL sources through psql in bounded chunks and maps psql's errors back to file and line."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import io
import os
import re
import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal, Protocol, cast

from ..errors import ConfigError, ProvisionError, ServerError, SqlError

if TYPE_CHECKING:
    from ..endpoint import Endpoint

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
    """Runs psql (or another client program: pg_restore) against one database, feeding it `chunks` on stdin."""

    def run(self, database: str, args: Sequence[str], chunks: Iterable[bytes], program: str = "psql") -> PsqlOutput: ...


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


# How a source file is read: by its first bytes, not its name.
SourceKind = Literal["sql", "gzip", "xz", "dump"]
_MAGIC: tuple[tuple[bytes, SourceKind], ...] = (
    (b"PGDMP", "dump"),  # pg_dump's custom format
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
)
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def source_kind(head: bytes) -> SourceKind:
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    return "sql"


class _Hashing(io.RawIOBase):
    """Reads a file, hashing the raw bytes as they go by (the sha256 of the file as it is on disk),
    and telling `on_bytes` how many it read (the progress of a long load)."""

    def __init__(self, fh: IO[bytes], digest: hashlib._Hash, on_bytes: Callable[[int], None] | None = None) -> None:
        self.fh = fh
        self.digest = digest
        self.on_bytes = on_bytes

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.fh.read(len(buffer))
        self.digest.update(data)
        if self.on_bytes is not None:
            self.on_bytes(len(data))
        buffer[: len(data)] = data
        return len(data)


@contextlib.contextmanager
def open_source(
    path: Path, digest: hashlib._Hash, on_bytes: Callable[[int], None] | None = None
) -> Iterator[IO[bytes]]:
    """The file's content, decompressed while it is read (gzip, xz), with the raw bytes hashed into `digest`."""
    with path.open("rb") as fh:
        kind = source_kind(fh.read(8))
        fh.seek(0)
        raw = io.BufferedReader(_Hashing(fh, digest, on_bytes))
        # The decompressors are imported only for compressed sources: start-up time matters.
        if kind == "gzip":
            import gzip

            with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
                yield cast(IO[bytes], unzipped)
        elif kind == "xz":
            import lzma

            with lzma.LZMAFile(raw, mode="rb") as unxz:
                yield cast(IO[bytes], unxz)
        else:
            yield raw
        # Whatever the reader left unread (a compressed file's trailer) still belongs in the hash.
        while raw.read(1 << 20):
            pass


def stream_files(
    files: Sequence[Path],
    source_map: SourceMap,
    chunk_bytes: int = CHUNK_BYTES,
    on_bytes: Callable[[int], None] | None = None,
) -> Iterator[bytes]:
    """Yield the files' bytes one after another, as psql would read them with one -f each;
    `on_bytes` hears how many bytes of the files (as on disk) have been read."""
    line = 1
    for path in files:
        first = line
        last_byte = b"\n"
        digest = hashlib.sha256()
        with open_source(path, digest, on_bytes) as fh:
            while chunk := fh.read(chunk_bytes):
                line += chunk.count(b"\n")
                last_byte = chunk[-1:]
                yield chunk
        if last_byte != b"\n":
            line += 1
            yield b"\n"
        source_map.spans.append((first, line - 1, path))
        source_map.digests[path] = digest.hexdigest()


def stream_dump(path: Path, source_map: SourceMap, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """Yield a pg_dump custom-format file as it is, hashing it on the way."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(chunk_bytes):
            digest.update(chunk)
            yield chunk
    source_map.digests[path] = digest.hexdigest()


def restore_args(single_transaction: bool) -> list[str]:
    """pg_restore flags for a dump source: stop at the first error, read stdin, keep the copy's owner."""
    args = ["--exit-on-error", "--no-owner", "--no-privileges"]
    if single_transaction:
        args.append("--single-transaction")
    return args


_RESTORE_ERROR = re.compile(r"^pg_restore: (?:error: )?(?:from TOC entry [^:]*: )?(.*)$")


def describe_restore_failure(database: str, output: PsqlOutput, display: str) -> ProvisionError:
    """Turn pg_restore's stderr into an error naming the dump file, the failing object and the error."""
    lines = [line.strip() for line in output.stderr.splitlines() if line.strip()]
    errors = [m.group(1) for line in lines if (m := _RESTORE_ERROR.match(line)) and "error" in line]
    command = next((line.split("Command was:", 1)[1].strip() for line in lines if "Command was:" in line), "")
    toc = next((line for line in lines if "from TOC entry" in line), "")
    message = errors[0] if errors else (lines[-1] if lines else f"pg_restore exited with code {output.exit_code}")
    detail = []
    if toc:
        detail.append("object: " + toc.split("from TOC entry", 1)[1].split(":", 1)[0].strip())
    if command:
        detail.append(f"statement: {command[:200]}")
    if output.exit_code == 1 and not errors and "connection" in output.stderr:
        return ServerErrorInSql(f"pg_restore lost its connection while building {database}: {message}")
    return SqlError(
        f"restore error in {display}: {message}",
        hint=f"check the dump (pg_restore -l {display} lists it); {database} was not changed",
        detail="\n".join(detail) or None,
    )


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


def find_local_tool(name: str) -> str:
    """A PostgreSQL client program (psql, pg_dump, pg_restore) on PATH. Debian's /usr/bin/psql is a
    Perl wrapper that costs ~45 ms a call, so when that is what PATH finds, the newest real binary
    behind it is used instead."""
    import shutil  # here, not at the top: it pulls in bz2 and lzma, 3 ms of every command's start

    found = shutil.which(name)
    if not found:
        raise ConfigError(
            f"{name} is not on PATH, and this runs it locally",
            hint="install the PostgreSQL client (Debian: apt-get install postgresql-client; macOS: brew install libpq)",
        )
    if os.path.realpath(found).endswith("/pg_wrapper"):
        candidates = sorted(
            glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
            key=lambda p: tuple(int(n) for n in re.findall(r"\d+", p.split("/")[4])),
            reverse=True,
        )
        if candidates:
            return candidates[0]
    return found


def find_local_psql() -> str:
    return find_local_tool("psql")


@dataclass(frozen=True)
class LocalPsql:
    """Runs a local psql over the network (the server target). The password goes in the environment."""

    endpoint: Endpoint
    psql: str = field(default_factory=find_local_psql)

    def run(self, database: str, args: Sequence[str], chunks: Iterable[bytes], program: str = "psql") -> PsqlOutput:
        ep = self.endpoint
        env = dict(os.environ, PGPASSWORD=ep.password, PGAPPNAME=BUILD_APP, PGCONNECT_TIMEOUT="10")
        binary = self.psql if program == "psql" else find_local_tool(program)
        argv = [binary, "-h", ep.host, "-p", str(ep.port), "-U", ep.user, "-d", database, *args]
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
