"""The app's own conftest: it imports the app (and so builds its engine) before any test runs."""

import pytest
from envapp.db import engine
from sqlalchemy.orm import Session


# The per-test isolation recipe: the app's own engine, one connection in a transaction, a
# Session that turns the code's commit() into savepoints; everything is rolled back at the end.
@pytest.fixture
def db_session():
    with engine.connect() as connection:
        transaction = connection.begin()
        session = Session(bind=connection, join_transaction_mode="create_savepoint")
        yield session
        session.close()
        transaction.rollback()
