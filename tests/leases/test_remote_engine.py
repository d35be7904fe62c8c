"""A remote Docker engine (DOCKER_HOST=tcp://): provision, run on another machine, reaches the published port on
the engine's host, derived from DOCKER_HOST, not on 127.0.0.1.

The "remote" engine is this host's own, reached over TCP through a socat listener the test starts on
the host end of a client namespace's veth. From inside the namespace, 127.0.0.1 is the namespace's
own loopback, where nothing listens: only the address taken from DOCKER_HOST works.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import yaml

from tests.conftest import IMAGE, NAME_PREFIX

pytestmark = pytest.mark.integration

PASSWORD = "remote-" + secrets.token_hex(6)


@pytest.fixture
def engine_over_tcp(machines: list[Any]) -> Iterator[tuple[Any, str]]:
    """(machine, DOCKER_HOST): the engine's socket, forwarded by socat to the machine's server address."""
    if shutil.which("socat") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("socat is missing (scripts/dev installs it)")
        pytest.skip("needs socat")
    machine = machines[0]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    proc = subprocess.Popen(
        ["socat", f"TCP-LISTEN:{port},bind={machine.server_addr},fork,reuseaddr", "UNIX-CONNECT:/var/run/docker.sock"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection((machine.server_addr, port), timeout=1):
                break
            assert proc.poll() is None and time.monotonic() < deadline, "socat did not start listening"
            time.sleep(0.05)
        yield machine, f"tcp://{machine.server_addr}:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def run_in(machine: Any, config: Path, docker_host: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROVISION_", "DOCKER_"))}
    env.update(DOCKER_HOST=docker_host, PROVISION_PASSWORD=PASSWORD)
    return subprocess.run(
        ["ip", "netns", "exec", machine.ns, sys.executable, "-m", "provision", "-c", str(config), *args],
        capture_output=True, text=True, env=env, cwd=config.parent, timeout=300,
    )  # fmt: skip


def test_a_tcp_engine_is_reached_on_its_own_host(
    engine_over_tcp: tuple[Any, str], tmp_path: Path, docker_client: Any
) -> None:
    machine, docker_host = engine_over_tcp
    name = NAME_PREFIX + "remote-" + secrets.token_hex(3)
    (tmp_path / "app.sql").write_text("CREATE TABLE items (id int PRIMARY KEY);\nINSERT INTO items VALUES (1), (2);\n")
    data = {
        "container": name,
        "volume": None,
        "tmpfs": True,  # no bind mount, no named volume: nothing on the engine's disk to share
        "image": IMAGE,
        "port": 0,
        "bind": "0.0.0.0",  # on the engine's host; the namespace reaches it only through its veth
        "user": "app",
        "cleanup": "sync",
        "databases": {"app": {"sql": "app.sql", "tables": ["items"]}},
    }
    config = tmp_path / "provision.yaml"
    config.write_text(yaml.safe_dump(data))
    try:
        built = run_in(machine, config, docker_host, "fresh", "--yes", "--json")
        assert built.returncode == 0, built.stderr
        assert json.loads(built.stdout)["databases"][0]["tables"] == 1

        status = run_in(machine, config, docker_host, "status", "--json")
        assert status.returncode == 0, status.stderr
        state = json.loads(status.stdout)
        assert state["host"] == machine.server_addr, "the address comes from DOCKER_HOST, not 127.0.0.1"
        assert state["reachable"] is True

        # The same server, from the engine's own host: the data is there.
        conn = psycopg2.connect(host="127.0.0.1", port=state["port"], user="app", password=PASSWORD, dbname="app")
        try:
            cur = conn.cursor()
            cur.execute("SELECT count(*) FROM items")
            assert cur.fetchone() == (2,)
        finally:
            conn.close()
        mounts = docker_client.containers.get(name).attrs["Mounts"]
        assert mounts == [], "nothing is mounted from the engine's host"

        # connect_host overrides the derived address: here, one where nothing listens.
        data["connect_host"] = "127.0.0.1"
        config.write_text(yaml.safe_dump(data))
        pointed = run_in(machine, config, docker_host, "url")
        assert pointed.returncode == 0 and "@127.0.0.1:" in pointed.stdout

        # Published on the remote host's loopback: unreachable from here, and said so before anything starts.
        data.pop("connect_host")
        data["bind"] = "127.0.0.1"
        data["container"] = name + "-lo"
        config.write_text(yaml.safe_dump(data))
        refused = run_in(machine, config, docker_host, "up")
        assert refused.returncode == 2, refused.stderr
        assert f"runs on {machine.server_addr}" in refused.stderr and "bind: 0.0.0.0" in refused.stderr
        assert not docker_client.containers.list(all=True, filters={"name": name + "-lo"}), "nothing was started"
    finally:
        for leftover in (name, name + "-lo"):
            with contextlib.suppress(Exception):
                docker_client.containers.get(leftover).remove(force=True, v=True)
