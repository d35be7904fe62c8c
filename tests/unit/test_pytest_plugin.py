"""The pytest plugin is inert until one of its fixtures is used: no Docker, no psycopg2, no server."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

UNRELATED_SUITE = """
import sys

def test_plain_arithmetic():
    assert 1 + 1 == 2

def test_plugin_left_heavy_modules_alone():
    assert "docker" not in sys.modules
    assert "psycopg2" not in sys.modules
"""


@pytest.fixture
def no_engine(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/provision-plugin-test.sock")
    monkeypatch.setenv("PROVISION_CONFIG", str(tmp_path_factory.mktemp("nowhere") / "missing.yaml"))


def test_explicit_plugin_without_autoload_is_inert(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, no_engine: None
) -> None:
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makepyfile(UNRELATED_SUITE)
    result = pytester.runpytest_subprocess(
        "-p", "provision.testing.plugin", "-p", "no:cacheprovider", "--provision-keep"
    )
    result.assert_outcomes(passed=2)


def test_installed_plugin_is_autoloaded_and_inert(pytester: pytest.Pytester, no_engine: None) -> None:
    pytester.makepyfile(UNRELATED_SUITE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--provision-config", "whatever.yaml")
    result.assert_outcomes(passed=2)


def test_plugin_options_and_fixtures_are_registered(pytester: pytest.Pytester, no_engine: None) -> None:
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--help")
    result.stdout.fnmatch_lines(["*--provision-config*", "*--provision-keep*", "*--provision-no-recycle*"])
    result.stdout.fnmatch_lines(["*provision_recycle (bool)*"])
    pytester.makeini("[pytest]\nprovision_pool_size = 2\nprovision_keep = true\nprovision_recycle = false\n")
    fixtures = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--fixtures")
    fixtures.stdout.fnmatch_lines(["*provision_session*", "*provision_db_factory*", "*provision_db*"])


def test_explicit_plugin_alongside_the_installed_entry_point(pytester: pytest.Pytester, no_engine: None) -> None:
    pytester.makepyfile(UNRELATED_SUITE)
    result = pytester.runpytest_subprocess("-p", "provision.testing.plugin", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
