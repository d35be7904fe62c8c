"""The app's engine and session factory, made at import from its settings (psycopg 3)."""

from sqlalchemy import URL, create_engine
from sqlalchemy.orm import sessionmaker

from . import settings

engine = create_engine(
    URL.create(
        "postgresql+psycopg",
        username=settings.POSTGRES_USER,
        password=settings.POSTGRES_PASSWORD,
        host=settings.POSTGRES_SERVER,
        port=settings.POSTGRES_PORT,
        database=settings.POSTGRES_DB,
    )
)
SessionLocal = sessionmaker(engine)
