"""Leases on a shared server, for real: a postgres:17 container and four client machines in network namespaces."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from provision.builds import leases
from provision.builds.pipeline import plan_database
from provision.config import load_config

pytestmark = pytest.mark.integration


def content_key(world: Any) -> int:
    """The advisory lock key of the template build for the clients' current sources."""
    cfg = load_config(world.clients[0].config, env={})
    version = int(world.server.query("SHOW server_version_num")[0][0])
    return leases._key(plan_database(cfg, cfg.databases[0]).content_hash(version))


def test_four_machines_lease_the_same_new_sources_at_once_one_build_four_copies(lease_world: Any) -> None:
    world = lease_world
    world.clients[0].json("lease", "gc")  # creates the registry, nothing else
    key = content_key(world)
    # Hold the build lock of these sources, so all four clients are provably at the gate at once.
    gate = world.server.connect("provision_registry")
    cur = gate.cursor()
    cur.execute("SELECT pg_advisory_lock(%s, %s)", [leases.BUILD_LOCK, key])
    procs = [world.start(client, "lease", "app", "--ttl", "1h", "--json") for client in world.clients]
    deadline = time.monotonic() + 120
    while True:
        cur.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND objid = %s AND NOT granted",
            [leases.BUILD_LOCK, key % 2**32],
        )
        if cur.fetchone()[0] == 4:
            break
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        assert time.monotonic() < deadline, "the four clients never all waited for the template build"
        time.sleep(0.05)
    gate.close()  # let them go

    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    assert sum(r["built_template"] for r in results) == 1, "the template must be built exactly once"
    copies = {r["lease"]["copy"] for r in results}
    assert len(copies) == 4
    assert {r["lease"]["owner_addr"].split("/")[0] for r in results} == {c.machine.addr for c in world.clients}
    template = results[0]["lease"]["template"]
    assert {r["lease"]["template"] for r in results} == {template}
    assert world.server.query(
        "SELECT datistemplate, datallowconn FROM pg_database WHERE datname LIKE 'app\\_\\_tpl\\_%'"
    ) == [(True, False)], "one sealed template"
    for copy in copies:
        assert world.copy_rows(copy) == [("a",), ("b",)]
    owners = world.server.query(
        "SELECT DISTINCT pg_get_userbyid(datdba) FROM pg_database WHERE datname LIKE 'app\\_\\_%'"
    )
    assert owners == [("ci",)], "everything was made by the non-superuser role"
    listed = world.clients[3].json("lease", "list")
    assert {item["copy"] for item in listed["leases"]} == copies
    assert listed["templates"][0]["leases"] == 4


def test_a_named_lease_is_found_again_and_refreshed_when_the_sources_change(lease_world: Any) -> None:
    world = lease_world
    first = world.clients[0].json("lease", "app", "--name", "pr-1234", "--ttl", "1h")
    assert first["action"] == "new"
    copy = first["lease"]["copy"]
    conn = world.server.connect(copy, user="ci")
    conn.cursor().execute("INSERT INTO items (name) VALUES ('written by job 1')")
    conn.close()

    # The next job of the same PR, on another machine: the same copy, with what job 1 wrote.
    again = world.clients[1].json("lease", "app", "--name", "pr-1234", "--ttl", "1h")
    assert again["action"] == "found"
    assert again["lease"]["copy"] == copy
    assert again["lease"]["owner_addr"].split("/")[0] == world.clients[1].machine.addr
    assert world.copy_rows(copy)[-1] == ("written by job 1",)

    # The PR changes the sources: the lease is refreshed from the new template.
    world.write_sources(world.sources.read_text() + "INSERT INTO items (name) VALUES ('c');\n")
    refreshed = world.clients[2].json("lease", "app", "--name", "pr-1234", "--ttl", "1h")
    assert refreshed["action"] == "refreshed"
    assert refreshed["lease"]["copy"] != copy
    assert refreshed["lease"]["content_hash"] != first["lease"]["content_hash"]
    assert world.copy_rows(refreshed["lease"]["copy"]) == [("a",), ("b",), ("c",)]
    assert copy not in world.server.databases()
    assert [item["name"] for item in world.clients[3].json("lease", "list")["leases"]] == ["pr-1234"]

    released = world.clients[3].run("lease", "release", "pr-1234")
    assert released.returncode == 0, released.stderr
    assert refreshed["lease"]["copy"] not in world.server.databases()
    missing = world.clients[3].run("lease", "release", "pr-1234")
    assert missing.returncode == 2 and "no lease named pr-1234" in missing.stderr


