"""Witnesses' cosignatures on checkpoints, in an append-only table of their own.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

from ledger.store import install_triggers

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ledger_cosignatures",
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("witness", sa.String(300), nullable=False),
        sa.Column("line", sa.LargeBinary, nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("size", "witness"),
    )
    install_triggers(op.get_bind(), "ledger_cosignatures")
