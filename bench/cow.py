"""Copies with and without copy-on-write, side by side on the same chatbi_demo (about 1 GB at --demo-scale 200).

Run as root (it loop-mounts an XFS with reflinks): `.venv/bin/python bench/cow.py [--demo-scale 200] [--rounds 7]`.

Two PostgreSQL 18 servers hold the same data: `cow` with its data directory on a loop-mounted
XFS made with `-m reflink=1` (provision detects it and sets file_copy_method = clone), `copy`
with it on the host's own filesystem (ext4 here: file_copy_method = copy). chatbi_demo is built
once, on `cow`; the stopped server's data directory is then copied to the other place, so both
start from the same files. Each round, alternating which server goes first, times:

- `per-test copy`: what the pytest plugin's pool does for a test: CREATE DATABASE ... TEMPLATE
  <the template> STRATEGY FILE_COPY, then a login to the copy; `drop` is its DROP DATABASE;
- `snapshot save` and `snapshot restore` of chatbi_demo, in process (api.*, connect included)
  and as the `provision` command (a new process: interpreter, imports, engine, login);
  `restore` is what a user waits for with the default background tidy-up: with copy-on-write
  it clones the snapshot; without, it renames the standby cloned in advance. `restore, no
  standby` is the restore without that standby (a full copy when nothing is cloned);
- `fresh (clones the template)`: `fresh` when the template exists but its spare does not (taken
  by the previous run, and the tidy-up has not cloned the next yet), so the build is a clone;
- `floor: cp --reflink` of the template's directory inside the container, and `floor: login`:
  what a clone cannot go below on this machine;
- `per-test copy, fsync off`: the per-test copy again with the pytest plugin's test server's
  settings (fsync, full_page_writes and synchronous_commit off, set and reset each round).

It prints medians (min-max) per server. The servers and the loop file are removed at the end
unless --keep.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from psycopg2 import sql  # noqa: E402

from provision import api  # noqa: E402
from provision.builds.pipeline import plan_database, spare_name, template_name  # noqa: E402
from provision.config import Config, load_config  # noqa: E402
from provision.endpoint import Endpoint  # noqa: E402
from provision.postgres import dbops  # noqa: E402
from provision.postgres.dbops import Connection  # noqa: E402

IMAGE = "postgres:18"
WORK = Path("/var/tmp/provision-bench-cow")
KINDS = ("cow", "copy")
FAST_SETTINGS = (("fsync", "off"), ("full_page_writes", "off"), ("synchronous_commit", "off"))


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def config_for(kind: str, data_dir: Path, scale: int) -> tuple[Config, Path]:
    folder = WORK / f"config-{kind}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "provision.yaml"
    data = {
        "container": f"provision-bench-{kind}",
        "volume": None,
        "data_dir": str(data_dir),
        "image": IMAGE,
        "port": 0,
        "demo_scale": scale,
        "timeout": 120,
        "databases": {"chatbi_demo": {"sql": "builtin:chatbi_demo/demo_data.sql", "demo": True}},
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_config(path, env={}), path


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def cli_seconds(config: Path, *args: str) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISION_")}
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "provision", "-c", str(config), *args], check=True, capture_output=True, env=env
    )
    return time.perf_counter() - started


def one_round(cfg: Config, config: Path, samples: dict[str, list[float]], serial: int) -> None:
    ep = api.endpoint(cfg)
    with dbops.connection(ep, application_name="bench") as admin:
        plan = plan_database(cfg, cfg.database("chatbi_demo"))
        digest = plan.content_hash(admin.server_version)
        template, spare = template_name("chatbi_demo", digest), spare_name("chatbi_demo", digest)
        copy = f"bench_copy_{serial}"

        def per_test_copy(admin: Connection) -> None:
            dbops.copy_database(admin, copy, template, strategy="FILE_COPY")
            dbops.connect(ep, copy, application_name="bench").close()

        samples["per-test copy"].append(timed(lambda: per_test_copy(admin)))
        samples["drop"].append(timed(lambda: dbops.drop_database(admin, copy)))

        # The floor: the template's files reflinked by cp, timed inside the container.
        oid = dbops.execute(admin, "SELECT oid FROM pg_database WHERE datname = %s", [template])[0][0]
        script = (
            'd="$(psql -U chatbi -d postgres -Atc "SHOW data_directory")"; rm -rf "$d/bench-floor"; '
            's=$(date +%s%N); cp -r --reflink=auto "$d/base/$1" "$d/bench-floor"; e=$(date +%s%N); '
            'rm -rf "$d/bench-floor"; echo $(( (e - s) / 1000 ))'
        )
        out = sh("docker", "exec", "-u", "postgres", cfg.container, "sh", "-c", script, "floor", str(oid))
        samples["floor: cp --reflink=auto"].append(int(out.split()[-1]) / 1e6)
        samples["floor: login"].append(
            timed(lambda: dbops.connect(ep, "chatbi_demo", application_name="bench").close())
        )

    samples["snapshot save (api)"].append(
        timed(lambda: api.snapshot_save(cfg, "b", databases=["chatbi_demo"], force=True))
    )
    api.wait_for_housekeeping(cfg)
    samples["snapshot restore (api)"].append(
        timed(lambda: api.snapshot_restore(cfg, "b", databases=["chatbi_demo"], yes=True))
    )
    api.wait_for_housekeeping(cfg)
    samples["snapshot save (command)"].append(cli_seconds(config, "snapshot", "save", "b", "--force"))
    api.wait_for_housekeeping(cfg)
    samples["snapshot restore (command)"].append(cli_seconds(config, "snapshot", "restore", "b", "--yes"))
    api.wait_for_housekeeping(cfg)
    with dbops.connection(ep, application_name="bench") as admin:
        dbops.drop_database(admin, dbops.derived_name("chatbi_demo", "standby", "b"))
    samples["snapshot restore, no standby (api)"].append(
        timed(lambda: api.snapshot_restore(cfg, "b", databases=["chatbi_demo"], yes=True))
    )
    api.wait_for_housekeeping(cfg)

    with dbops.connection(ep, application_name="bench") as admin:
        dbops.drop_database(admin, spare)
    samples["fresh (clones the template)"].append(timed(lambda: api.fresh(cfg, yes=True)))
    api.wait_for_housekeeping(cfg)

    # The plugin's test server runs without fsync and full-page writes (TEST_SERVER_SETTINGS):
    # the checkpoints that FILE_COPY begins and ends with then cost next to nothing.
    test_settings(ep, True)
    try:
        with dbops.connection(ep, application_name="bench") as admin:
            samples["per-test copy, fsync off (test server)"].append(timed(lambda: per_test_copy(admin)))
            samples["drop, fsync off (test server)"].append(timed(lambda: dbops.drop_database(admin, copy)))
    finally:
        test_settings(ep, False)


def test_settings(ep: Endpoint, on: bool) -> None:
    with dbops.connection(ep, application_name="bench") as admin:
        for name, value in FAST_SETTINGS:
            if on:
                query = sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value))
            else:
                query = sql.SQL("ALTER SYSTEM RESET {}").format(sql.Identifier(name))
            dbops.execute(admin, query)
        dbops.execute(admin, "SELECT pg_reload_conf()")
    time.sleep(0.5)  # every process, the checkpointer included, rereads the configuration


def mount_reflink_xfs(image: Path, mount: Path, size: str) -> None:
    mount.mkdir(parents=True, exist_ok=True)
    sh("truncate", "-s", size, str(image))
    sh("mkfs.xfs", "-q", "-f", "-m", "reflink=1", str(image))
    sh("mount", "-o", "loop", str(image), str(mount))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-scale", type=int, default=200, help="about 5 MB per unit: 200 is about 1 GB")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="leave the servers and the loop mount in place")
    args = parser.parse_args()
    if os.geteuid() != 0 or not shutil.which("mkfs.xfs"):
        sys.exit("bench/cow.py needs root and mkfs.xfs (apt-get install xfsprogs) to make a reflink XFS")

    WORK.mkdir(parents=True, exist_ok=True)
    image, mount = WORK / "xfs.img", WORK / "xfs"
    dirs = {"cow": mount / "pgdata", "copy": WORK / "ext4-pgdata"}
    configs = {kind: config_for(kind, dirs[kind], args.demo_scale) for kind in KINDS}
    try:
        mount_reflink_xfs(image, mount, "12G")
        cfg, _ = configs["cow"]
        build = timed(lambda: api.fresh(cfg, yes=True))
        api.wait_for_housekeeping(cfg)
        with dbops.connection(api.endpoint(cfg)) as admin:
            size = dbops.database_size(admin, "chatbi_demo")
        print(f"built chatbi_demo at scale {args.demo_scale}: {size / 1e9:.2f} GB in {build:.0f} s", flush=True)
        sh("docker", "stop", cfg.container)
        started = time.perf_counter()
        # A plain copy (no reflinks across filesystems): the other server starts from the same files.
        sh("cp", "-a", str(dirs["cow"]), str(dirs["copy"]))
        print(f"copied the data directory to the host's filesystem in {time.perf_counter() - started:.0f} s")
        sh("docker", "start", cfg.container)
        for kind in KINDS:
            api.up(configs[kind][0])
            print(f"{kind}: {api.status(configs[kind][0]).copy_on_write}", flush=True)

        samples: dict[str, dict[str, list[float]]] = {}
        for kind in KINDS:
            samples[kind] = defaultdict(list)
        for serial in range(args.rounds):
            order = KINDS if serial % 2 == 0 else KINDS[::-1]
            for kind in order:
                one_round(*configs[kind], samples[kind], serial)
            print(f"round {serial + 1}/{args.rounds} done", flush=True)

        print(f"\nmedians (min-max) of {args.rounds} rounds, chatbi_demo {size / 1e9:.2f} GB, PostgreSQL 18")
        print(f"{'':<38}{'copy-on-write (XFS reflink)':>30}{'copy (ext4)':>30}")
        for row in samples["cow"]:
            cells = []
            for kind in KINDS:
                values = samples[kind][row]
                cells.append(
                    f"{statistics.median(values) * 1000:8.0f} ms ({min(values) * 1000:.0f}-{max(values) * 1000:.0f})"
                )
            print(f"{row:<38}{cells[0]:>30}{cells[1]:>30}")
    finally:
        if not args.keep:
            for kind in KINDS:
                subprocess.run(["docker", "rm", "-f", f"provision-bench-{kind}"], capture_output=True, check=False)
            subprocess.run(["umount", str(mount)], capture_output=True, check=False)
            image.unlink(missing_ok=True)
            shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
