"""The pytest plugin's leases on a shared server: each worker leases its copies and renews them for its session.

Fixtures (inert until used): ``provision_lease``, a leased private copy of the first configured
database for this pytest process (each xdist worker has its own), renewed in a background thread
every third of ``provision_lease_ttl`` (ini, default 10m) and released when the session ends;
``provision_lease_factory("db")`` the same for any configured database. A worker that dies
(even ``kill -9``) stops renewing: its copies go with the TTL, collected by the next client.
The config comes from ``--provision-config`` / ``provision_config`` as for the other fixtures.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ..builds.leases import Renewer
    from ..config import Config
    from ..endpoint import Endpoint
    from ..postgres.dbops import Connection


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "provision_lease_ttl", "TTL of the leases of provision_lease (renewed while the session runs).", default="10m"
    )


@dataclass
class LeasedDatabase:
    """A leased copy: `copy` is the database's name on the server, `dsn` its URL (password masked)."""

    lease: str
    database: str
    copy: str
    dsn: str
    endpoint: Endpoint = field(repr=False)
    renewer: Renewer = field(repr=False)

    def connect(self) -> Connection:
        """A new psycopg2 connection to the copy (autocommit off, like psycopg2's default)."""
        from ..postgres import dbops

        conn = dbops.connect(self.endpoint, self.copy, application_name="provision lease test")
        conn.autocommit = False
        return conn


def _config(pytestconfig: pytest.Config) -> Config:
    from ..config import load_config

    path = pytestconfig.getoption("--provision-config", None)
    base = pytestconfig.invocation_params.dir
    if not path:
        path = pytestconfig.getini("provision_config") or None
        base = pytestconfig.rootpath
    if path and not os.path.isabs(path):
        path = str(base / path)
    return load_config(path)


@pytest.fixture(scope="session")
def provision_lease_factory(pytestconfig: pytest.Config) -> Iterator[Callable[[str], LeasedDatabase]]:
    from .. import api
    from ..builds.leases import Renewer
    from ..config import parse_duration
    from ..errors import ConfigError

    cfg = _config(pytestconfig)
    ttl = parse_duration(pytestconfig.getini("provision_lease_ttl"))
    if ttl is None:
        raise ConfigError("provision_lease_ttl must be a duration such as 90s, 30m or 2h")
    held: dict[str, LeasedDatabase] = {}

    def lease(database: str) -> LeasedDatabase:
        if database not in held:
            got = api.lease(cfg, database, ttl=ttl)
            ep = api.endpoint(cfg)
            renewer = Renewer(ep, got.lease.name, ttl).start()
            held[database] = LeasedDatabase(got.lease.name, database, got.lease.copy, got.url, ep, renewer)
        return held[database]

    try:
        yield lease
    finally:
        for leased in held.values():
            leased.renewer.stop()
            with contextlib.suppress(Exception):
                api.lease_release(cfg, leased.lease)


@pytest.fixture(scope="session")
def provision_lease(
    provision_lease_factory: Callable[[str], LeasedDatabase], pytestconfig: pytest.Config
) -> LeasedDatabase:
    return provision_lease_factory(_config(pytestconfig).databases[0].name)
