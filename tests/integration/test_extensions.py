"""`extensions:` per database: created in the copy before the SQL and used; doctor names what the image lacks."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import Project, fresh, query, require_image, run_cli

pytestmark = pytest.mark.integration

# Built by scripts/dev test: compose/build-offline-image.sh --tag ... --extensions pgvector,postgis
EXTENSION_IMAGE = "postgres:18-pgvector-postgis"

PLACES_SQL = """
CREATE TABLE places (
    id int PRIMARY KEY,
    name text NOT NULL,
    embedding vector(3) NOT NULL,
    location geography(Point, 4326) NOT NULL
);
INSERT INTO places VALUES
    (1, 'Paris', '[1, 0, 0]', ST_MakePoint(2.3522, 48.8566)::geography),
    (2, 'Berlin', '[0, 1, 0]', ST_MakePoint(13.4050, 52.5200)::geography),
    (3, 'Lyon', '[0.9, 0.1, 0]', ST_MakePoint(4.8357, 45.7640)::geography);
"""


def places_project(project: Project, image: str, extensions: list[str]) -> Project:
    (project.dir / "places.sql").write_text(PLACES_SQL)
    return project.write(
        image=image, databases={"places": {"sql": ["places.sql"], "extensions": extensions, "tables": ["places"]}}
    )


def test_vector_and_postgis_are_created_and_used(project: Project, docker_client: Any) -> None:
    how = (
        f"compose/build-offline-image.sh --tag {EXTENSION_IMAGE} --extensions pgvector,postgis (scripts/dev test does)"
    )
    places_project(project, require_image(docker_client, EXTENSION_IMAGE, how), ["vector", "postgis"])
    built = fresh(project, "--yes")
    assert built.returncode == 0, built.stderr
    installed = {r[0] for r in query(project, "places", "SELECT extname FROM pg_extension")}
    assert {"vector", "postgis"} <= installed

    nearest = query(project, "places", "SELECT name FROM places ORDER BY embedding <-> '[1, 0.05, 0]' LIMIT 2")
    assert nearest == [("Paris",), ("Lyon",)]
    ((metres,),) = query(
        project,
        "places",
        "SELECT ST_Distance(a.location, b.location) FROM places a, places b "
        "WHERE a.name = 'Paris' AND b.name = 'Berlin'",
    )
    assert 870_000 < metres < 890_000  # Paris to Berlin is about 878 km

    doctor = run_cli("-c", str(project.path), "doctor", "--json", cwd=project.dir)
    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert checks["extensions"]["status"] == "ok", checks["extensions"]

    # The cached template carries the extensions: a warm fresh gives the same database.
    again = fresh(project, "--yes")
    assert again.returncode == 0, again.stderr
    assert query(project, "places", "SELECT count(*) FROM places") == [(3,)]


def test_an_image_without_the_extension_is_named_by_doctor_and_fresh(project: Project) -> None:
    places_project(project, str(project.data["image"]), ["vector", "postgis"])
    assert run_cli("-c", str(project.path), "up", cwd=project.dir).returncode == 0

    doctor = run_cli("-c", str(project.path), "doctor", "--json", cwd=project.dir)
    assert doctor.returncode == 12, doctor.stdout + doctor.stderr
    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert checks["extensions"]["status"] == "fail"
    assert "places needs vector, postgis" in checks["extensions"]["detail"]
    assert "build-offline-image.sh" in checks["extensions"]["fix"]

    failed = fresh(project, "--yes")
    assert failed.returncode == 10, failed.stderr
    assert "the server has no extension vector, postgis" in failed.stderr
    assert "Hint:" in failed.stderr
    names = {r[0] for r in query(project, "postgres", "SELECT datname FROM pg_database")}
    assert not [n for n in names if n.startswith("places")], names  # nothing half-built left
