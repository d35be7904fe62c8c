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


def test_keep_failed_is_an_option_and_a_wrong_keep_value_stops_the_run(
    pytester: pytest.Pytester, no_engine: None
) -> None:
    help_text = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--help")
    help_text.stdout.fnmatch_lines(["*--provision-keep=failed*", "*--provision-down*", "*provision_env (args)*"])
    pytester.makepyfile(UNRELATED_SUITE)
    # A bare --provision-keep does not swallow the path after it.
    kept = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--provision-keep", "no_such_dir")
    kept.stderr.fnmatch_lines(["*file or directory not found: no_such_dir*"])
    ok = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--provision-keep=failed")
    ok.assert_outcomes(passed=2)
    wrong = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-o", "provision_keep=sometimes")
    assert wrong.ret == pytest.ExitCode.USAGE_ERROR
    wrong.stderr.fnmatch_lines(["*provision_keep must be drop, failed or all, got 'sometimes'*"])


def test_provision_env_is_checked_before_any_server_is_touched(pytester: pytest.Pytester, no_engine: None) -> None:
    pytester.makepyfile(UNRELATED_SUITE)
    for value, message in (
        ("POSTGRES_DB={db}", "*unknown placeholder {db}*placeholders: {host} {port}*"),
        ("POSTGRES_DB", "*'POSTGRES_DB' is not NAME=value*"),
    ):
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-o", f"provision_env={value}")
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines([message])
