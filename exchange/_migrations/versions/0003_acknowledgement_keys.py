"""Acknowledgements take an idempotency key, so that a retried acknowledgement is recorded once.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("acknowledgements", sa.Column("idempotency_key", sa.String(128), nullable=True))
    op.add_column("acknowledgements", sa.Column("request_digest", sa.String(64), nullable=True))
    op.add_column("acknowledgements", sa.Column("ack_seq", sa.BigInteger, nullable=True))
    op.create_index(
        "uq_acknowledgements_idempotency",
        "acknowledgements",
        ["agency", "idempotency_key"],
        unique=True,
    )
