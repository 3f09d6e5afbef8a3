"""The number each PUBLISH, UPDATE and CANCEL entry gives each agency it is addressed to
(``meta.to_index``, docs/ledger-format.md, section 1.1), one row per agency and number: insert
only, so the exchange's database role needs no UPDATE for it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "envelope_numbers",
        sa.Column("agency", sa.String(63), nullable=False),
        sa.Column("number", sa.BigInteger, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("agency", "number"),
    )


def downgrade() -> None:
    op.drop_table("envelope_numbers")
