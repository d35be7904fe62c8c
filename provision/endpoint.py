"""Where and as whom to connect to the server: the one place a host, port and credentials become a URL."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field

# Addresses a server can be published on but not connected to.
_ANY_ADDRESS = ("0.0.0.0", "::")


def connect_host(bind: str) -> str:
    """The address to connect to for a port published on `bind`: "all interfaces" means this machine."""
    return "127.0.0.1" if bind in _ANY_ADDRESS else bind


@dataclass(frozen=True)
class Endpoint:
    """Where and as whom to connect."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)

    def dsn(self, dbname: str, show_password: bool = False) -> str:
        """A libpq URL for `dbname`; the password is masked unless show_password."""
        secret = urllib.parse.quote(self.password, safe="") if show_password else "***"
        user = urllib.parse.quote(self.user, safe="")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"postgresql://{user}:{secret}@{host}:{self.port}/{urllib.parse.quote(dbname, safe='')}"

    def libpq_env(self, dbname: str) -> dict[str, str]:
        """The PG* variables that point libpq (psql, pg_dump, an app's driver) here; the password included."""
        return {
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": self.user,
            "PGPASSWORD": self.password,
            "PGDATABASE": dbname,
        }
