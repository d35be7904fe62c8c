"""Alembic environment for ChatBI: the database URL comes from DATABASE_URL."""

import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import create_engine, make_url, pool

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name)

# Migrations are written by hand (no autogenerate), so there is no model metadata.
target_metadata = None

raw_url = os.environ.get("DATABASE_URL")
if not raw_url:
    raise SystemExit("DATABASE_URL is not set; e.g. DATABASE_URL=postgresql://chatbi:chatbi@127.0.0.1:5432/chatbi")
url = make_url(raw_url)
# A bare postgresql:// URL (what `provision url` prints) means psycopg 3 in SQLAlchemy 2.1;
# this project ships psycopg2, so use it unless the URL names a driver.
if url.drivername == "postgresql":
    url = url.set(drivername="postgresql+psycopg2")


def run_migrations_offline() -> None:
    """Emit the migration SQL to stdout (`alembic upgrade --sql`) without connecting."""
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
