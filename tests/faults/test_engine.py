"""The engine and the server misbehaving: a crash-looping container, a Docker engine that is not
there (before the run, and gone in the middle of `wait`), and a server restarted during `wait`.

dockerd is shared with other work, so it is never stopped: "Docker gone" is a DOCKER_HOST that
points nowhere, or a private socket proxy in front of the real engine that the test closes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest

pytestmark = [pytest.mark.faults, pytest.mark.integration]

FAIL_FAST_SECONDS = 10


# ---------------------------------------------------------------- crash-looping container


def test_crash_looping_container_fails_fast_with_the_log(make_project: Any, faults: Any, docker_client: Any) -> None:
    # timeout 60 in the config: failing within 10 s means the exit was noticed, not waited out.
    project = make_project(server_settings={"shared_buffers": "bogus"})

    started = time.monotonic()
    result = faults.run(project.path, "up")
    elapsed = time.monotonic() - started
    assert result.returncode == 5, faults.describe(result)
    assert elapsed < FAIL_FAST_SECONDS, f"`up` took {elapsed:.1f}s to notice the server exited"
    assert "exited with code" in result.stderr
    assert "last lines of the container log" in result.stderr
    assert 'invalid value for parameter "shared_buffers"' in result.stderr, "the log tail does not say why"
    assert "Traceback" not in result.stdout + result.stderr

    # Now make Docker restart it forever: the loop must be recognised as fast.
    docker_client.api.update_container(project.name, restart_policy={"Name": "always"})
    for args in (["up"], ["fresh", "--yes"]):
        started = time.monotonic()
        result = faults.run(project.path, *args)
        elapsed = time.monotonic() - started
        assert result.returncode == 5, faults.describe(result)
        assert elapsed < FAIL_FAST_SECONDS, f"`{' '.join(args)}` took {elapsed:.1f}s on a restart loop"
        assert "restarting in a loop" in result.stderr or "exited with code" in result.stderr, result.stderr
        assert 'invalid value for parameter "shared_buffers"' in result.stderr
        assert "Traceback" not in result.stdout + result.stderr


# ---------------------------------------------------------------- Docker engine unreachable

VERBS = (
    ("up",),
    ("fresh", "--yes"),
    ("wait", "--timeout", "5"),
    ("status",),
    ("status", "--json"),
    ("url",),
    ("logs",),
    ("down",),
)


@pytest.mark.parametrize("docker_host", ["unix:///nonexistent.sock", "tcp://127.0.0.1:1"])
def test_docker_unreachable_before_the_run(make_project: Any, faults: Any, docker_host: str) -> None:
    project = make_project()
    verbs = VERBS if docker_host.startswith("unix") else VERBS[:2]
    for args in verbs:
        result = faults.run(project.path, *args, env={"DOCKER_HOST": docker_host}, timeout=60)
        shown = f"`{' '.join(args)}` with DOCKER_HOST={docker_host}:\n" + faults.describe(result)
        assert result.returncode == 3, shown
        assert docker_host.split("://", 1)[1] in result.stderr, "the message does not name the engine address"
        assert "Docker engine" in result.stderr, shown
        assert "Traceback" not in result.stdout + result.stderr, shown
    assert faults.container(project) is None


@pytest.fixture(scope="module")
def server(shared_project: Any, faults: Any) -> Any:
    """One running server for the `wait` tests below."""
    project = shared_project()
    result = faults.run(project.path, "up")
    assert result.returncode == 0, faults.describe(result)
    return project


def _allow_connections(faults: Any, project: Any, allow: bool, within: float = 30) -> None:
    """Make logins to the maintenance database fail (retryably) or work again, via template1."""
    deadline = time.monotonic() + within
    while True:
        try:
            conn = faults.connect(project, "template1")
            break
        except (psycopg2.OperationalError, AssertionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    try:
        with conn.cursor() as cur:
            cur.execute(f"ALTER DATABASE postgres ALLOW_CONNECTIONS {'true' if allow else 'false'}")
    finally:
        conn.close()


@pytest.fixture
def not_accepting(server: Any, faults: Any) -> Iterator[Any]:
    """The server runs but refuses logins to `postgres` for now, so `provision wait` keeps polling."""
    _allow_connections(faults, server, False)
    yield server
    _allow_connections(faults, server, True)


def test_docker_vanishes_during_wait(not_accepting: Any, faults: Any, docker_proxy: Any, poll: Any, tally: Any) -> None:
    project = not_accepting
    proxy = docker_proxy()
    proc = faults.popen(project.path, "wait", "--timeout", "30", env={"DOCKER_HOST": proxy.url})
    try:
        # The version probe, the first inspect, then the inspects of the polling loop.
        assert poll(lambda: proxy.requests >= 5, 20), f"wait made {proxy.requests} Docker requests"
        assert proc.poll() is None, "wait ended before the engine went away"
        proxy.close()
        gone = time.monotonic()
        out, err = proc.communicate(timeout=40)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    elapsed = time.monotonic() - gone
    shown = faults.describe((proc.returncode, out, err))
    tally.notes["docker_gone_during_wait"] = {"exit": proc.returncode, "seconds": round(elapsed, 2)}
    assert proc.returncode in (3, 5), shown
    if proc.returncode == 5:
        assert "Docker" in err, shown
    assert proxy.path in err, "the message does not name the engine's socket\n" + shown
    assert "Traceback" not in out + err, shown
    assert elapsed < FAIL_FAST_SECONDS, f"wait took {elapsed:.1f}s to notice the engine was gone"


# ---------------------------------------------------------------- server restart during wait


def _in_thread(action: Any, delay: float) -> threading.Thread:
    def run() -> None:
        time.sleep(delay)
        action()

    thread = threading.Thread(target=run, name="docker-action")
    thread.start()
    return thread


@pytest.mark.parametrize(
    "scenario",
    [
        "restart-while-polling",  # wait is polling (logins refused), then `docker restart`
        "wait-then-restart",  # wait starts, `docker restart` follows 0.05 s later
        "restart-then-wait",  # `docker restart` is under way when wait starts
        "stopped-then-started",  # the container is stopped when wait starts, and started 1 s later
    ],
)
def test_server_restart_during_wait(server: Any, faults: Any, docker_client: Any, tally: Any, scenario: str) -> None:
    """`wait` across a server restart ends ready (exit 0): a clean stop gets a grace period to come back."""
    project = server
    timeout = 25

    def restart() -> None:
        docker_client.api.restart(project.name, timeout=10)

    started = time.monotonic()
    if scenario == "restart-while-polling":
        _allow_connections(faults, project, False)
        proc = faults.popen(project.path, "wait", "--timeout", str(timeout))
        time.sleep(1.0)
        thread = _in_thread(restart, 0)
        thread.join()
        _allow_connections(faults, project, True)
    elif scenario == "wait-then-restart":
        proc = faults.popen(project.path, "wait", "--timeout", str(timeout))
        thread = _in_thread(restart, 0.05)
    elif scenario == "restart-then-wait":
        thread = _in_thread(restart, 0)
        time.sleep(0.1)
        proc = faults.popen(project.path, "wait", "--timeout", str(timeout))
    else:
        docker_client.api.stop(project.name, timeout=10)
        started = time.monotonic()
        proc = faults.popen(project.path, "wait", "--timeout", str(timeout))
        thread = _in_thread(lambda: docker_client.api.start(project.name), 1.0)
    out, err = proc.communicate(timeout=timeout + 30)
    elapsed = time.monotonic() - started
    thread.join()
    shown = faults.describe((proc.returncode, out, err))
    tally.restarts.append(
        {"scenario": scenario, "exit": proc.returncode, "seconds": round(elapsed, 2), "error": err.split("\n")[0]}
    )

    assert "Traceback" not in out + err, shown
    # A restarted container is the same server: the 3 s restart grace and the port followed on
    # every poll must carry wait through to ready, in every scenario.
    assert proc.returncode == 0, "wait across a restart must end ready (0)\n" + shown
    assert "ready on" in out, shown
    assert elapsed < timeout, shown

    # Whatever wait said, the server comes back and a new wait succeeds.
    _allow_connections(faults, project, True)
    again = faults.run(project.path, "wait", "--timeout", "30")
    assert again.returncode == 0, faults.describe(again)
