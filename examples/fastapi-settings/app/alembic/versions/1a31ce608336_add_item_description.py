"""Add item.description

Revision ID: 1a31ce608336
Revises: e2412789c190
"""

import sqlalchemy as sa
from alembic import op

revision = "1a31ce608336"
down_revision = "e2412789c190"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("item", sa.Column("description", sa.String(255)))


def downgrade() -> None:
    op.drop_column("item", "description")
