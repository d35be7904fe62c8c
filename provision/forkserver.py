"""A resident process with provision imported that forks a worker per `provision` command.

Started by the launcher (provision/launcher.py) with the launcher's own search path.
It holds a lock beside its socket (one forkserver per socket), imports the CLI and the
modules its commands use, then serves: each connection carries a command's argv,
environment, working directory, umask and standard streams (as descriptors); a forked
worker adopts them and runs the CLI exactly as `provision` would in-process. The server
reports the worker's exit status to the launcher; the worker kills itself with SIGKILL if
the launcher goes away, and turns signals the launcher relays into its own.

Nothing crosses from one command to the next: every worker is a fresh fork of the same
pre-import state, and provision reads the environment only at call time, never at import.
The server exits after IDLE_SECONDS without commands, when its socket is removed, or when
provision's source files or the installed packages change (launcher.source_stamps; the
launcher then uses a new socket).
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import selectors
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from typing import NoReturn

from .launcher import EXITED, KILLED, STARTED, Request, report, source_stamps

IDLE_SECONDS = 600.0
# What the commands import, so that workers find it loaded; the Docker SDK too (only up,
# down and logs need it; importing it costs the server 0.1 s once), through docker_engine.
PRELOAD = (
    "provision.cli",
    "provision.api",
    "provision.config",
    "provision.pipeline",
    "provision.housekeeping",
    "provision.sqlstream",
    "provision.migrations",
    "provision.schema",
    "provision.drift",
    "provision.snapshots",
    "provision.doctor",
    "provision.readiness",
    "provision.targets.docker",
    "provision.targets.server",
    "provision.docker_engine",
    "yaml",
)


def serve(path: str, idle: float = IDLE_SECONDS) -> None:
    """Serve commands on the unix socket `path` until idle; returns at once if another server holds it."""
    stem = path[: -len(".sock")]
    with open(os.open(stem + ".lock", os.O_RDWR | os.O_CREAT, 0o600)) as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return  # another forkserver serves this socket
        for name in PRELOAD:
            with contextlib.suppress(ImportError):
                __import__(name)
        from . import docker_engine

        with contextlib.suppress(ImportError):
            docker_engine.preload()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # left by a server that was killed (we hold the lock, so it is dead)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        umask = os.umask(0o177)
        try:
            listener.bind(path)
        finally:
            os.umask(umask)
        listener.listen(64)
        bound = os.stat(path).st_ino
        try:
            _loop(listener, path, bound, idle)
        finally:
            listener.close()
            with contextlib.suppress(OSError):
                if os.stat(path).st_ino == bound:
                    os.unlink(path)
            # Still holding the lock: a server starting now either waits on this file and fails
            # (and the next launcher starts another) or creates a new one.
            with contextlib.suppress(OSError):
                os.unlink(stem + ".lock")
            with contextlib.suppress(OSError):
                if os.stat(stem + ".log").st_size == 0:
                    os.unlink(stem + ".log")


def _loop(listener: socket.socket, path: str, bound: int, idle: float) -> None:
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # wakes select through the pipe
    children: dict[int, socket.socket] = {}
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(wake_read, selectors.EVENT_READ)
    stamps = source_stamps()
    last = time.monotonic()
    while True:
        timeout = None if children else max(0.0, last + idle - time.monotonic())
        events = selector.select(timeout=min(timeout, 60.0) if timeout is not None else 60.0)
        for key, _ in events:
            if key.fileobj is listener:
                _accept(listener, children, (wake_read, wake_write))
            else:
                with contextlib.suppress(BlockingIOError):
                    while os.read(wake_read, 512):
                        pass
        _reap(children)
        if children or events:
            last = time.monotonic()
        elif time.monotonic() - last >= idle or not _current(path, bound, stamps):
            return


def _current(path: str, bound: int, stamps: list[str]) -> bool:
    """Still reachable at `path`, and still running the code a launcher would ask for."""
    try:
        return os.stat(path).st_ino == bound and source_stamps() == stamps
    except OSError:
        return False


def _accept(listener: socket.socket, children: dict[int, socket.socket], wake: tuple[int, int]) -> None:
    conn, _ = listener.accept()
    fds: list[int] = []
    try:
        if hasattr(socket, "SO_PEERCRED"):
            # The socket's folder is private already; this also refuses a descriptor passed on.
            _, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
            if uid != os.getuid():
                conn.close()
                return
        conn.settimeout(5.0)  # a client that connects and sends nothing must not wedge the server
        head, fds, _, _ = socket.recv_fds(conn, 4, 3)
        if len(head) < 4 or len(fds) != 3:
            raise ValueError("incomplete request")
        size = int.from_bytes(head, "big")
        payload = b""
        while len(payload) < size:
            chunk = conn.recv(size - len(payload))
            if not chunk:
                raise ValueError("truncated request")
            payload += chunk
        request = Request(payload)
        conn.settimeout(None)
    except (OSError, ValueError):
        for fd in fds:
            os.close(fd)
        conn.close()
        return
    try:
        pid = os.fork()
    except OSError:
        pid = -1  # out of processes: the launcher sees the connection close unstarted and runs it itself
    if pid == 0:
        _work(conn, request, fds, listener, wake)
    for fd in fds:
        os.close(fd)
    if pid < 0:
        conn.close()
        return
    children[pid] = conn
    with contextlib.suppress(OSError):
        conn.sendall(report(STARTED, pid))


def _reap(children: dict[int, socket.socket]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is None:
            continue
        if os.WIFSIGNALED(status):
            message = report(KILLED, os.WTERMSIG(status))
        else:
            message = report(EXITED, os.waitstatus_to_exitcode(status))
        with contextlib.suppress(OSError):
            conn.sendall(message)
        conn.close()


def _work(
    conn: socket.socket, request: Request, fds: list[int], listener: socket.socket, wake: tuple[int, int]
) -> NoReturn:
    """In the forked worker: become the launcher's command, run the CLI, exit with its code."""
    code = 1
    try:
        listener.close()
        signal.set_wakeup_fd(-1)
        for fd in wake:
            os.close(fd)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request.cwd)
        os.umask(request.umask)
        os.environ.clear()
        os.environb.update(request.env)
        sys.stdin, sys.stdout, sys.stderr = (
            _text_stream(fd, encoding, errors) for fd, (encoding, errors) in enumerate(request.streams)
        )
        sys.argv = ["provision", *request.argv]
        threading.Thread(target=_watch, args=(conn,), name="provision-launcher-watch", daemon=True).start()
        from .cli import main

        try:
            main(request.argv)
            code = 0
        except SystemExit as exc:
            code = _exit_code(exc)
    except BaseException:  # noqa: BLE001 - a worker must always end with a status
        with contextlib.suppress(Exception):
            traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def _text_stream(fd: int, encoding: str, errors: str) -> io.TextIOWrapper:
    """A standard stream on `fd` buffered as Python buffers its own: by line on a terminal or for stderr."""
    mode = "r" if fd == 0 else "w"
    raw = io.FileIO(fd, mode, closefd=False)
    binary = io.BufferedReader(raw) if fd == 0 else io.BufferedWriter(raw)
    return io.TextIOWrapper(binary, encoding=encoding, errors=errors, line_buffering=fd == 2 or os.isatty(fd))


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code & 0xFF
    print(exc.code, file=sys.stderr)
    return 1


def _watch(conn: socket.socket) -> None:
    """Signals the launcher relays become this worker's own; if the launcher is gone, so is the worker."""
    main = threading.main_thread().ident
    assert main is not None
    while True:
        try:
            data = conn.recv(16)
        except OSError:
            data = b""
        if not data:
            os.kill(os.getpid(), signal.SIGKILL)
        for signum in data:
            # To the main thread: a read it is blocked in (a question on the terminal) must be
            # interrupted, as the signal would interrupt it in-process.
            signal.pthread_kill(main, signum)
