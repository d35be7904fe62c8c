"""A tiny app whose SQLAlchemy engine is built at import from POSTGRES_* settings, as FastAPI-style apps do."""