def test_the_cap_evicts_expired_leases_and_unused_templates_then_refuses_naming_the_holders(lease_world: Any) -> None:
    world = lease_world
    a = world.clients[0].json("lease", "app", "--name", "a", "--ttl", "2s")
    size = a["lease"]["bytes"]
    assert size > 1_000_000
    cap = str(int(4.5 * size))  # room for four databases of this size, not five
    world.wait_until_expired("a")
    old_template = a["lease"]["template"]

    world.write_sources(world.sources.read_text() + "ALTER TABLE items ADD COLUMN note text;\n")
    b = world.clients[1].json("lease", "app", "--name", "b", "--ttl", "1h", PROVISION_LEASE_MAX_BYTES=cap)
    assert b["dropped_expired"] == [a["lease"]["copy"]], "the expired lease went first"
    assert a["lease"]["copy"] not in world.server.databases()
    c = world.clients[2].json("lease", "app", "--name", "c", "--ttl", "1h", PROVISION_LEASE_MAX_BYTES=cap)
    assert c["evicted"] == [] and old_template in world.server.databases()  # four fit: two templates, b, c
    d = world.clients[3].json("lease", "app", "--name", "d", "--ttl", "1h", PROVISION_LEASE_MAX_BYTES=cap)
    assert d["evicted"] == [old_template], "the unused template of the old sources is evicted"
    assert old_template not in world.server.databases()

    before = world.server.databases()
    refused = world.clients[0].run("lease", "app", "--name", "e", "--ttl", "1h", PROVISION_LEASE_MAX_BYTES=cap)
    assert refused.returncode == 14, refused.stderr
    assert "lease_max_bytes" in refused.stderr and "nothing more can be evicted" in refused.stderr
    for name, client in (("b", world.clients[1]), ("c", world.clients[2]), ("d", world.clients[3])):
        assert f"lease {name}:" in refused.stderr and client.machine.addr in refused.stderr
    assert "Hint: release leases" in refused.stderr
    assert world.server.databases() == before, "a refused lease creates nothing"
    assert world.registry("SELECT count(*) FROM leases WHERE name = 'e'") == [(0,)]


def test_renew_extends_and_an_expired_lease_cannot_be_renewed(lease_world: Any) -> None:
    world = lease_world
    got = world.clients[0].json("lease", "app", "--name", "short", "--ttl", "1m")
    renewed = world.clients[1].json("lease", "renew", "short", "--ttl", "2h")
    assert renewed["expires"] > got["lease"]["expires"] and renewed["seconds_left"] > 3600
    world.clients[1].json("lease", "renew", "short", "--ttl", "1s")
    world.wait_until_expired("short")
    late = world.clients[2].run("lease", "renew", "short")
    assert late.returncode == 2 and "expired or was released" in late.stderr
    gc = world.clients[3].json("lease", "gc")
    assert gc["expired"] == [got["lease"]["copy"]]
    assert got["lease"]["copy"] not in world.server.databases()


def test_a_spare_made_ahead_makes_the_next_lease_a_rename(lease_world: Any) -> None:
    world = lease_world
    ahead = {"PROVISION_LEASE_SPARES": "1", "PROVISION_CLEANUP": "sync"}  # sync: the spare is made before exit

    def spares() -> set[str]:
        return {name for name in world.server.databases() if name.startswith("app__lspare_")}

    first = world.clients[0].json("lease", "app", **ahead)
    assert first["from_spare"] is False
    made = spares()
    assert len(made) == 1
    second = world.clients[1].json("lease", "app", **ahead)
    assert second["from_spare"] is True
    assert second["lease"]["copy"] not in made and not made & world.server.databases(), "the spare was renamed"
    assert world.copy_rows(second["lease"]["copy"]) == [("a",), ("b",)]
    assert len(spares()) == 1 and spares() != made, "and another made for the next lease"
    assert world.clients[2].json("lease", "gc") == {"expired": [], "orphans": []}
    assert len(spares()) == 1, "collection leaves spares alone"


def test_a_spare_is_made_ahead_by_a_detached_process(lease_world: Any) -> None:
    """With the default background clean-up, the lease returns first and a detached child makes the spare."""
    world = lease_world
    ahead = {"PROVISION_LEASE_SPARES": "1", "PROVISION_CLEANUP": "background"}
    first = world.clients[0].json("lease", "app", **ahead)
    assert first["from_spare"] is False
    deadline = time.monotonic() + 60
    while not {n for n in world.server.databases() if n.startswith("app__lspare_")} and time.monotonic() < deadline:
        time.sleep(0.2)
    assert {n for n in world.server.databases() if n.startswith("app__lspare_")}, "no spare was made in the background"
    assert world.clients[1].json("lease", "app", **ahead)["from_spare"] is True


def test_the_library_renewer_keeps_a_lease_alive_past_its_ttl(lease_world: Any) -> None:
    world = lease_world
    got = world.clients[0].json("lease", "app", "--name", "renewed", "--ttl", "3s")
    renewer = leases.Renewer(world.server.ci_endpoint(), "renewed", 3.0, 0.5)
    renewer.start()
    try:
        while not world.registry(
            "SELECT clock_timestamp() > %s::timestamptz + interval '3 seconds'", [got["lease"]["expires"]]
        )[0][0]:
            assert world.clients[1].json("lease", "gc")["expired"] == []
        assert world.clients[2].json("lease", "gc")["expired"] == []
        assert got["lease"]["copy"] in world.server.databases()
    finally:
        renewer.stop()
    assert renewer.error is None and renewer.renewals >= 3
