"""The app's settings: the environment first, then `.env`, as pydantic-settings reads them."""

import os
from pathlib import Path

ENV_FILE = Path(__file__).resolve().parents[2] / ".env"
REQUIRED = ("PROJECT_NAME", "POSTGRES_SERVER", "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB")


def _read_env_file() -> dict[str, str]:
    values: dict[str, str] = {}
    if ENV_FILE.is_file():
        for line in ENV_FILE.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                key, _, value = line.partition("=")
                values[key.strip()] = value.strip().strip("'\"")
    return values


class Settings:
    def __init__(self) -> None:
        values = {**_read_env_file(), **os.environ}
        missing = [name for name in REQUIRED if not values.get(name)]
        if missing:
            raise SystemExit(f"settings: required value(s) missing: {', '.join(missing)}")
        self.PROJECT_NAME = values["PROJECT_NAME"]
        self.POSTGRES_SERVER = values["POSTGRES_SERVER"]
        self.POSTGRES_PORT = int(values.get("POSTGRES_PORT", "5432"))
        self.POSTGRES_USER = values["POSTGRES_USER"]
        self.POSTGRES_PASSWORD = values["POSTGRES_PASSWORD"]
        self.POSTGRES_DB = values["POSTGRES_DB"]
        self.FIRST_SUPERUSER = values.get("FIRST_SUPERUSER", "admin@example.com")

    @property
    def SQLALCHEMY_DATABASE_URI(self) -> str:
        from sqlalchemy import URL

        return URL.create(
            "postgresql+psycopg2",
            username=self.POSTGRES_USER,
            password=self.POSTGRES_PASSWORD,
            host=self.POSTGRES_SERVER,
            port=self.POSTGRES_PORT,
            database=self.POSTGRES_DB,
        ).render_as_string(hide_password=False)


settings = Settings()
