"""The pytest plugin's new paths under faults (issue 12): a test killed mid-transaction, a crashed xdist
worker, and a warm pool whose pre-opened connections were cut by a server restart."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Project, list_databases, run_sample

pytestmark = [pytest.mark.faults, pytest.mark.integration]

CRASHES = Path(__file__).resolve().parents[1] / "plugin_fault_sample"


def _pool_copies(docker_client: Any, project: Project) -> list[str]:
    return [n for n in list_databases(docker_client, project.name + "-test") if "__pool_" in n]


def _prepared_transactions(docker_client: Any, project: Project) -> list[str]:
    code, out = docker_client.containers.get(project.name + "-test").exec_run(
        ["psql", "-U", "chatbi", "-d", "postgres", "-Atc", "SELECT gid FROM pg_prepared_xacts"]
    )
    assert code == 0, out
    return out.decode().split()


def test_a_test_killed_mid_transaction_leaves_nothing_behind(project: Project, docker_client: Any) -> None:
    killed = run_sample(project, "-k", "killed_mid_transaction", sample=CRASHES)
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    assert _pool_copies(docker_client, project), "the killed session's copies are still there, as expected"
    # The next session removes the dead session's copies, and sees none of its rows.
    after = run_sample(project, "-k", "sees_nothing_from_the_dead", sample=CRASHES)
    assert after.returncode == 0, after.stdout + after.stderr
    assert _pool_copies(docker_client, project) == []


def test_a_crashed_xdist_worker_leaves_nothing_behind(project: Project, docker_client: Any) -> None:
    crashed = run_sample(project, "-p", "xdist", "-n", "2", "-k", "worker_crashes", sample=CRASHES)
    assert crashed.returncode != 0 and "crashed" in crashed.stdout.lower(), crashed.stdout + crashed.stderr
    after = run_sample(project, "-p", "xdist", "-n", "2", "-k", "sees_nothing_from_the_dead", sample=CRASHES)
    assert after.returncode == 0, after.stdout + after.stderr
    assert _pool_copies(docker_client, project) == []


def test_pre_opened_connections_cut_by_a_restart_are_reopened(project: Project, docker_client: Any) -> None:
    """On a server whose data survives a restart (a volume), the pool's ready copies stay usable:
    acquire finds their connections cut and opens new ones."""
    import socket

    from provision import api
    from provision.testing import templates as test_templates
    from provision.testing.pool import DatabasePool, SessionLock

    with socket.socket() as probe:  # a fixed port, so the restarted server is where the pool looks
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cfg = project.write(port=port).config()
    templates = test_templates.ensure_templates(cfg, ["chatbi"])
    lock = SessionLock(templates.endpoint)
    pool = DatabasePool(templates.endpoint, "chatbi", templates.templates["chatbi"], lock.token, size=3).start()
    try:
        deadline = time.monotonic() + 30
        while pool._ready.qsize() < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pool._ready.qsize() == 3
        docker_client.api.restart(project.name, timeout=10)
        api.wait(cfg)
        lock.close()
        lock = SessionLock(api.endpoint(cfg))
        for _ in range(3):
            name, conn = pool.acquire()
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM app_users")
                assert cur.fetchone()[0] == 0
            pool.release(name, conn)
    finally:
        pool.close()
        lock.close()


def test_a_test_ending_with_a_prepared_transaction_breaks_no_later_session(
    project: Project, docker_client: Any
) -> None:
    """The prepared transaction outlives the test's connection and holds its copy against DROP
    DATABASE: the pool rolls it back and drops the copy at teardown."""
    prepared = run_sample(project, "-k", "ends_with_a_prepared_transaction", sample=CRASHES)
    assert prepared.returncode == 0, prepared.stdout + prepared.stderr
    assert _pool_copies(docker_client, project) == []
    assert _prepared_transactions(docker_client, project) == []
    after = run_sample(project, "-k", "sees_nothing_from_the_dead", sample=CRASHES)
    assert after.returncode == 0, after.stdout + after.stderr


def test_a_session_killed_holding_a_prepared_transaction_breaks_no_later_session(
    project: Project, docker_client: Any
) -> None:
    """Its copy is dead but held: the next session's clean-up rolls the transaction back, drops
    the copy, and the session runs."""
    killed = run_sample(project, "-k", "killed_holding_a_prepared_transaction", sample=CRASHES)
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    assert _prepared_transactions(docker_client, project) == ["provision-sample-killed"]
    after = run_sample(project, "-k", "sees_nothing_from_the_dead", sample=CRASHES)
    assert after.returncode == 0, after.stdout + after.stderr
    assert _pool_copies(docker_client, project) == []
    assert _prepared_transactions(docker_client, project) == []
