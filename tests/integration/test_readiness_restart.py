"""Readiness with an image whose init script restarts the server with TCP on, as PostGIS-style images can."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import IMAGE, Project, query, run_cli

pytestmark = pytest.mark.integration

# The restarted server listens on TCP for 6 s before the entrypoint stops it and starts the
# real one: a login in that window is a login to a server about to go away.
RESTART_SCRIPT = """#!/bin/bash
set -e
echo 'init: restarting the server with TCP on'
pg_ctl -D "$PGDATA" -m fast -w stop
pg_ctl -D "$PGDATA" -o "-c listen_addresses='*' -p 5432" -w start
sleep 6
echo 'init: restart script done'
"""


@pytest.fixture(scope="module")
def restarting_image(docker_client: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    tag = "provtest-restart-after-init:latest"
    directory = tmp_path_factory.mktemp("restart")
    (directory / "90-restart.sh").write_text(RESTART_SCRIPT)
    (directory / "Dockerfile").write_text(
        f"FROM {IMAGE}\nCOPY 90-restart.sh /docker-entrypoint-initdb.d/\n"
        "RUN chmod 755 /docker-entrypoint-initdb.d/90-restart.sh\n"
    )
    docker_client.images.build(path=str(directory), tag=tag, rm=True)
    return tag


def test_up_is_ready_only_once_the_init_restart_is_over(project: Project, restarting_image: str) -> None:
    project.write(image=restarting_image)
    up = run_cli("-c", str(project.path), "up", cwd=project.dir)
    assert up.returncode == 0, up.stderr
    # What the log holds when `up` has returned: the entrypoint logs "init complete" just before it
    # starts the server that stays, so a readiness fooled by the restarted one returns without it.
    logs = run_cli("-c", str(project.path), "logs", cwd=project.dir)
    text = logs.stdout + logs.stderr
    assert "init: restart script done" in text
    assert "init complete; ready for start up" in text

    built = run_cli("-c", str(project.path), "fresh", "--yes", cwd=project.dir)
    assert built.returncode == 0, built.stderr
    assert query(project, "chatbi", "SELECT count(*) FROM app_users") == [(0,)]
