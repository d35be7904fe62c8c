"""Under provision, the test database is a copy of a template built by this app's own `migrate`."""

import pytest


@pytest.fixture(scope="session")
def django_db_setup(request):
    """With provision_env, DATABASES already names a migrated copy (one per xdist worker), so
    there is nothing to create; without it, pytest-django creates (or reuses) its test database."""
    if request.config.pluginmanager.has_plugin("provision.testing.plugin") and request.config.getini("provision_env"):
        return
    request.getfixturevalue("django_db_setup")  # pytest-django's own
