"""The app's settings, read from the environment once, at import."""

import os

missing = [name for name in ("POSTGRES_SERVER", "POSTGRES_DB", "POSTGRES_USER") if not os.environ.get(name)]
if missing:
    raise RuntimeError(f"settings: {', '.join(missing)} not set")

POSTGRES_SERVER = os.environ["POSTGRES_SERVER"]
POSTGRES_PORT = int(os.environ.get("POSTGRES_PORT", "5432"))
POSTGRES_DB = os.environ["POSTGRES_DB"]
POSTGRES_USER = os.environ["POSTGRES_USER"]
POSTGRES_PASSWORD = os.environ.get("POSTGRES_PASSWORD", "")
