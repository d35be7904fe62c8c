"""Closes the live databases to new connections while an app's command runs against a private copy.

An app's migrations or seed may take their database from their own settings (a `.env` file,
`POSTGRES_DB`) instead of the copy's `$DATABASE_URL`. Detecting that afterwards would be too
late: the live database would already be migrated. So, for as long as such a command runs,
every configured database refuses new connections (`ALLOW_CONNECTIONS false`): a misdirected
command fails with "database ... is not currently accepting connections", and nothing it does
can reach them. Sessions already open (the app itself, a psql) are not touched.

Every run that seals holds the provisioner lock, so only one process seals at a time; builds
in parallel threads of that process share the seal, counted. A run killed while sealed leaves
its databases closed: `reopen_leftovers`, which every locked run calls first, reopens them.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence

from ..checkpoints import checkpoint
from ..endpoint import Endpoint
from ..postgres import dbops
from ..postgres.dbops import Connection
from ..postgres.sqlstream import BUILD_APP

_lock = threading.Lock()
# (host, port, database) -> how many commands of this process are running while it is sealed.
_holders: dict[tuple[str, int, str], int] = {}


@contextlib.contextmanager
def sealed(endpoint: Endpoint, names: Sequence[str]) -> Iterator[None]:
    """While inside, the databases `names` that exist accept no new connections."""
    keys = [(endpoint.host, endpoint.port, name) for name in names]
    with _lock:
        first = [key for key in keys if _holders.get(key, 0) == 0]
        for key in keys:
            _holders[key] = _holders.get(key, 0) + 1
    try:
        if first:
            with dbops.connection(endpoint, application_name=BUILD_APP) as admin:
                _set(admin, [key[2] for key in first], allow=False)
        checkpoint("live-sealed")
        yield
    finally:
        with _lock:
            last = []
            for key in keys:
                _holders[key] -= 1
                if _holders[key] == 0:
                    del _holders[key]
                    last.append(key[2])
        if last:
            with dbops.connection(endpoint, application_name=BUILD_APP) as admin:
                _set(admin, last, allow=True)


def _set(admin: Connection, names: Sequence[str], allow: bool) -> None:
    existing = dbops.list_databases(admin)
    for name in names:
        row = existing.get(name)
        if row is not None and not row.is_template and row.allow_connections != allow:
            dbops.allow_connections(admin, name, allow)


def reopen_leftovers(admin: Connection, names: Sequence[str]) -> list[str]:
    """Reopen configured databases that a killed run left closed. Call under the lock, before sealing anything.

    A configured database (the one the app uses) that refuses connections can only be a seal
    that was never lifted: provision never closes one for any other reason.
    """
    existing = dbops.list_databases(admin)
    reopened = [n for n in names if n in existing and not existing[n].is_template and not existing[n].allow_connections]
    for name in reopened:
        dbops.allow_connections(admin, name, True)
    return reopened
