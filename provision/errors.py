"""The ProvisionError hierarchy: every failure a user can cause, with its exit code and a hint."""

from __future__ import annotations


class ProvisionError(Exception):
    """Base of every error provision raises on purpose.

    ``exit_code`` is what the CLI exits with; ``hint`` says how to fix it.
    """

    exit_code = 1
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


class DockerUnavailable(ProvisionError):
    """The Docker engine cannot be reached."""

    exit_code = 3
    default_hint = "start the Docker engine (dockerd), or point DOCKER_HOST at a running one"


class ContainerError(ProvisionError):
    """The container or its image cannot be created, started or used as configured."""

    exit_code = 4


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


class AuthFailed(ProvisionError):
    """The server refused the configured credentials."""

    exit_code = 6
    default_hint = (
        "the volume was probably initialised with another password; use that password, "
        "or run `provision down --volumes` to start from an empty volume (this deletes its data)"
    )


class SqlError(ProvisionError):
    """A SQL source failed; the database being replaced was left as it was."""

    exit_code = 7


class VerifyFailed(SqlError):
    pass


class LockBusy(ProvisionError):
    """Another provisioner holds the server-wide lock and --no-wait was given."""

    exit_code = 8
    default_hint = "wait for the other run to finish, or drop --no-wait to queue behind it"


class Refused(ProvisionError):
    """A destructive or risky action was not confirmed."""

    exit_code = 9


class ServerError(ProvisionError):
    """The server failed in a way that is not the SQL sources' fault (lost connection, disk full, ...)."""

    exit_code = 10
