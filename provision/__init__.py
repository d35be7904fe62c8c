"""provision: a ready PostgreSQL in Docker, with your databases built, stamped and verified, in one command.

The library surface: load a config, then call the verbs in `provision.api`.

    from provision import load_config, up, fresh, database_url, connect
    cfg = load_config("provision.yaml")
    fresh(cfg, yes=True)
    conn = connect(cfg, "chatbi")
"""

from __future__ import annotations

from .version import __version__

# Not `from typing import TYPE_CHECKING`: typing costs every `provision` command 12 ms of
# start-up, and mypy treats any name TYPE_CHECKING as true.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from .api import (
        check,
        connect,
        database_url,
        down,
        fresh,
        plan_fresh,
        status,
        up,
        wait,
    )
    from .config import Config, DatabaseConfig, load_config
    from .errors import (
        AuthFailed,
        ConfigError,
        ContainerError,
        DockerUnavailable,
        LockBusy,
        NotReady,
        ProvisionError,
        Refused,
        ServerError,
        SqlError,
    )
    from .results import CheckResult, DatabaseStatus, DownResult, FreshPlan, FreshResult, StatusResult, UpResult

# Imported on first use, so `provision --help` does not pay for psycopg2 and the Docker SDK.
# The one list of the public names (the TYPE_CHECKING imports above say the same for mypy, and a
# unit test keeps the two equal).
_LAZY = {
    "api": "check connect database_url down fresh plan_fresh status up wait",
    "config": "Config DatabaseConfig load_config",
    "results": "CheckResult DatabaseStatus DownResult FreshPlan FreshResult StatusResult UpResult",
    "errors": "AuthFailed ConfigError ContainerError DockerUnavailable LockBusy NotReady ProvisionError "
    "Refused ServerError SqlError",
}
_WHERE = {name: module for module, names in _LAZY.items() for name in names.split()}


def __getattr__(name: str) -> object:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'provision' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{module}", __name__), name)


__all__ = ["__version__", *sorted(_WHERE)]
