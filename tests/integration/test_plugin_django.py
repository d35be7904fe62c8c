"""The pytest plugin with a real Django project (examples/django) under real pytest-django."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Project, list_databases, run_django, use_django_example

pytestmark = pytest.mark.integration

NEW_MIGRATION = """from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("shop", "0003_customer_vip")]
    operations = [migrations.AddField("customer", "note", models.TextField(null=True))]
"""


def test_django_suite_runs_on_copies_of_a_template_built_by_its_own_migrate(
    project: Project, docker_client: Any
) -> None:
    """The template is built once by `manage.py migrate`, each test runs on a copy of its own
    (inside pytest-django's transaction as usual), and a new migration rebuilds it once."""
    use_django_example(project)
    container = project.name + "-test"

    def shop_templates() -> set[str]:
        return {n for n in list_databases(docker_client, container) if n.startswith("shop__tpl_")}

    # --reuse-db would leave pytest-django's own test database behind, were one made.
    first = run_django(project, "--provision-config", str(project.path), "--reuse-db", "-p", "xdist", "-n", "2")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "8 passed" in first.stdout, first.stdout
    # provision_django_copies: each of the 8 tests ran on a copy of its own, given back afterwards.
    assert "provision: 8 copies:" in first.stdout, first.stdout
    built = shop_templates()
    assert len(built) == 1, built
    # pytest-django created no test database of its own: the tests ran on provision's copies.
    assert not [n for n in list_databases(docker_client, container) if n.startswith("test_")]

    warm = run_django(project, "--provision-config", str(project.path))
    assert warm.returncode == 0 and "8 passed" in warm.stdout, warm.stdout + warm.stderr
    assert shop_templates() == built  # nothing rebuilt

    (project.dir / "shop" / "migrations" / "0004_customer_note.py").write_text(NEW_MIGRATION)
    again = run_django(project, "--provision-config", str(project.path), "-p", "xdist", "-n", "2")
    assert again.returncode == 0 and "8 passed" in again.stdout, again.stdout + again.stderr
    rebuilt = shop_templates() - built
    assert len(rebuilt) == 1, (built, shop_templates())  # rebuilt once, for three processes
    # Templates refuse connections: read a clone of it.
    server = docker_client.containers.get(container)
    steps = [
        ("postgres", f'CREATE DATABASE "check_copy" TEMPLATE "{next(iter(rebuilt))}"'),
        ("check_copy", "SELECT name FROM django_migrations ORDER BY id"),
        ("postgres", "DROP DATABASE check_copy"),
    ]
    outputs = []
    for db, sql in steps:
        code, out = server.exec_run(["psql", "-U", "chatbi", "-d", db, "-Atc", sql])
        assert code == 0, out
        outputs.append(out.decode().split())
    assert outputs[1][-1] == "0004_customer_note", outputs
    assert not [n for n in list_databases(docker_client, container) if "__pool_" in n]
