"""The pytest plugin on a shared server: pytest with two xdist workers on each of two machines at once, every
worker leasing its own copy for its session; a worker killed with kill -9 leaves its copy to the TTL."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

SAMPLE = """
import json, os, signal

import pytest


@pytest.mark.parametrize("i", range(4))
def test_a_private_copy_per_worker(provision_lease, i):
    me = os.environ["LEASE_NS"] + "-" + os.environ.get("PYTEST_XDIST_WORKER", "main")
    with open(os.environ["LEASE_LOG"], "a") as log:
        log.write(json.dumps({"who": me, "pid": os.getpid(), "copy": provision_lease.copy}) + "\\n")
    if os.environ.get("KILL_WORKER") == os.environ.get("PYTEST_XDIST_WORKER") and i == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    conn = provision_lease.connect()
    cur = conn.cursor()
    cur.execute("INSERT INTO items (name) VALUES (%s)", [me])
    conn.commit()
    cur.execute("SELECT DISTINCT name FROM items WHERE name NOT IN ('a', 'b')")
    assert cur.fetchall() == [(me,)], "nobody else writes into this copy"
    conn.close()
"""


def run_pytest(world: Any, tmp_path: Path, clients: list[Any], **env: str) -> list[subprocess.CompletedProcess[str]]:
    suite = tmp_path / "suite"
    suite.mkdir(exist_ok=True)
    (suite / "test_sample.py").write_text(SAMPLE)
    log = tmp_path / "log.jsonl"
    procs = []
    for client in clients:
        argv = [
            "ip", "netns", "exec", client.machine.ns, sys.executable, "-m", "pytest", "-q", "-n", "2", "--dist", "each",
            "-p", "no:cacheprovider", "-p", "no:randomly", "--rootdir", str(suite),
            "-o", f"provision_config={client.config}", str(suite),
        ]  # fmt: skip
        extra = {"LEASE_LOG": str(log), "LEASE_NS": client.machine.ns, **env}
        procs.append(
            subprocess.Popen(
                argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=client.env(**extra),
                cwd=suite,
            )
        )
    done = []
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, ""))
    return done


def records(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]


def test_xdist_workers_on_two_machines_each_lease_their_own_copy(lease_world: Any, tmp_path: Path) -> None:
    world = lease_world
    runs = run_pytest(world, tmp_path, world.clients[:2])
    for run in runs:
        assert run.returncode == 0, run.stdout
    seen = records(tmp_path)
    assert len(seen) == 16, "every test on each worker (--dist each): four tests, two workers, two machines"
    copies: dict[str, set[str]] = {}
    for record in seen:
        copies.setdefault(record["who"], set()).add(record["copy"])
    assert len(copies) == 4, "two workers on each of two machines"
    assert all(len(c) == 1 for c in copies.values()), "one copy per worker for its whole session"
    assert len(set().union(*copies.values())) == 4, "no two workers share a copy"
    assert world.registry("SELECT count(*) FROM leases") == [(0,)], "released at the end of each session"
    assert not {name for name in world.server.databases() if "__lease_" in name}


def test_a_killed_worker_leaves_its_copy_to_the_ttl(lease_world: Any, tmp_path: Path) -> None:
    world = lease_world
    (run,) = run_pytest(
        world, tmp_path, world.clients[2:3], KILL_WORKER="gw1", PYTEST_ADDOPTS="-o provision_lease_ttl=8s"
    )
    assert run.returncode != 0 and "crashed" in run.stdout, run.stdout
    killed = {r["pid"]: r["copy"] for r in records(tmp_path) if r["who"].endswith("-gw1")}
    left = world.registry("SELECT owner_pid, copy FROM leases")
    assert len(left) == 1 and left[0][0] in killed and left[0][1] == killed[left[0][0]], (left, killed)
    copy = left[0][1]
    assert copy in world.server.databases(), "the dead worker's copy stays until its TTL"
    name = world.registry("SELECT name FROM leases")[0][0]
    world.wait_until_expired(name)
    assert world.clients[3].json("lease", "gc")["expired"] == [copy]
    assert copy not in world.server.databases()
