"""A short suite on each PostgreSQL major: fresh, migrations, check, snapshots, the plugin (recycling off on 15)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import (
    HEAD,
    RECYCLE_SAMPLE,
    Project,
    fresh,
    query,
    require_image,
    run_cli,
    run_sample,
    use_alembic_example,
)

pytestmark = pytest.mark.integration

# The image each major runs on. scripts/dev test builds the offline ones (compose/build-offline-image.sh)
# when no registry answers: 15, 17 and 18 from Debian, 16 from npm's and PyPI's PostgreSQL binaries.
MAJORS = {15: "postgres:15", 16: "postgres:16", 17: "postgres:17", 18: "postgres:18"}


def image_for(docker_client: Any, major: int) -> str:
    image = MAJORS[major]
    return require_image(
        docker_client, image, f"`compose/build-offline-image.sh --tag {image}` (scripts/dev test does)"
    )


def cli(project: Project, *args: str) -> Any:
    return run_cli("-c", str(project.path), *args, cwd=project.dir)


@pytest.mark.parametrize("major", sorted(MAJORS))
def test_fresh_migrations_check_and_snapshots(project: Project, docker_client: Any, major: int) -> None:
    project.write(image=image_for(docker_client, major))
    use_alembic_example(project)

    built = fresh(project, "--yes")
    assert built.returncode == 0, built.stderr
    assert query(project, "postgres", "SHOW server_version_num")[0][0].startswith(str(major))
    assert query(project, "chatbi", "SELECT version_num FROM alembic_version") == [(HEAD,)]

    # A warm fresh takes the cached template's spare.
    query(project, "chatbi", "INSERT INTO app_users (email, username) VALUES ('x@example.com', 'x')")
    again = fresh(project, "--yes")
    assert again.returncode == 0, again.stderr
    assert query(project, "chatbi", "SELECT count(*) FROM app_users") == [(0,)]

    checked = cli(project, "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr

    assert cli(project, "snapshot", "save", "m").returncode == 0
    query(project, "chatbi", "INSERT INTO app_users (email, username) VALUES ('y@example.com', 'y')")
    restored = cli(project, "snapshot", "restore", "m", "--yes")
    assert restored.returncode == 0, restored.stderr
    assert query(project, "chatbi", "SELECT count(*) FROM app_users") == [(0,)]

    status = cli(project, "status", "--json")
    assert status.returncode == 0, status.stderr


@pytest.mark.parametrize("major", sorted(MAJORS))
def test_the_plugin_recycles_from_16_and_says_why_not_below(project: Project, docker_client: Any, major: int) -> None:
    project.write(image=image_for(docker_client, major))
    result = run_sample(project, sample=RECYCLE_SAMPLE)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("provision: ") and "copies" in line]
    if major >= 16:
        assert lines == ["provision: 6 copies: 3 reused, 2 reset, 1 dropped"], result.stdout
    else:
        expected = (
            "provision: 6 copies: 0 reused, 0 reset, 6 dropped (recycling off: needs PostgreSQL 16+ with pg_walinspect)"
        )
        assert lines == [expected], result.stdout
