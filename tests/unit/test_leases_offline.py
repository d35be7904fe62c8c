"""Leases and remote engines without a server: durations, names, config keys, and the unreachable-bind guard."""

from __future__ import annotations

import pytest

from provision.builds import leases
from provision.config import load_config, parse_duration
from provision.errors import CapReached, ConfigError, Refused, exit_codes
from provision.targets.docker import DockerTarget


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90.0), (90, 90.0), ("90s", 90.0), ("30m", 1800.0), ("2h", 7200.0), ("1d", 86400.0), ("1.5h", 5400.0)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "0s", "-5m", "2 hours", "h", True, "1w"])
def test_bad_durations(text: object) -> None:
    assert parse_duration(text) is None


def test_lease_config_keys_from_the_environment() -> None:
    cfg = load_config(
        None,
        env={"PROVISION_LEASE_TTL": "45m", "PROVISION_LEASE_MAX_BYTES": "1000000", "PROVISION_LEASE_SPARES": "2"},
    )
    assert (cfg.lease_ttl, cfg.lease_max_bytes, cfg.lease_spares) == (2700.0, 1_000_000, 2)
    with pytest.raises(ConfigError, match="lease_ttl must be a duration"):
        load_config(None, env={"PROVISION_LEASE_TTL": "soon"})


@pytest.mark.parametrize("name", ["pr-1234", "main", "feature.x_1", "a" * 63])
def test_lease_names(name: str) -> None:
    assert leases.validate_name(name) == name


@pytest.mark.parametrize("name", ["", "-x", "a b", "pr/1", "a" * 64, "x;drop"])
def test_bad_lease_names(name: str) -> None:
    with pytest.raises(ConfigError):
        leases.validate_name(name)


def test_lease_copies_and_spares_are_provisions_own_names() -> None:
    assert leases.copy_name("app").startswith("app__lease_")
    assert leases.spare_prefix("app", "ab" * 32).startswith("app__lspare_abababababab_")
    long = "d" * 60
    assert len(leases.copy_name(long).encode()) <= 63 and "__lease_" in leases.copy_name(long)


def test_the_cap_refusal_has_its_own_exit_code() -> None:
    assert CapReached.exit_code == 14 and 14 in dict(exit_codes())
    assert not issubclass(CapReached, Refused)


def test_connect_host_wins_over_the_derived_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "tcp://10.9.8.7:2375")
    assert DockerTarget(load_config(None, env={}, overrides={"bind": "0.0.0.0"})).host == "10.9.8.7"
    cfg = load_config(None, env={"PROVISION_CONNECT_HOST": "127.0.0.1"})
    assert DockerTarget(cfg).host == "127.0.0.1"


def test_a_remote_engine_publishing_on_its_loopback_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "ssh://builder@ci-host")
    with pytest.raises(ConfigError, match="runs on ci-host"):
        _ = DockerTarget(load_config(None, env={})).host
    monkeypatch.setenv("DOCKER_HOST", "unix:///var/run/docker.sock")
    assert DockerTarget(load_config(None, env={})).host == "127.0.0.1"
