"""The `provision` command's entry point: hands the command to a warm forkserver, or runs it here.

Starting Python and importing click, psycopg2 and provision costs about 110 ms before any
work, which is most of a warm `fresh`. The first `provision` command therefore starts a
forkserver (provision/forkserver.py) that has imported all of that once; later commands
connect to it over a private unix socket and it forks a worker that runs the command with
this process's arguments, environment, working directory and terminal. This process only
relays signals and the exit status, so to the caller it behaves like the command itself:
same output, same exit code, Ctrl-C interrupts it, and if this process is killed (even with
SIGKILL) the worker dies with it.

This module runs before anything else of provision, so it imports only what Python has
already loaded at start-up (`_socket` instead of `socket`, which costs 4 ms of imports;
the console script has imported `re`, and so `enum`, which `signal` needs).
It never prints except in the one case where the outcome is unknown (see _relay).
`python -m provision` always runs in-process and never starts a forkserver.
"""

from __future__ import annotations

import _socket
import os
import signal
import sys
import zlib

SWITCH = "PROVISION_FORKSERVER"  # 0/false/no/off: always run in-process
# Run in the terminal's own process: interactive psql needs job control and window resizes.
IN_PROCESS_VERBS = frozenset({"psql"})
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
MAX_SOCKET_PATH = 100  # sun_path holds 104 (macOS) to 108 (Linux) bytes
PROTOCOL = b"1"
# What the forkserver reports, each a kind byte and a 4-byte number: the worker started (its
# pid), exited (its code), or was killed (the signal).
STARTED, EXITED, KILLED = b"p", b"x", b"k"
SERVE = "import sys; sys.path[:] = sys.argv[2:]; from provision.forkserver import serve; serve(sys.argv[1])"


def main() -> int:
    """Run the command through the forkserver when one answers, else here (starting one for next time)."""
    argv = sys.argv[1:]
    path = socket_path() if enabled(argv) else None
    if path is not None:
        code = _relay(path, argv)
        if code is not None:
            return code
        _start_forkserver(path)
    from .cli import main as run_here

    run_here(argv)
    return 0


def enabled(argv: list[str]) -> bool:
    if os.environ.get(SWITCH, "").strip().lower() in ("0", "false", "no", "off"):
        return False
    if not hasattr(os, "fork") or not hasattr(_socket, "AF_UNIX") or not hasattr(os, "posix_spawn"):
        return False  # Windows: no fork, no descriptor passing
    return not IN_PROCESS_VERBS.intersection(argv)


def socket_folder() -> str | None:
    """A folder only this user can enter (0700, owned by us, not a symlink), or None."""
    base = os.environ.get("XDG_RUNTIME_DIR") or os.environ.get("TMPDIR") or "/tmp"
    folder = os.path.join(base, f"provision-{os.getuid()}")
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return None
    try:
        st = os.lstat(folder)
    except OSError:
        return None
    # S_ISDIR without importing stat: 0o040000 is the directory type bit.
    if (st.st_mode & 0o170000) != 0o040000 or st.st_uid != os.getuid() or st.st_mode & 0o077:
        return None
    return folder


def source_stamps() -> list[str]:
    """Path, mtime and size of each of provision's source files, and the mtime of each folder on
    the search path (installing or upgrading a package changes its site-packages). A forkserver
    compares them too, and exits when they change."""
    here = os.path.dirname(os.path.abspath(__file__))
    stamps = []
    for folder in sys.path:
        try:
            stamps.append(f"{folder}:{os.stat(folder or '.').st_mtime_ns}")
        except OSError:
            continue
    for folder in (here, os.path.join(here, "targets")):
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.endswith(".py"):
                    st = entry.stat()
                    stamps.append(f"{folder}/{entry.name}:{st.st_mtime_ns}:{st.st_size}")
    return sorted(stamps)


def code_key() -> str:
    """Names the code a forkserver runs: this interpreter, its search path and flags, and
    source_stamps(). Any change gives a new socket, so a forkserver never runs stale
    code (and the old one exits, see forkserver._loop)."""
    parts = [sys.executable, sys.version, repr(sys.path), repr(sys.flags), repr(sys.warnoptions), PROTOCOL.decode()]
    parts += source_stamps()
    return format(zlib.crc32("\0".join(parts).encode("utf-8", "surrogateescape")), "08x")


def socket_path() -> str | None:
    folder = socket_folder()
    if folder is None:
        return None
    path = os.path.join(folder, f"{code_key()}.sock")
    return path if len(os.fsencode(path)) <= MAX_SOCKET_PATH else None


