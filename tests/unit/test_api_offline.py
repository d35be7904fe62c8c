"""The parts of provision.api that decide before touching anything: plans, URLs, guards, the test config."""

from __future__ import annotations

from pathlib import Path

import pytest

from provision import api
from provision.config import Config, load_config
from provision.errors import ConfigError, Refused
from provision.targets import make_target
from provision.testing import templates as test_templates


@pytest.fixture
def defaults(tmp_path: Path) -> Config:
    return load_config(None, env={}, cwd=tmp_path)


def test_plan_fresh_describes_every_step(defaults: Config) -> None:
    plan = api.plan_fresh(defaults)
    assert plan.target == "docker" and plan.container == "chatbi-postgres"
    chatbi, demo = plan.databases
    assert chatbi.name == "chatbi" and demo.name == "chatbi_demo"
    steps = " | ".join(chatbi.steps)
    assert "cached template" in steps
    assert "ON_ERROR_STOP=1 --single-transaction" in steps
    assert "stamp alembic_version = 0001_initial_schema" in steps
    assert "verify 15 expected table(s)" in steps
    assert "swap the new copy into place" in steps
    assert demo.variables == {"scale": "1"}
    assert not any("stamp" in step for step in demo.steps)


def test_plan_fresh_without_cache(defaults: Config) -> None:
    plan = api.plan_fresh(defaults, use_cache=False)
    assert all("cached template" not in step for db in plan.databases for step in db.steps)


def test_plan_fresh_only_and_skip_demo(defaults: Config) -> None:
    assert [d.name for d in api.plan_fresh(defaults, only=["chatbi_demo"]).databases] == ["chatbi_demo"]
    assert [d.name for d in api.plan_fresh(defaults, skip_demo=True).databases] == ["chatbi"]
    with pytest.raises(ConfigError, match="nothing to build"):
        api.plan_fresh(defaults, only=["chatbi_demo"], skip_demo=True)
    with pytest.raises(ConfigError, match="not in the configuration"):
        api.plan_fresh(defaults, only=["nope"])


def test_plan_fresh_for_a_server_target_names_no_container(defaults: Config) -> None:
    assert api.plan_fresh(defaults.with_overrides(target="server")).container is None


def test_database_url_without_docker(defaults: Config) -> None:
    assert api.database_url(defaults) == "postgresql://chatbi:***@127.0.0.1:5432/chatbi"
    assert api.database_url(defaults, "chatbi_demo", show_password=True).endswith(
        "chatbi:chatbi@127.0.0.1:5432/chatbi_demo"
    )
    all_interfaces = defaults.with_overrides(bind="0.0.0.0")
    assert "@127.0.0.1:5432/" in api.database_url(all_interfaces)
    server = defaults.with_overrides(target="server", host="db.internal", port=6432)
    assert api.database_url(server) == "postgresql://chatbi:***@db.internal:6432/chatbi"


def test_docker_only_verbs_refuse_a_server_target(defaults: Config) -> None:
    server = defaults.with_overrides(target="server")
    with pytest.raises(ConfigError, match="`down` manages a Docker container"):
        api.down(server)
    with pytest.raises(ConfigError, match="`logs` manages a Docker container"):
        api.logs(server)


@pytest.mark.parametrize("host", ["db.example.com", "10.0.0.5"])
def test_remote_server_needs_allow_remote(defaults: Config, host: str) -> None:
    remote = defaults.with_overrides(target="server", host=host)
    with pytest.raises(Refused) as info:
        make_target(remote).check_writable()
    assert info.value.exit_code == 9
    assert host in str(info.value)
    assert "--allow-remote" in info.value.hint
    make_target(remote.with_overrides(allow_remote=True)).check_writable()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
def test_local_server_is_allowed(defaults: Config, host: str) -> None:
    make_target(defaults.with_overrides(target="server", host=host)).check_writable()


def test_config_for_tests_uses_a_private_fast_container(defaults: Config) -> None:
    tuned = defaults.with_overrides(server_settings=(("work_mem", "64MB"), ("fsync", "on")))
    cfg = test_templates.config_for_tests(tuned)
    assert cfg.container == "chatbi-postgres-test"
    assert cfg.volume is None and cfg.port == 0 and cfg.cleanup == "sync"
    assert cfg.trust_local is True and defaults.trust_local is False  # only the throwaway test server
    settings = dict(cfg.server_settings)
    assert settings["synchronous_commit"] == "off" and settings["full_page_writes"] == "off"
    assert settings["work_mem"] == "64MB"
    assert settings["fsync"] == "on"  # the user's own setting wins
    assert cfg.databases == defaults.databases and cfg.password == defaults.password


def test_config_for_tests_leaves_a_server_target_alone(defaults: Config) -> None:
    server = defaults.with_overrides(target="server")
    assert test_templates.config_for_tests(server) is server


def test_command_repr_hides_its_environment() -> None:
    command = api.Command(["psql"], {"PGPASSWORD": "Sup3r-Secret"})
    assert "Sup3r-Secret" not in repr(command)
