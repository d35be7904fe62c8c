"""postgres.sqlstream: chunked streaming, the source map, psql error mapping, the two-thread pump, psql flags."""

from __future__ import annotations

import glob
import os
import shutil
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from provision.endpoint import Endpoint
from provision.errors import ConfigError, ServerError, SqlError
from provision.postgres.sqlstream import (
    CHUNK_BYTES,
    LocalPsql,
    PsqlOutput,
    SourceMap,
    Tail,
    describe_psql_failure,
    find_local_psql,
    psql_args,
    pump,
    stream_files,
)

# ---------------------------------------------------------------- stream_files and SourceMap


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_stream_is_the_concatenation_in_bounded_chunks(tmp_path: Path) -> None:
    a = write(tmp_path / "a.sql", b"create table a (id int);\ninsert into a values (1);\n")
    b = write(tmp_path / "b.sql", b"select 1;\nselect 2;")  # no trailing newline
    c = write(tmp_path / "c.sql", "-- ünïcödé\r\nselect 'x';\n".encode())
    source_map = SourceMap()
    chunks = list(stream_files([a, b, c], source_map, chunk_bytes=7))
    assert all(0 < len(chunk) <= 7 for chunk in chunks)
    assert b"".join(chunks) == a.read_bytes() + b.read_bytes() + b"\n" + c.read_bytes()
    assert source_map.spans == [(1, 2, a), (3, 4, b), (5, 6, c)]


