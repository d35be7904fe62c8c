"""Copy-on-write on a reflink XFS made by the test: fresh, snapshots and the plugin's pool clone; kill -9 mid-clone."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from tests.conftest import (
    RECYCLE_SAMPLE,
    Project,
    connect,
    databases,
    fresh,
    list_databases,
    query,
    require_image,
    run_cli,
    run_sample,
)

pytestmark = pytest.mark.integration

IMAGE = "postgres:18"  # file_copy_method = clone is new in 18


def unavailable(reason: str) -> None:
    """A visible skip here; under CI=true a failure, since scripts/dev test installs what this needs."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: the copy-on-write tests must run)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def reflink_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A 3 GB sparse file formatted as XFS with reflinks, loop-mounted for this module."""
    if os.geteuid() != 0:
        unavailable("mounting a loop filesystem needs root")
    if not shutil.which("mkfs.xfs") or not shutil.which("filefrag"):
        unavailable("mkfs.xfs or filefrag is missing: apt-get install xfsprogs e2fsprogs (scripts/dev test does)")
    base = tmp_path_factory.mktemp("reflink")
    image, mount = base / "xfs.img", base / "mnt"
    mount.mkdir()
    subprocess.run(["truncate", "-s", "3G", str(image)], check=True)
    subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(image)], check=True)
    mounted = subprocess.run(["mount", "-o", "loop", str(image), str(mount)], capture_output=True, text=True)
    if mounted.returncode != 0:
        image.unlink()
        unavailable(f"cannot loop-mount an XFS image here: {mounted.stderr.strip()}")
    yield mount
    # The containers using it are removed by each test's project fixture first.
    subprocess.run(["umount", str(mount)], check=False)
    if subprocess.run(["mountpoint", "-q", str(mount)], check=False).returncode == 0:
        subprocess.run(["umount", "-l", str(mount)], check=False)
    image.unlink()


@pytest.fixture
def cow_project(project: Project, docker_client: Any, reflink_dir: Path) -> Project:
    require_image(docker_client, IMAGE, f"compose/build-offline-image.sh --tag {IMAGE} (scripts/dev test does)")
    return project.write(image=IMAGE, volume=None, data_dir=str(reflink_dir / project.name))


def cli(project: Project, *args: str) -> Any:
    return run_cli("-c", str(project.path), *args, cwd=project.dir)


def shares_blocks(data_dir: Path, conn: Any, table: str = "orders") -> bool:
    """Whether the table's file in `conn`'s database shares its blocks with another file (a reflink)."""
    cur = conn.cursor()
    cur.execute("SELECT pg_relation_filepath(%s)", [table])
    path = data_dir / cur.fetchone()[0]
    out = subprocess.run(["filefrag", "-v", str(path)], capture_output=True, text=True, check=True).stdout
    return "shared" in out


def test_fresh_and_snapshots_clone_and_status_says_so(cow_project: Project) -> None:
    project, data_dir = cow_project, Path(cow_project.data["data_dir"])
    built = fresh(project, "--yes")
    assert built.returncode == 0, built.stderr
    assert "copy-on-write on" in built.stdout + built.stderr

    status = json.loads(cli(project, "status", "--json").stdout)
    assert status["copy_on_write"].startswith("on: file_copy_method = clone"), status["copy_on_write"]
    doctor = json.loads(cli(project, "doctor", "--json").stdout)
    check = {c["name"]: c for c in doctor["checks"]}["copy-on-write"]
    assert check["status"] == "ok" and "on xfs, with reflinks" in check["detail"], check

    # The spare the tidy-up cloned from the template shares the template's blocks.
    spare = next(n for n in databases(project) if n.startswith("chatbi_demo__spare_"))
    conn = connect(project, spare)
    try:
        assert shares_blocks(data_dir, conn)
    finally:
        conn.close()

    # A warm fresh clones too (the spare is taken, the next one cloned).
    assert fresh(project, "--yes").returncode == 0

    saved = cli(project, "snapshot", "save", "m", "--json")
    assert saved.returncode == 0, saved.stderr
    listed = json.loads(cli(project, "snapshot", "list", "--json").stdout)
    assert listed["snapshots"] and not any(s["standby"] for s in listed["snapshots"]), listed
    assert not [n for n in databases(project) if "__standby_" in n], "copy-on-write makes no standby"

    query(project, "chatbi_demo", "DELETE FROM order_items")
    restored = cli(project, "snapshot", "restore", "m", "--yes", "--json")
    assert restored.returncode == 0, restored.stderr
    how = {d["database"]: d["how"] for d in json.loads(restored.stdout)["databases"]}
    assert how == {"chatbi": "cloned", "chatbi_demo": "cloned"}
    assert query(project, "chatbi_demo", "SELECT count(*) FROM order_items")[0][0] > 0
    conn = connect(project, "chatbi_demo")
    try:
        assert shares_blocks(data_dir, conn), "the restored database is a clone of the snapshot"
    finally:
        conn.close()
    assert not [n for n in databases(project) if "__standby_" in n or "__stage_" in n or "__old_" in n]