def report(kind: bytes, number: int) -> bytes:
    """One message of the forkserver to the launcher (see STARTED)."""
    return kind + number.to_bytes(4, "big")


def encode_request(argv: list[str]) -> bytes | None:
    """argv, environment, working directory, umask and how the three standard streams encode
    text (read back by Request)."""
    streams = (sys.stdin, sys.stdout, sys.stderr)
    if any(s is None for s in streams):
        return None
    try:
        cwd = os.getcwdb()
    except OSError:
        return None
    umask = os.umask(0o022)
    os.umask(umask)
    fields = [PROTOCOL, cwd, str(umask).encode()]
    for stream in streams:
        fields += [stream.encoding.encode(), (stream.errors or "strict").encode()]
    fields.append(str(len(argv)).encode())
    fields += [os.fsencode(arg) for arg in argv]
    fields += [key + b"=" + value for key, value in os.environb.items()]
    return b"\0".join(fields)


class Request:
    """A command as encode_request() wrote it, read back by the forkserver."""

    def __init__(self, payload: bytes) -> None:
        fields = payload.split(b"\0")
        if fields[0] != PROTOCOL:
            raise ValueError(f"unknown request version {fields[0]!r}")
        self.cwd = fields[1]
        self.umask = int(fields[2])
        self.streams = [(fields[3 + 2 * i].decode(), fields[4 + 2 * i].decode()) for i in range(3)]
        count = int(fields[9])
        self.argv = [os.fsdecode(arg) for arg in fields[10 : 10 + count]]
        self.env = dict(item.split(b"=", 1) for item in fields[10 + count :] if b"=" in item)


def _relay(path: str, argv: list[str]) -> int | None:
    """The command's exit code as run by the forkserver at `path`; None if none answered and
    nothing ran (the caller then runs it here)."""
    request = encode_request(argv)
    if request is None:
        return None
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        try:
            sock.connect(path)
            # The standard streams travel as descriptors: the worker writes to this terminal,
            # pipe or file itself, and isatty() answers as it would here.
            fds = b"".join(fd.to_bytes(4, sys.byteorder, signed=True) for fd in (0, 1, 2))
            head = len(request).to_bytes(4, "big")
            sent = sock.sendmsg([head + request], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fds)])
            sock.sendall((head + request)[sent:])
        except OSError:
            return None
        return _wait(sock)
    finally:
        sock.close()


def _wait(sock: _socket.socket) -> int | None:
    """Relay signals to the worker until the forkserver reports how it ended."""

    def forward(signum: int, frame: object) -> None:
        try:
            sock.send(bytes([signum]))
        except OSError:
            pass

    # A signal this process ignores (as a shell does for `cmd &`) stays ignored, as it would in-process.
    relayed = [sig for sig in FORWARDED_SIGNALS if signal.getsignal(sig) is not signal.SIG_IGN]
    previous = {sig: signal.signal(sig, forward) for sig in relayed}
    started = False
    buffer = b""
    try:
        while True:
            try:
                chunk = sock.recv(64)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buffer += chunk
            while len(buffer) >= 5:
                kind, value, buffer = buffer[:1], int.from_bytes(buffer[1:5], "big"), buffer[5:]
                if kind == STARTED:
                    started = True
                elif kind == EXITED:
                    return value
                elif kind == KILLED:
                    return _die_by(value)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not started:
        return None
    # The worker ran but nobody reported its end (the forkserver was killed): say so rather
    # than guess, because running the command again here could do it twice.
    os.write(2, b"Error: the provision forkserver went away while running this command; its outcome is unknown\n")
    os.write(2, b"Hint: run the command again (set PROVISION_FORKSERVER=0 to run without it)\n")
    return 1


def _die_by(signum: int) -> int:
    """End the way the worker ended, so a caller that checks for a signal sees one."""
    if signum not in (signal.SIGKILL, signal.SIGSTOP):  # these two cannot be caught anyway
        signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    return 128 + signum  # the signal was blocked or ignored


def _start_forkserver(path: str) -> None:
    """Start a forkserver in its own session for the next command; a failure only costs speed."""
    log = path[: -len(".sock")] + ".log"
    try:
        os.posix_spawn(
            sys.executable,
            # This process's own search path, not `-m`'s (which starts with the working
            # directory, where a stray yaml.py would be imported instead of PyYAML).
            [sys.executable, "-c", SERVE, path, *sys.path],
            os.environ,
            setsid=True,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                (os.POSIX_SPAWN_OPEN, 2, log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600),
            ],
        )
    except OSError:
        pass
