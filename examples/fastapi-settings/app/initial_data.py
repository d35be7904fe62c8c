"""Creates the first superuser, as the app does on a new database."""

from sqlalchemy import create_engine, text

from app.core.config import settings


def main() -> None:
    engine = create_engine(settings.SQLALCHEMY_DATABASE_URI)
    with engine.begin() as conn:
        conn.execute(
            text('INSERT INTO "user" (email, is_superuser, full_name) VALUES (:email, true, :name)'),
            {"email": settings.FIRST_SUPERUSER, "name": "Admin"},
        )
    engine.dispose()
    print(f"created the first superuser {settings.FIRST_SUPERUSER}")


if __name__ == "__main__":
    main()