def test_default_chunks_stay_bounded_for_a_large_file(tmp_path: Path) -> None:
    line = b"insert into t values (1, 'some text that fills the line');\n"
    big = write(tmp_path / "big.sql", line * (3 * CHUNK_BYTES // len(line) + 5))
    source_map = SourceMap()
    total = 0
    for chunk in stream_files([big], source_map):
        assert len(chunk) <= CHUNK_BYTES
        total += len(chunk)
    assert total == big.stat().st_size
    assert source_map.spans == [(1, big.read_bytes().count(b"\n"), big)]


def test_source_map_locates_stream_lines(tmp_path: Path) -> None:
    a = write(tmp_path / "a.sql", b"1\n2\n3\n")
    b = write(tmp_path / "b.sql", b"1\n2")
    source_map = SourceMap()
    b"".join(stream_files([a, b], source_map))
    assert source_map.locate(1) == (a, 1)
    assert source_map.locate(3) == (a, 3)
    assert source_map.locate(4) == (b, 1)
    assert source_map.locate(5) == (b, 2)
    assert source_map.locate(6) is None
    assert source_map.locate(0) is None


def test_source_map_is_filled_only_as_files_are_read(tmp_path: Path) -> None:
    a = write(tmp_path / "a.sql", b"select 1;\n")
    source_map = SourceMap()
    stream = stream_files([a], source_map)
    assert source_map.spans == []
    list(stream)
    assert source_map.spans == [(1, 1, a)]


# ---------------------------------------------------------------- describe_psql_failure

SINGLE_LINE = (
    'psql:<stdin>:2: ERROR:  syntax error at or near "CREAT"\n'
    "LINE 1: CREAT TABLE x (id int);\n"
    "        ^\n"
    "psql:<stdin>:2: STATEMENT:  CREAT TABLE x (id int);\n"
)

MULTI_LINE = (
    'psql:<stdin>:6: ERROR:  column "idd" does not exist\n'
    "LINE 3:   where idd = 2;\n"
    "                ^\n"
    'HINT:  Perhaps you meant to reference the column "a.id".\n'
    "psql:<stdin>:6: STATEMENT:  select 1\n"
    "  from a\n"
    "  where idd = 2;\n"
)


def two_files(tmp_path: Path, first: bytes, second: bytes) -> tuple[SourceMap, Path, Path]:
    a = write(tmp_path / "01_schema.sql", first)
    b = write(tmp_path / "02_data.sql", second)
    source_map = SourceMap()
    b"".join(stream_files([a, b], source_map))
    return source_map, a, b


def test_single_line_syntax_error_maps_to_second_file(tmp_path: Path) -> None:
    source_map, _, b = two_files(tmp_path, b"create table a (id int);\n", b"CREAT TABLE x (id int);\n")
    error = describe_psql_failure("chatbi", PsqlOutput(3, SINGLE_LINE), source_map)
    assert isinstance(error, SqlError) and error.exit_code == 7
    assert f"{b}:1" in str(error)
    assert 'syntax error at or near "CREAT"' in str(error)
    assert error.detail is not None
    assert "statement: CREAT TABLE x (id int);" in error.detail
    assert "LINE 1: CREAT TABLE x (id int);" in error.detail
    assert "chatbi was not changed" in error.hint


def test_multi_line_statement_maps_to_the_error_line(tmp_path: Path) -> None:
    # Stream lines 1-2 are the first file; the failing statement spans stream lines 4-6,
    # and the error (LINE 3 of the statement) is stream line 6 = line 4 of the second file.
    source_map, _, b = two_files(
        tmp_path,
        b"create table a (id int);\ninsert into a values (1);\n",
        b"-- queries\nselect 1\n  from a\n  where idd = 2;\n",
    )
    error = describe_psql_failure("chatbi", PsqlOutput(3, MULTI_LINE), source_map)
    assert isinstance(error, SqlError)
    assert f"{b}:4" in str(error)
    assert 'column "idd" does not exist' in str(error)
    assert error.detail is not None
    assert "statement: select 1" in error.detail
    assert 'HINT:  Perhaps you meant to reference the column "a.id".' in error.detail


def test_error_in_the_first_file(tmp_path: Path) -> None:
    source_map, a, _ = two_files(tmp_path, b"select 1;\nCREAT TABLE x (id int);\n", b"select 2;\n")
    error = describe_psql_failure("chatbi", PsqlOutput(3, SINGLE_LINE), source_map)
    assert f"{a}:2" in str(error)


def test_error_without_statement_echo_uses_the_reported_line(tmp_path: Path) -> None:
    source_map, _, b = two_files(tmp_path, b"select 1;\n", b"select 2;\n\\foo\n")
    stderr = "psql:<stdin>:3: error: invalid command \\foo\n"
    error = describe_psql_failure("app", PsqlOutput(3, stderr), source_map)
    assert isinstance(error, SqlError)
    assert f"{b}:2" in str(error)
    assert "invalid command" in str(error)


def test_line_outside_the_map_is_reported_as_input_line() -> None:
    error = describe_psql_failure("app", PsqlOutput(3, SINGLE_LINE), SourceMap())
    assert "line 2 of the input" in str(error)


def test_exit_code_2_without_error_line_is_a_server_error() -> None:
    stderr = "psql: error: connection to server on socket failed: FATAL:  the database system is shutting down\n"
    error = describe_psql_failure("chatbi", PsqlOutput(2, stderr), SourceMap())
    assert isinstance(error, ServerError) and error.exit_code == 10
    assert "chatbi" in str(error) and "shutting down" in str(error)


def test_exit_code_2_with_empty_stderr_is_a_server_error() -> None:
    error = describe_psql_failure("chatbi", PsqlOutput(2, ""), SourceMap())
    assert isinstance(error, ServerError)
    assert "psql exited with code 2" in str(error)


def test_other_failure_without_error_line_is_a_sql_error() -> None:
    error = describe_psql_failure("chatbi", PsqlOutput(1, "psql: fatal: out of memory\n"), SourceMap())
    assert isinstance(error, SqlError) and not isinstance(error, ServerError)
    assert "out of memory" in str(error)


def test_connection_lost_mid_script_is_a_server_error(tmp_path: Path) -> None:
    source_map, _, _ = two_files(tmp_path, b"select 1;\n", b"select pg_sleep(10);\n")
    stderr = (
        "psql:<stdin>:2: server closed the connection unexpectedly\n"
        "\tThis probably means the server terminated abnormally\n"
        "\tbefore or while processing the request.\n"
        "psql:<stdin>:2: error: connection to server was lost\n"
    )
    error = describe_psql_failure("chatbi", PsqlOutput(2, stderr), source_map)
    assert isinstance(error, ServerError)


# ---------------------------------------------------------------- pump


def frames(*items: tuple[int, bytes]) -> Iterator[tuple[int, bytes]]:
    yield from items


def test_pump_writes_every_chunk_and_collects_both_streams() -> None:
    sent: list[bytes] = []
    closed: list[bool] = []
    out, err = pump(
        [b"a", b"bb", b"ccc"],
        sent.append,
        lambda: closed.append(True),
        lambda: frames((1, b"hello "), (2, b"warn"), (1, b"world")),
    )
    assert sent == [b"a", b"bb", b"ccc"]
    assert closed == [True]
    assert (out, err) == ("hello world", "warn")


def test_pump_writes_from_another_thread_while_frames_are_read() -> None:
    """The writer must not wait for the reader: a single thread would deadlock here."""
    main_thread = threading.get_ident()
    first_sent = threading.Event()
    first_read = threading.Event()
    writer_threads: set[int] = set()
    sent: list[bytes] = []

    def send(chunk: bytes) -> None:
        writer_threads.add(threading.get_ident())
        sent.append(chunk)
        if len(sent) == 1:
            first_sent.set()
        else:
            assert first_read.wait(5), "the reader never ran while the writer was busy"

    def receive() -> Iterator[tuple[int, bytes]]:
        assert first_sent.wait(5), "the writer never started"
        yield 1, b"output while input is still being written"
        first_read.set()

    out, _ = pump([b"1", b"2", b"3"], send, lambda: None, receive)
    assert sent == [b"1", b"2", b"3"]
    assert writer_threads and main_thread not in writer_threads
    assert out.startswith("output")


@pytest.mark.parametrize("exc_type", [BrokenPipeError, ConnectionResetError])
def test_pump_stops_writing_when_the_reader_goes_away(exc_type: type[Exception]) -> None:
    sent: list[bytes] = []
    closed: list[bool] = []

    def send(chunk: bytes) -> None:
        if chunk == b"2":
            raise exc_type()
        sent.append(chunk)

    def chunks() -> Iterator[bytes]:
        for i in range(1, 1000):
            yield str(i).encode()

    _, err = pump(chunks(), send, lambda: closed.append(True), lambda: frames((2, b"ERROR: boom")))
    assert sent == [b"1"]
    assert closed == [True]
    assert err == "ERROR: boom"


def test_pump_reraises_other_writer_errors_in_the_caller() -> None:
    def send(chunk: bytes) -> None:
        raise ValueError("disk on fire")

    closed: list[bool] = []
    with pytest.raises(ValueError, match="disk on fire"):
        pump([b"x"], send, lambda: closed.append(True), lambda: frames((1, b"ok")))
    assert closed == [True]


def test_pump_reraises_errors_from_the_chunk_source(tmp_path: Path) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"select 1;"
        raise OSError("file vanished")

    with pytest.raises(OSError, match="file vanished"):
        pump(chunks(), lambda chunk: None, lambda: None, lambda: frames())


def test_pump_ignores_errors_when_closing() -> None:
    def close() -> None:
        raise OSError("already closed")

    assert pump([b"x"], lambda chunk: None, close, lambda: frames((1, b"x"))) == ("x", "")


def test_tail_keeps_head_and_tail_only() -> None:
    tail = Tail(limit=4)
    for piece in (b"abc", b"defgh", b"ijklmn"):
        tail.add(piece)
    assert tail.head == b"abcd"
    assert tail.tail == b"klmn"
    assert tail.text() == "abcd\n...\nklmn"
    short = Tail(limit=10)
    short.add(b"abc")
    assert short.text() == "abc"


# ---------------------------------------------------------------- psql flags and local psql


def test_psql_args_stop_on_error_and_read_stdin() -> None:
    args = psql_args([("scale", "3"), ("who", "a b")], single_transaction=False)
    assert "ON_ERROR_STOP=1" in args and args[args.index("ON_ERROR_STOP=1") - 1] == "-v"
    assert args[args.index("scale=3") - 1] == "-v"
    assert "who=a b" in args
    assert "--single-transaction" not in args
    assert args[-2:] == ["-f", "-"]
    assert "-X" in args  # never read ~/.psqlrc


def test_psql_args_single_transaction_only_when_asked() -> None:
    args = psql_args([], single_transaction=True)
    assert args.count("--single-transaction") == 1
    assert args[-2:] == ["-f", "-"]
    assert not any(a.startswith("scale=") for a in args)


@pytest.fixture
def debian_wrapper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PATH finds psql as Debian's pg_wrapper (a symlink to .../pg_wrapper)."""
    wrapper = tmp_path / "share" / "pg_wrapper"
    wrapper.parent.mkdir()
    wrapper.write_text("#!/usr/bin/perl\n")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "psql").symlink_to(wrapper)
    monkeypatch.setattr(shutil, "which", lambda name: str(tmp_path / "bin" / name))


def test_find_local_psql_prefers_the_newest_binary_behind_debians_wrapper(
    monkeypatch: pytest.MonkeyPatch, debian_wrapper: None
) -> None:
    found = ["/usr/lib/postgresql/15/bin/psql", "/usr/lib/postgresql/17/bin/psql", "/usr/lib/postgresql/16/bin/psql"]
    monkeypatch.setattr(glob, "glob", lambda pattern: list(found))
    assert find_local_psql() == "/usr/lib/postgresql/17/bin/psql"


def test_find_local_psql_orders_old_dotted_versions_below_new_ones(
    monkeypatch: pytest.MonkeyPatch, debian_wrapper: None
) -> None:
    found = ["/usr/lib/postgresql/9.6/bin/psql", "/usr/lib/postgresql/17/bin/psql"]
    monkeypatch.setattr(glob, "glob", lambda pattern: list(found))
    assert find_local_psql() == "/usr/lib/postgresql/17/bin/psql"


def test_find_local_psql_takes_path_as_it_is_without_the_wrapper(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: "/opt/homebrew/bin/psql")
    monkeypatch.setattr(glob, "glob", lambda pattern: ["/usr/lib/postgresql/17/bin/psql"])
    assert find_local_psql() == "/opt/homebrew/bin/psql"


def test_find_local_psql_without_any_psql(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(glob, "glob", lambda pattern: ["/usr/lib/postgresql/17/bin/psql"])
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ConfigError) as info:
        find_local_psql()
    assert "psql is not on PATH" in str(info.value)
    assert "postgresql-client" in info.value.hint


@pytest.fixture
def fake_psql(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in psql: records argv, PGPASSWORD and stdin, prints to both streams, exits 3."""
    script = tmp_path / "psql"
    script.write_text(
        "#!/bin/sh\n"
        'printf "%s\\n" "$@" > "$FAKE_PSQL_OUT/argv"\n'
        'printf "%s" "$PGPASSWORD" > "$FAKE_PSQL_OUT/password"\n'
        'cat > "$FAKE_PSQL_OUT/stdin"\n'
        "echo 'some output'\n"
        "echo 'psql:<stdin>:1: ERROR:  boom' >&2\n"
        "exit 3\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setenv("FAKE_PSQL_OUT", str(out))
    return script


def test_local_psql_streams_stdin_and_keeps_the_password_out_of_argv(fake_psql: Path) -> None:
    password = "p@ss w'rd\"$\\é"
    runner = LocalPsql(Endpoint("127.0.0.1", 6543, "chatbi", password), psql=str(fake_psql))
    assert password not in repr(runner)
    chunks = [b"select 1;\n", b"select 2;\n" * 10000]
    output = runner.run("chatbi", psql_args([], True), iter(chunks))
    out = Path(os.environ["FAKE_PSQL_OUT"])
    assert output.exit_code == 3
    assert "psql:<stdin>:1: ERROR:  boom" in output.stderr
    assert output.stdout == "some output\n"
    assert (out / "stdin").read_bytes() == b"".join(chunks)
    assert (out / "password").read_text() == password
    argv = (out / "argv").read_text().splitlines()
    assert password not in "\n".join(argv)
    assert argv[:8] == ["-h", "127.0.0.1", "-p", "6543", "-U", "chatbi", "-d", "chatbi"]
    assert argv[-2:] == ["-f", "-"]
