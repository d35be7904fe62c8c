"""Benchmark: a lease on a warm shared server as a client sees it, and 16 concurrent leases from 4 machines.

The shared server is a postgres:17 container; the client machines are network namespaces made here
(veth pairs in a private 10.203.X.0/24), as in tests/leases. Everything is removed at the end.
Needs root and iproute2. Run: .venv/bin/python bench/lease.py [--iterations 15] [--rounds 5]

Measured:
- library: `api.lease()` in a running process (what the pytest plugin would pay), from config to
  URL, including both logins; the template is built and a spare copy is ready ("warm").
- cli: `ip netns exec NS python -m provision lease app` from another machine, the whole process.
- 16 at once: 4 processes on each of 4 machines started together; the wall time until all 16 have
  their URL, and each lease's own time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import yaml

from provision import api
from provision.builds import leases
from provision.config import load_config
from provision.postgres import dbops

IMAGE = os.environ.get("PROVISION_TEST_IMAGE", "postgres:17")
MACHINES = 4
SUPER = "bench-" + secrets.token_hex(4)
CI = "ci-" + secrets.token_hex(6)
SQL = "CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL);\nINSERT INTO items (name) VALUES ('a'), ('b');\n"


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@contextlib.contextmanager
def namespaces(tag: str) -> Iterator[list[tuple[str, str]]]:
    """(namespace, server address seen from it) per machine."""
    used = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True, check=True).stdout
    base = next(o for o in range(120, 240, MACHINES) if all(f"10.203.{o + i}." not in used for i in range(MACHINES)))
    made: list[tuple[str, str]] = []
    try:
        for i in range(MACHINES):
            ns, host_end, ns_end = f"pvb{tag}{i}", f"pvbh{tag}{i}", f"pvbn{tag}{i}"
            ip("netns", "add", ns)
            made.append((ns, f"10.203.{base + i}.1"))
            ip("link", "add", host_end, "type", "veth", "peer", "name", ns_end)
            ip("link", "set", ns_end, "netns", ns)
            ip("addr", "add", f"10.203.{base + i}.1/24", "dev", host_end)
            ip("link", "set", host_end, "up")
            ip("-n", ns, "addr", "add", f"10.203.{base + i}.2/24", "dev", ns_end)
            ip("-n", ns, "link", "set", ns_end, "up")
            ip("-n", ns, "link", "set", "lo", "up")
        yield made
    finally:
        for ns, _ in made:
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)


@contextlib.contextmanager
def shared_server(addresses: list[str]) -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    name = f"provision-bench-lease-{secrets.token_hex(3)}"
    publish = [arg for a in ["127.0.0.1", *addresses] for arg in ("-p", f"{a}:{port}:5432")]
    subprocess.run(
        ["docker", "run", "-d", "--rm", "--name", name, "-e", f"POSTGRES_PASSWORD={SUPER}", *publish, IMAGE],
        check=True,
        capture_output=True,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", password=SUPER)
                break
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        conn.autocommit = True
        conn.cursor().execute(f"CREATE ROLE ci LOGIN CREATEDB PASSWORD '{CI}'")
        conn.close()
        yield port
    finally:
        subprocess.run(["docker", "rm", "-f", name], check=False, capture_output=True)


def write_config(directory: Path, host: str, port: int, sql: Path) -> Path:
    path = directory / f"{host}.yaml"
    data = {"target": "server", "host": host, "port": port, "user": "ci", "databases": {"app": {"sql": str(sql)}}}
    path.write_text(yaml.safe_dump(data))
    return path


def wait_for_spare(cfg: object, content_hash: str) -> None:
    with dbops.connection(api.endpoint(cfg)) as conn:  # type: ignore[arg-type]
        while not leases.spares_of(conn, "app", content_hash):
            time.sleep(0.02)


def summary(label: str, values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    return f"{label}: median {statistics.median(ms):.1f} ms (min {ms[0]:.1f}, max {ms[-1]:.1f}, n={len(ms)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISION_")}
    env["PROVISION_PASSWORD"] = CI
    os.environ["PROVISION_PASSWORD"] = CI
    tag = secrets.token_hex(2)
    with tempfile.TemporaryDirectory() as tmp, namespaces(tag) as machines:
        sql = Path(tmp) / "app.sql"
        sql.write_text(SQL)
        with shared_server([addr for _, addr in machines]) as port:
            local = load_config(write_config(Path(tmp), "127.0.0.1", port, sql))
            first = api.lease(local, "app", ttl=600)
            print(f"first lease (template built): {first.seconds * 1000:.0f} ms")

            library = []
            for _ in range(args.iterations):
                wait_for_spare(local, first.lease.content_hash)
                result = api.lease(local, "app", ttl=600)
                assert result.from_spare
                library.append(result.seconds)
            print(summary("warm lease, library (api.lease, both logins included)", library))

            configs = [(ns, write_config(Path(tmp), addr, port, sql)) for ns, addr in machines]

            def argv(ns: str, config: Path) -> list[str]:
                return ["ip", "netns", "exec", ns, sys.executable, "-m", "provision", "-c", str(config), "lease", "app"]

            cli = []
            for i in range(args.iterations):
                ns, config = configs[i % MACHINES]
                wait_for_spare(local, first.lease.content_hash)
                started = time.perf_counter()
                subprocess.run([*argv(ns, config), "-q", "--ttl", "10m"], check=True, env=env, capture_output=True)
                cli.append(time.perf_counter() - started)
            print(summary("warm lease, cli from another machine (whole process)", cli))

            walls, each, spared = [], [], 0
            for _ in range(args.rounds):
                wait_for_spare(local, first.lease.content_hash)
                started = time.perf_counter()
                out = subprocess.PIPE
                procs = [
                    subprocess.Popen([*argv(ns, c), "--json", "--ttl", "10m"], env=env, stdout=out, stderr=out)
                    for ns, c in configs
                    for _ in range(4)
                ]
                done = [p.communicate() for p in procs]
                walls.append(time.perf_counter() - started)
                assert all(p.returncode == 0 for p in procs), [err for _, err in done]
                outs = [o for o, _ in done]
                results = [json.loads(out) for out in outs]
                each += [r["seconds"] for r in results]
                spared += sum(r["from_spare"] for r in results)
                assert len({r["lease"]["copy"] for r in results}) == 16
            print(summary("16 concurrent leases from 4 machines, wall time until all 16 have a URL", walls))
            print(summary("16 concurrent leases, each lease's own time (in-process, from its config)", each))
            print(f"  of {len(each)} leases, {spared} took a spare made ahead; the rest cloned the template")
            listed = api.lease_list(local)
            print(f"at the end: {len(listed.leases)} leases, {listed.total_bytes / 1e6:.0f} MB kept by provision")


if __name__ == "__main__":
    main()
