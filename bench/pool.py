"""Benchmark: per-test acquire/release from the pytest plugin's warm pool vs CREATE DATABASE ... TEMPLATE / DROP.

Uses the plugin's own test server (container `chatbi-postgres-test`, fsync off) for both sides, so
the only difference is the pool. Run: .venv/bin/python bench/pool.py [--tests 50]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import psycopg2

from provision import api, dbops
from provision.config import load_config
from provision.pool import DatabasePool, SessionLock


def _test_body(ep: dbops.Endpoint, name: str) -> None:
    """What a typical test does with its copy: connect, read, write, commit."""
    conn = psycopg2.connect(host=ep.host, port=ep.port, user=ep.user, password=ep.password, dbname=name)
    cur = conn.cursor()
    cur.execute("SELECT count(*) FROM app_users")
    cur.execute("INSERT INTO app_users (email) VALUES ('bench@example.com')")
    conn.commit()
    conn.close()


def _ms(values: list[float]) -> str:
    low, high = min(values) * 1000, max(values) * 1000
    return f"median {statistics.median(values) * 1000:7.1f} ms  (min {low:.1f}, max {high:.1f})"


def run(tests: int, pool_size: int, report: Callable[[str], None] = print) -> dict[str, float]:
    cfg = api.config_for_tests(load_config(None, env={}))
    report(f"test server: container {cfg.container}; preparing the chatbi template ...")
    ts = api.ensure_templates(cfg, ["chatbi"])
    ep, tpl = ts.endpoint, ts.templates["chatbi"]
    lock = SessionLock(ep)
    pool = DatabasePool(ep, "chatbi", tpl, lock.token, size=pool_size).start()
    deadline = time.monotonic() + 60
    while pool._ready.qsize() < pool_size and time.monotonic() < deadline:
        time.sleep(0.05)

    acquire: list[float] = []
    release: list[float] = []
    base_acquire: list[float] = []
    base_release: list[float] = []
    admin = dbops.connect(ep, application_name="bench baseline")

    def pool_phase(count: int) -> None:
        # Tests back to back, as in a real suite: the pool only refills while tests run.
        for _ in range(count):
            t0 = time.perf_counter()
            name = pool.acquire()
            t1 = time.perf_counter()
            _test_body(ep, name)
            t2 = time.perf_counter()
            pool.release(name)
            t3 = time.perf_counter()
            acquire.append(t1 - t0)
            release.append(t3 - t2)

    def plain_phase(count: int) -> None:
        # The baseline: a plain clone and drop per test (pytest-postgresql's way).
        for i in range(count):
            plain = f"bench_plain_{i}"
            t0 = time.perf_counter()
            dbops.create_database(admin, plain, template=tpl)
            t1 = time.perf_counter()
            _test_body(ep, plain)
            t2 = time.perf_counter()
            dbops.drop_database(admin, plain)
            t3 = time.perf_counter()
            base_acquire.append(t1 - t0)
            base_release.append(t3 - t2)

    try:
        # A B B A, so drift in machine load hits both sides alike.
        half = tests // 2
        pool_phase(half)
        plain_phase(half)
        plain_phase(tests - half)
        pool_phase(tests - half)
    finally:
        admin.close()
        pool.close()
        lock.close()

    # Phases, not pairs: interleaving single tests would let the pool refill during the baseline.
    ratios_acq = [statistics.median(acquire) / statistics.median(base_acquire)]
    ratios_rel = [statistics.median(release) / statistics.median(base_release)]
    report(f"\nper-test database, {tests} tests, pool of {pool_size} (target: acquire median <= 15 ms)")
    report(f"  pool acquire      {_ms(acquire)}")
    report(f"  pool release      {_ms(release)}")
    report(f"  plain CREATE ... TEMPLATE {_ms(base_acquire)}")
    report(f"  plain DROP        {_ms(base_release)}")
    report(f"  ratio of medians, acquire/create: {statistics.median(ratios_acq):.3f}x")
    report(f"  ratio of medians, release/drop:   {statistics.median(ratios_rel):.3f}x")
    return {
        "pool_acquire_ms": statistics.median(acquire) * 1000,
        "pool_release_ms": statistics.median(release) * 1000,
        "plain_create_ms": statistics.median(base_acquire) * 1000,
        "plain_drop_ms": statistics.median(base_release) * 1000,
        "acquire_ratio": statistics.median(ratios_acq),
        "release_ratio": statistics.median(ratios_rel),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=50)
    parser.add_argument("--pool-size", type=int, default=4)
    args = parser.parse_args()
    run(args.tests, args.pool_size)


if __name__ == "__main__":
    main()
