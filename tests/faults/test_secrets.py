"""Secrets and exposure: the password never shows in any process's argv, in output, logs, --json or
error messages; the port binds to 127.0.0.1 by default; a non-local server target is refused without
--allow-remote; `down --volumes` and a destructive `fresh` need --yes when there is no terminal.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.faults, pytest.mark.integration]

# The distinctive core is what is searched for: it survives any quoting or escaping of the rest.
CORE = "leakcheck" + secrets.token_hex(8)
PASSWORD = CORE + " $'\"\\é中"
WRONG_CORE = "wrongpw" + secrets.token_hex(8)


@dataclass
class ArgvScanner:
    """Reads every /proc/*/cmdline over and over, from a thread, looking for needles."""

    needles: tuple[str, ...]
    scans: int = 0
    cmdlines: int = 0
    leaks: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _scan_once(self) -> None:
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                raw = Path(entry.path, "cmdline").read_bytes()
            except OSError:
                continue  # the process ended meanwhile
            if not raw:
                continue
            self.cmdlines += 1
            argv = raw.decode("utf-8", "replace").replace("\x00", " ")
            for needle in self.needles:
                if needle in argv:
                    self.leaks.append(f"pid {entry.name}: {argv.replace(needle, '<PASSWORD>')[:200]}")
            if argv.startswith("psql "):
                self.seen.add("psql (docker exec, inside the container)")
            elif argv.endswith(" _housekeep"):
                self.seen.add("provision _housekeep")
            elif "-m provision" in argv:
                self.seen.add("provision")
            elif argv.startswith("postgres: "):
                self.seen.add("postgres backend")
        self.scans += 1

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._scan_once()
            time.sleep(0.005)

    def __enter__(self) -> ArgvScanner:
        self._thread = threading.Thread(target=self._loop, name="argv-scanner", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()


@pytest.fixture(scope="module")
def guarded(shared_project: Any) -> Any:
    """A project with a distinctive password (`$$` is a literal `$` in YAML), housekeeping in the background."""
    project = shared_project(password=PASSWORD.replace("$", "$$"), cleanup="background")
    assert "bind" not in project.data
    return project


def _assert_clean(result: Any, what: str, tally: Any, needles: tuple[str, ...] = (CORE,)) -> None:
    text = result.stdout + result.stderr
    tally.outputs_checked += 1
    for needle in needles:
        if needle in text:
            tally.leaks.append(f"{what}: password in output")
        assert needle not in text, f"the password shows in the output of {what}"


def _ensure_built(project: Any, faults: Any) -> None:
    """Tests here also run alone (-k): bring the server and its databases up when an earlier test did not."""
    if faults.container(project) is None or "chatbi" not in faults.databases(project):
        result = faults.run(project.path, "fresh", "--yes")
        assert result.returncode == 0, faults.describe(result)


def _wait_for_housekeeping(project: Any) -> None:
    from provision import api
    from provision.config import load_config

    cfg = load_config(project.path, env={})
    assert cfg.password == PASSWORD
    api.wait_for_housekeeping(cfg)


def test_password_never_in_argv_output_or_logs(guarded: Any, faults: Any, tally: Any) -> None:
    from provision import housekeeping

    log = Path(housekeeping.log_path())
    log_offset = log.stat().st_size if log.exists() else 0

    with ArgvScanner((CORE,)) as scanner:
        up = faults.run(guarded.path, "up")
        assert up.returncode == 0, faults.describe(up)
        _assert_clean(up, "up", tally)
        # A long build (demo scale 3) with no cache, then one that builds the templates in the
        # detached housekeeping process (which gets the config on stdin, not in argv).
        slow = faults.run(guarded.path, "fresh", "--yes", "--demo-scale", "3", "--no-cache")
        assert slow.returncode == 0, faults.describe(slow)
        _assert_clean(slow, "fresh --no-cache", tally)
        as_json = faults.run(guarded.path, "fresh", "--yes", "--demo-scale", "3", "--json")
        assert as_json.returncode == 0, faults.describe(as_json)
        json.loads(as_json.stdout)
        _assert_clean(as_json, "fresh --json", tally)
        _wait_for_housekeeping(guarded)
    tally.cmdline_scans += scanner.scans
    tally.cmdlines_read += scanner.cmdlines
    tally.leaks.extend(f"argv: {leak}" for leak in scanner.leaks)
    tally.notes["argv_scan_saw"] = sorted(scanner.seen)
    assert scanner.leaks == [], "the password is in a process's argv:\n" + "\n".join(scanner.leaks)
    assert scanner.scans >= 20, f"only {scanner.scans} scans of /proc"
    assert "psql (docker exec, inside the container)" in scanner.seen, f"never saw the build's psql: {scanner.seen}"
    assert "provision" in scanner.seen, scanner.seen

    for args in (
        ["status"],
        ["status", "--json"],
        ["url"],
        ["url", "chatbi_demo"],
        ["up"],
        ["wait"],
        ["logs"],
        ["fresh", "--dry-run"],
        ["fresh", "--dry-run", "--json"],
    ):
        result = faults.run(guarded.path, *args)
        assert result.returncode == 0, faults.describe(result)
        _assert_clean(result, " ".join(args), tally)
        if args[0] == "url":
            assert ":***@" in result.stdout
        if "--json" in args:
            json.loads(result.stdout)

    tally.outputs_checked += 1
    appended = log.read_bytes()[log_offset:].decode("utf-8", "replace") if log.exists() else ""
    assert CORE not in appended, f"the password is in the housekeeping log {log}"


def test_errors_do_not_echo_the_password(guarded: Any, faults: Any, tally: Any) -> None:
    up = faults.run(guarded.path, "up")
    assert up.returncode == 0, faults.describe(up)
    port = faults.port(guarded)
    wrong = WRONG_CORE + " $$'\"\\é"
    needles = (CORE, WRONG_CORE)

    # The same server as a server target, with a wrong password: authentication fails (exit 6).
    server = guarded.dir / "wrong-password-server.yaml"
    server.write_text(
        f"target: server\nhost: 127.0.0.1\nport: {port}\npassword: {json.dumps(wrong)}\ntimeout: 10\n",
        encoding="utf-8",
    )
    for args in (["fresh", "--yes"], ["wait", "--timeout", "5"], ["--debug", "fresh", "--yes"]):
        result = faults.run(server, *args)
        assert result.returncode == 6, faults.describe(result)
        assert "refused user" in result.stderr
        _assert_clean(result, "server target, wrong password: " + " ".join(args), tally, needles)
    status = faults.run(server, "status", "--json")
    assert json.loads(status.stdout)["reachable"] is False
    _assert_clean(status, "status --json, wrong password", tally, needles)

    # The same container with another password in the config: drift (exit 4), named but not shown.
    drifted = guarded.dir / "wrong-password-docker.yaml"
    data = dict(guarded.data, password=wrong)
    drifted.write_text(json.dumps(data), encoding="utf-8")  # JSON is YAML
    for args in (["up"], ["fresh", "--yes"]):
        result = faults.run(drifted, *args)
        assert result.returncode == 4, faults.describe(result)
        assert "password differs" in result.stderr
        _assert_clean(result, "drift: " + " ".join(args), tally, needles)

    # A password of the wrong type: the config error hides the value.
    typed = guarded.dir / "typed-password.yaml"
    typed.write_text(f"container: {guarded.name}\nport: 0\npassword: [{WRONG_CORE}]\n", encoding="utf-8")
    result = faults.run(typed, "fresh", "--yes")
    assert result.returncode == 2, faults.describe(result)
    assert "<hidden>" in result.stderr
    _assert_clean(result, "password of the wrong type", tally, needles)


def test_default_port_binding_is_loopback(guarded: Any, faults: Any) -> None:
    _ensure_built(guarded, faults)
    info = faults.container(guarded)
    assert info is not None
    wanted = info["HostConfig"]["PortBindings"]["5432/tcp"]
    assert [b["HostIp"] for b in wanted] == ["127.0.0.1"], wanted
    live = info["NetworkSettings"]["Ports"]["5432/tcp"]
    assert live and all(b["HostIp"] == "127.0.0.1" for b in live), live


@pytest.mark.parametrize(
    ("how", "host"),
    [("yaml", "203.0.113.7"), ("yaml", "db.example.com"), ("env", "198.51.100.1"), ("flag", "203.0.113.8")],
)
def test_remote_server_refused_without_allow_remote(
    tmp_path: Path, faults: Any, tally: Any, how: str, host: str
) -> None:
    config = tmp_path / "remote.yaml"
    text = f"target: server\nport: 5432\npassword: {CORE}\ntimeout: 30\n"
    env: dict[str, str] = {}
    args: list[str] = []
    if how == "yaml":
        text += f"host: {host}\n"
    elif how == "env":
        env["PROVISION_HOST"] = host
    else:
        args = ["--host", host]
    config.write_text(text)
    started = time.monotonic()
    result = faults.run(config, *args, "fresh", "--yes", env=env)
    assert result.returncode == 9, faults.describe(result)
    assert time.monotonic() - started < 10, "the refusal should come before any connection attempt"
    assert host in result.stderr and "--allow-remote" in result.stderr, result.stderr
    _assert_clean(result, f"remote refusal ({how})", tally)


def test_destructive_fresh_needs_yes_without_a_terminal(guarded: Any, faults: Any) -> None:
    _ensure_built(guarded, faults)
    _wait_for_housekeeping(guarded)
    faults.insert_marker(guarded, "chatbi")
    before = faults.databases(guarded)

    piped = faults.run(guarded.path, "fresh", stdin="")  # stdin is a pipe: not a terminal
    assert piped.returncode == 9, faults.describe(piped)
    assert "--yes" in piped.stderr and "chatbi" in piped.stderr
    proc = faults.popen(guarded.path, "fresh", "--only", "chatbi")  # stdin is /dev/null
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 9, faults.describe((proc.returncode, out, err))

    assert faults.classify(guarded, "chatbi") == "old", "the refused run replaced chatbi"
    after = faults.databases(guarded)
    assert after["chatbi"] == before["chatbi"] and after["chatbi_demo"] == before["chatbi_demo"]
    assert faults.leftovers(guarded) == []


@pytest.fixture
def volume_kept(guarded: Any, faults: Any, docker_client: Any) -> Iterator[str]:
    _ensure_built(guarded, faults)
    volume = guarded.data["volume"]
    assert docker_client.volumes.get(volume)
    yield volume


def test_down_volumes_needs_yes_without_a_terminal(
    guarded: Any, faults: Any, docker_client: Any, volume_kept: str
) -> None:
    refused = faults.run(guarded.path, "down", "--volumes", stdin="")
    assert refused.returncode == 9, faults.describe(refused)
    assert "--yes" in refused.stderr
    assert docker_client.volumes.get(volume_kept), "the volume was removed without confirmation"
    info = faults.container(guarded)
    assert info is not None and info["State"]["Running"], "the container was removed without confirmation"

    done = faults.run(guarded.path, "down", "--volumes", "--yes", stdin="")
    assert done.returncode == 0, faults.describe(done)
    assert not docker_client.volumes.list(filters={"name": volume_kept})
    assert faults.container(guarded) is None
