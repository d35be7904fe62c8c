"""Pin chat sessions: chat_sessions.pinned_at and an index for the pinned list.

A pinned session has pinned_at set (the sidebar lists a user's pinned sessions
first, most recently pinned on top); unpinning sets it back to NULL.

Revision ID: 0002_chat_sessions_pinned_at
Revises: 0001_initial_schema
Create Date: 2025-02-03 10:30:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0002_chat_sessions_pinned_at"
down_revision: str | Sequence[str] | None = "0001_initial_schema"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.add_column(
        "chat_sessions",
        sa.Column(
            "pinned_at",
            sa.TIMESTAMP(timezone=True),
            nullable=True,
            comment="When the user pinned the session; NULL when not pinned",
        ),
    )
    op.create_index(
        "chat_sessions_user_id_pinned_at_idx",
        "chat_sessions",
        ["user_id", sa.text("pinned_at DESC")],
        postgresql_where=sa.text("pinned_at IS NOT NULL"),
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index("chat_sessions_user_id_pinned_at_idx", table_name="chat_sessions")
    op.drop_column("chat_sessions", "pinned_at")
