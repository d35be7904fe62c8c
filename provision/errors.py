"""The ProvisionError hierarchy: every failure a user can cause, with its exit code and a hint."""

from __future__ import annotations


class ProvisionError(Exception):
    """Base of every error provision raises on purpose.

    ``exit_code`` is what the CLI exits with; ``hint`` says how to fix it.
    """

    exit_code = 1
    meaning = "unexpected internal error (run with `--debug` and report it)"
    default_hint = ""

    def __init__(self, message: str, hint: str | None = None, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = self.default_hint if hint is None else hint
        # Extra lines shown under the message, such as a container's log tail.
        self.detail = detail

    def __str__(self) -> str:
        return self.message


class ConfigError(ProvisionError):
    """The configuration, a flag, or an input file is wrong. Nothing was touched."""

    exit_code = 2
    meaning = "bad configuration, flag or input file: nothing was touched"


class DockerUnavailable(ProvisionError):
    """The Docker engine cannot be reached."""

    exit_code = 3
    meaning = "Docker engine unreachable (the message names the socket or `DOCKER_HOST` tried)"
    default_hint = "start the Docker engine (dockerd), or point DOCKER_HOST at a running one"


class ContainerError(ProvisionError):
    """The container or its image cannot be created, started or used as configured."""

    exit_code = 4
    meaning = "container or image problem: port taken, image missing and not pullable, drift"


class PortInUse(ContainerError):
    pass


class ImageUnavailable(ContainerError):
    default_hint = (
        "no registry reachable? build a local stand-in with compose/build-offline-image.sh, "
        "or set `image:` to an image that exists locally"
    )


class DriftDetected(ContainerError):
    default_hint = "run with --recreate to replace the container (the volume and its data are kept)"


class NotReady(ProvisionError):
    """The server did not become ready: timeout, exit, or crash loop."""

    exit_code = 5
    meaning = "server not ready: timeout, container exited or restart-looping"


class AuthFailed(ProvisionError):
    """The server refused the configured credentials."""

    exit_code = 6
    meaning = "authentication failed"
    default_hint = (
        "the volume was probably initialised with another password; use that password, "
        "or run `provision down --volumes` to start from an empty volume (this deletes its data)"
    )


class SqlError(ProvisionError):
    """A SQL source failed; the database being replaced was left as it was."""

    exit_code = 7
    meaning = "SQL error or failed verification: the old database is untouched"


class VerifyFailed(SqlError):
    pass


class LockBusy(ProvisionError):
    """Another provisioner holds the server-wide lock and --no-wait was given."""

    exit_code = 8
    meaning = "another provisioner holds the lock (`--no-wait`)"
    default_hint = "wait for the other run to finish, or drop --no-wait to queue behind it"


class Refused(ProvisionError):
    """A destructive or risky action was not confirmed."""

    exit_code = 9
    meaning = "refused: confirmation needed (`--yes`), or a non-local server (`--allow-remote`)"


class ServerError(ProvisionError):
    """The server failed in a way that is not the SQL sources' fault (lost connection, disk full, ...)."""

    exit_code = 10
    meaning = "server error (lost connection, disk full, ...)"


class NoGitBranch(ProvisionError):
    """The branch feature has no branch to follow: not a git repository, or a detached HEAD. Nothing was changed."""

    exit_code = 13
    meaning = "no git branch to follow (not a git repository, or a detached HEAD): nothing was changed"
    default_hint = "run it inside a git checkout, on a branch (`git switch NAME`); nothing was changed"


class UnknownLease(ConfigError):
    """No lease of that name (it was released, or it expired and was dropped)."""

    default_hint = "`provision lease list` shows the leases on the server"


class CapReached(ProvisionError):
    """A lease would take what provision keeps on a shared server past `lease_max_bytes`."""

    exit_code = 14
    meaning = "lease refused: the shared server's cap (`lease_max_bytes`) is reached, even after evicting"


# Exit codes that are not errors of this hierarchy.
SUCCESS = 0
DRIFT_FOUND = 11
DOCTOR_FAILED = 12
INTERRUPTED = 130


def exit_codes() -> list[tuple[int, str]]:
    """Every exit code provision uses and what it means: the one source for `--help` and the README."""
    table = {SUCCESS: "success"}
    pending: list[type[ProvisionError]] = [ProvisionError]
    while pending:
        cls = pending.pop()
        # A subclass shares its parent's code and meaning unless it sets its own.
        table.setdefault(cls.exit_code, cls.meaning)
        pending.extend(cls.__subclasses__())
    table[DRIFT_FOUND] = "`provision check` found drift: the schemas differ (not an error; each difference is listed)"
    table[DOCTOR_FAILED] = "`provision doctor` found a failing check (each is listed with its fix)"
    table[INTERRUPTED] = "interrupted (Ctrl-C): nothing half-built is left in place"
    return sorted(table.items())