def test_the_plugin_pool_clones_beside_the_data_dir(cow_project: Project, docker_client: Any) -> None:
    project, data_dir = cow_project, Path(cow_project.data["data_dir"])
    # Recycling works on clones as on copies: FILE_COPY still ends with a checkpoint.
    recycled = run_sample(project, sample=RECYCLE_SAMPLE)
    assert recycled.returncode == 0, recycled.stdout + recycled.stderr
    assert "provision: 6 copies: 3 reused, 2 reset, 1 dropped" in recycled.stdout, recycled.stdout

    result = run_sample(project, "--provision-keep", "-k", "test_factory_gives_demo_data")
    assert result.returncode == 0, result.stdout + result.stderr
    container = project.name + "-test"
    mounts = docker_client.containers.get(container).attrs["Mounts"]
    test_dir = Path(f"{data_dir}-test")
    assert [m["Source"] for m in mounts if m["Destination"] == "/var/lib/postgresql/data"] == [str(test_dir)]
    kept = [n for n in list_databases(docker_client, container) if n.startswith("chatbi_demo__pool_")]
    assert kept, result.stdout
    port = docker_client.containers.get(container).attrs["NetworkSettings"]["Ports"]["5432/tcp"][0]["HostPort"]
    conn = psycopg2.connect(host="127.0.0.1", port=int(port), user="chatbi", password="chatbi", dbname=kept[0])
    try:
        cur = conn.cursor()
        cur.execute("SHOW file_copy_method")
        assert cur.fetchone() == ("clone",)
        assert shares_blocks(test_dir, conn), "the pool copy is a clone of its template"
    finally:
        conn.close()


def backend_running(container_id: str, words: bytes) -> int | None:
    """The host PID of a server process of this container (and no other) whose title has `words`."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                title = f.read()
            if not title.startswith(b"postgres: ") or words not in title:
                continue
            with open(f"/proc/{entry}/cgroup", "rb") as f:
                if container_id.encode() in f.read():
                    return int(entry)
        except OSError:
            continue  # gone meanwhile
    return None


@pytest.mark.parametrize("victim", ["provision", "server backend"])
def test_kill_9_during_a_clone_leaves_nothing_half_built(cow_project: Project, docker_client: Any, victim: str) -> None:
    """`snapshot restore` with copy-on-write clones the snapshot into a staging copy, then swaps it
    in. While the server runs that CREATE DATABASE, SIGKILL goes to provision, or to the server
    process doing the clone (the server then restarts, as after a crash). Afterwards the database
    in place is whole (the old one, or the restored one), and the next run finishes."""
    demo = {"chatbi_demo": {"sql": "builtin:chatbi_demo/demo_data.sql", "demo": True}}
    project = cow_project.write(demo_scale=20, databases=demo)
    assert fresh(project, "--yes").returncode == 0
    assert cli(project, "snapshot", "save", "s").returncode == 0
    orders = query(project, "chatbi_demo", "SELECT count(*) FROM orders")[0][0]
    container_id = docker_client.containers.get(project.name).id
    killed = False
    for _attempt in range(10):
        query(project, "chatbi_demo", "INSERT INTO categories (name) VALUES ('marker') ON CONFLICT DO NOTHING")
        conn = connect(project, "postgres")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISION_")}
        proc = subprocess.Popen(
            [sys.executable, "-m", "provision", "-c", str(project.path), "snapshot", "restore", "s", "--yes"],
            cwd=project.dir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            cur = conn.cursor()
            # Polled from one open connection, as fast as it answers.
            while proc.poll() is None and not killed:
                cur.execute("SELECT count(*) FROM pg_stat_activity WHERE query ILIKE 'CREATE DATABASE%TEMPLATE%'")
                if cur.fetchone()[0]:
                    if victim == "provision":
                        proc.send_signal(signal.SIGKILL)
                        killed = True
                    else:
                        pid = backend_running(container_id, b"CREATE DATABASE")
                        if pid is not None:
                            os.kill(pid, signal.SIGKILL)
                            killed = True
                time.sleep(0.002)
            proc.wait(timeout=120)
        finally:
            conn.close()
        if killed:
            break
    assert killed, f"never caught the {victim} during a clone in 10 tries"
    if victim == "server backend":
        assert proc.returncode != 0, "provision reported success although its clone was killed"
        log = cli(project, "logs")
        assert "terminated by signal 9" in log.stdout + log.stderr  # the server went through crash recovery
    assert cli(project, "wait").returncode == 0  # after a crash, the server recovers first

    # Whole: the old database (with the marker) or the restored one (without), never a part.
    assert query(project, "chatbi_demo", "SELECT count(*) FROM orders") == [(orders,)]
    # The next run cleans up what the killed one left, and restores.
    again = cli(project, "snapshot", "restore", "s", "--yes")
    assert again.returncode == 0, again.stderr
    assert query(project, "chatbi_demo", "SELECT count(*) FROM categories WHERE name = 'marker'") == [(0,)]
    assert query(project, "chatbi_demo", "SELECT count(*) FROM orders") == [(orders,)]
    assert not [n for n in databases(project) if "__stage_" in n or "__old_" in n]
