"""Leases under faults: a client killed with kill -9 mid-lease, and a TTL running out under a live renewal."""

from __future__ import annotations

import json
import signal
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def first_line(proc: Any) -> dict[str, Any]:
    """The JSON a `lease --json --hold` client prints before it starts renewing."""
    lines = []
    while True:
        line = proc.stdout.readline()
        assert line, f"the client ended early: {proc.stderr.read()}"
        lines.append(line)
        if line.startswith("}"):
            return dict(json.loads("".join(lines)))


def test_a_client_killed_mid_lease_keeps_its_copy_until_the_ttl_then_it_goes(lease_world: Any) -> None:
    world = lease_world
    holder = world.start(world.clients[0], "lease", "app", "--name", "killed", "--ttl", "20s", "--hold", "--json")
    got = first_line(holder)
    copy = got["lease"]["copy"]
    world.stop(holder, signal.SIGKILL)  # no release, no more renewals
    assert holder.returncode == -signal.SIGKILL

    # Another machine collects before the TTL: the copy stays (the lease has most of its 20 s left).
    assert world.registry("SELECT expires - clock_timestamp() > interval '10 seconds' FROM leases") == [(True,)]
    early = world.clients[1].json("lease", "gc")
    assert early == {"expired": [], "orphans": []}
    assert copy in world.server.databases()
    assert world.copy_rows(copy) == [("a",), ("b",)]

    # After the TTL, by the server's clock: the next client drops it.
    world.wait_until_expired("killed")
    late = world.clients[2].json("lease", "gc")
    assert late["expired"] == [copy]
    assert copy not in world.server.databases()
    assert world.registry("SELECT count(*) FROM leases") == [(0,)]


def test_a_ttl_running_out_under_a_live_renewal_never_drops_the_copy(lease_world: Any) -> None:
    world = lease_world
    ttl = 6.0
    holder = world.start(world.clients[0], "lease", "app", "--name", "live", "--ttl", "6s", "--hold", "--json")
    got = first_line(holder)
    copy = got["lease"]["copy"]
    # Collect from other machines, again and again, until the server's clock is two TTLs past the
    # first expiry: without the renewals the copy would have gone at the first collection after it.
    collections = 0
    while True:
        past = world.registry(
            "SELECT clock_timestamp() > %s::timestamptz + %s * interval '1 second'", [got["lease"]["expires"], 2 * ttl]
        )[0][0]
        gc = world.clients[1 + collections % 3].json("lease", "gc")
        collections += 1
        assert gc["expired"] == [] and gc["orphans"] == [], f"collection {collections} dropped {gc}"
        assert copy in world.server.databases()
        assert holder.poll() is None, holder.stderr.read() if holder.stderr else ""
        if past:
            break
    assert collections >= 3
    renewed = world.registry(
        "SELECT renewed > created, expires > %s::timestamptz FROM leases", [got["lease"]["expires"]]
    )
    assert renewed == [(True, True)]
    assert world.copy_rows(copy) == [("a",), ("b",)]

    # SIGTERM ends the hold cleanly: the lease is released and its copy dropped.
    world.stop(holder, signal.SIGTERM)
    assert holder.returncode == 0, holder.stderr.read() if holder.stderr else ""
    assert copy not in world.server.databases()
    assert world.registry("SELECT count(*) FROM leases") == [(0,)]


def test_a_client_killed_while_building_the_template_leaves_the_build_to_the_next(lease_world: Any) -> None:
    world = lease_world
    killed = world.clients[0].run("lease", "app", "--json", PROVISION_KILL_AT="sql-loaded")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not {name for name in world.server.databases() if "__tpl_" in name}, "no half-built template"
    # Its build lock went with its connection: the next machine builds the template and gets its copy.
    got = world.clients[1].json("lease", "app")
    assert got["built_template"] is True and got["action"] == "new"
    assert world.copy_rows(got["lease"]["copy"]) == [("a",), ("b",)]
    assert [r[0] for r in world.registry("SELECT name FROM leases")] == [got["lease"]["name"]]
    # What it does leave: its staging copy, which only `fresh` (under the provisioner lock) drops.
    assert len({name for name in world.server.databases() if "__stage_" in name}) <= 1
