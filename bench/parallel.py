"""Benchmark: a full build of chatbi + chatbi_demo with both databases in parallel vs one after the other.

Decides `fresh_databases(parallel=...)`. Uses its own container (provision-bench-parallel, removed at
the end). Run: .venv/bin/python bench/parallel.py [--iterations 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

from provision import api
from provision.builds.pipeline import fresh_databases, plan_database
from provision.config import load_config
from provision.events import ignore
from provision.postgres import dbops
from provision.targets import make_target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=7)
    args = parser.parse_args()

    cfg = load_config(None, env={}, overrides={"container": "provision-bench-parallel", "port": 0})
    server, _ = make_target(cfg).ready(create=True, recreate=False, timeout=cfg.timeout, on_event=ignore)
    plans = [plan_database(cfg, db) for db in cfg.databases]
    timings: dict[bool, list[float]] = {True: [], False: []}
    try:
        for i in range(args.iterations):
            for parallel in (True, False) if i % 2 == 0 else (False, True):
                lock = dbops.connect(server.endpoint)
                try:
                    dbops.acquire_lock(lock, wait=True)
                    started = time.perf_counter()
                    fresh_databases(server, lock, plans, use_cache=False, parallel=parallel)
                    timings[parallel].append(time.perf_counter() - started)
                    for name in dbops.list_databases(lock):
                        if "__old_" in name:
                            dbops.drop_database(lock, name)
                finally:
                    lock.close()
    finally:
        api.down(cfg, volumes=True)
    ratios = [p / s for p, s in zip(timings[True], timings[False], strict=True)]
    for parallel in (True, False):
        values = timings[parallel]
        label = "parallel" if parallel else "serial  "
        low, high = min(values), max(values)
        print(f"full build, {label}: median {statistics.median(values):.3f}s (min {low:.3f}, max {high:.3f})")
    print(f"paired ratio parallel/serial: median {statistics.median(ratios):.3f}x")


if __name__ == "__main__":
    main()
