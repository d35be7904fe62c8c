"""The app's code under test: it commits, as request handlers do."""

from sqlalchemy import text
from sqlalchemy.orm import Session


def create_user(session: Session, email: str) -> None:
    session.execute(text("INSERT INTO app_users (email) VALUES (:email)"), {"email": email})
    session.commit()


def count(session: Session, like: str = "%") -> int:
    return session.execute(text("SELECT count(*) FROM app_users WHERE email LIKE :like"), {"like": like}).scalar_one()
