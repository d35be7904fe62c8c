"""The pytest plugin for any kind of app: any driver via `.url`, settings read at import, a failed test kept."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import DRIVERS_SAMPLE, ENV_SAMPLE, KEEP_SAMPLE, Project, list_databases, run_cli, run_sample

pytestmark = pytest.mark.integration


def test_psycopg3_asyncpg_and_sqlalchemy_reach_each_copy_through_url(project: Project, docker_client: Any) -> None:
    """Real psycopg 3, asyncpg and SQLAlchemy 2 (psycopg2 and psycopg 3) write through `.url`, each
    test sees only its own copy, and provision_tx undoes what SQLAlchemy 2 over psycopg 3 commits."""
    result = run_sample(project, "-p", "no:randomly", sample=DRIVERS_SAMPLE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "18 passed" in result.stdout, result.stdout
    assert not [n for n in list_databases(docker_client, project.name + "-test") if "__pool_" in n]


APP_ENV = (
    "POSTGRES_SERVER={host} POSTGRES_PORT={port} POSTGRES_DB={database} POSTGRES_USER={user} "
    "POSTGRES_PASSWORD={password}"
)


def test_an_app_that_builds_its_engine_at_import_runs_against_the_session_copy(
    project: Project, docker_client: Any
) -> None:
    """provision_env sets POSTGRES_* before the app's conftest imports it: its engine reaches a
    session-wide copy (one per xdist worker), its own commits work, the recipe isolates each test,
    and the copies are gone afterwards."""
    ini = project.dir / "pytest.ini"
    ini.write_text(f"[pytest]\npythonpath = {ENV_SAMPLE}\n")
    without = run_sample(project, "-c", str(ini), sample=ENV_SAMPLE)
    assert without.returncode != 0 and "POSTGRES_SERVER, POSTGRES_DB, POSTGRES_USER not set" in (
        without.stdout + without.stderr
    )

    ini.write_text(f"[pytest]\npythonpath = {ENV_SAMPLE}\nprovision_env = {APP_ENV}\n")
    basetemp = project.dir / "basetemp"
    for xdist in ([], ["-p", "xdist", "-n", "2"]):
        result = run_sample(project, "-c", str(ini), f"--basetemp={basetemp}", *xdist, sample=ENV_SAMPLE)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "6 passed" in result.stdout, result.stdout
    copies = {path.name: path.read_text() for path in project.dir.rglob("env-copy-*")}
    assert {"env-copy-main", "env-copy-gw0", "env-copy-gw1"} <= set(copies), copies
    assert len(set(copies.values())) == len(copies), copies  # each process its own copy
    assert not [n for n in list_databases(docker_client, project.name + "-test") if "__pool_" in n]
    assert "POSTGRES_PASSWORD" not in result.stdout


def test_a_failed_tests_copy_is_kept_and_named_in_its_report(project: Project, docker_client: Any) -> None:
    """provision_keep = failed: the failing test's copy stays with its rows, its report and the end
    of the run name it with a masked URL, the passing tests' copies go, and the next session
    removes it unless it keeps everything."""
    container = project.name + "-test"
    password = project.config().password
    for switch in (["-o", "provision_keep=failed"], ["--provision-keep=failed", "-p", "xdist", "-n", "2"]):
        result = run_sample(project, *switch, sample=KEEP_SAMPLE)
        assert result.returncode == 1 and "1 failed, 2 passed" in result.stdout, result.stdout + result.stderr
        pools = [n for n in list_databases(docker_client, container) if "__pool_" in n]
        assert len(pools) == 1, pools
        kept = pools[0]
        report = result.stdout.split("Captured provision call")[1]
        assert f"kept {kept} for debugging: postgresql://chatbi:***@" in report, result.stdout
        assert f"  {kept}  postgresql://chatbi:***@" in result.stdout.split("provision: kept 1 database(s)")[1]
        assert f":{password}@" not in result.stdout + result.stderr
        assert query_at(docker_client, container, kept, "SELECT email FROM app_users") == ["evidence@example.com"]

    # Keeping everything leaves the earlier session's copy alone; the default run removes it.
    everything = run_sample(project, "--provision-keep", "-k", "test_passes", sample=KEEP_SAMPLE)
    assert everything.returncode == 0, everything.stdout + everything.stderr
    assert kept in list_databases(docker_client, container)
    cleanup = run_sample(project, "-k", "test_passes", sample=KEEP_SAMPLE)
    assert cleanup.returncode == 0, cleanup.stdout + cleanup.stderr
    assert not [n for n in list_databases(docker_client, container) if "__pool_" in n]

    # The default keeps nothing, and says nothing about keeping.
    default = run_sample(project, sample=KEEP_SAMPLE)
    assert default.returncode == 1 and "kept" not in default.stdout, default.stdout
    assert not [n for n in list_databases(docker_client, container) if "__pool_" in n]


def query_at(docker_client: Any, container: str, dbname: str, sql: str) -> list[str]:
    code, out = docker_client.containers.get(container).exec_run(["psql", "-U", "chatbi", "-d", dbname, "-Atc", sql])
    assert code == 0, out
    return out.decode().split()


def test_the_test_server_outlives_the_run_until_provision_down(project: Project, docker_client: Any) -> None:
    """The test container stays after a run (the next reuses it), doctor lists it, and
    --provision-down removes it at the end of a run."""
    container = project.name + "-test"
    assert run_sample(project, "-k", "test_passes", sample=KEEP_SAMPLE).returncode == 0
    assert docker_client.containers.get(container).status == "running"
    found = {c["name"]: c for c in json.loads(doctor_json(project))["checks"]}
    assert found["test server"]["status"] == "ok", found
    assert f"{container} (the pytest plugin's, data in memory) is running" in found["test server"]["detail"]

    down = run_sample(project, "-k", "test_passes", "--provision-down", sample=KEEP_SAMPLE)
    assert down.returncode == 0, down.stdout + down.stderr
    assert f"provision: test server {container} removed" in down.stdout
    assert container not in [c.name for c in docker_client.containers.list(all=True)]
    assert "test server" not in {c["name"] for c in json.loads(doctor_json(project))["checks"]}


def doctor_json(project: Project) -> str:
    result = run_cli("-c", str(project.path), "doctor", "--json", cwd=project.dir)
    return result.stdout
