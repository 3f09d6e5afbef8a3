"""Bodies encrypted at rest: the wrapping key's id and the wrapped data key, per row.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23

NULL in both columns means the body is stored in plain (rows written before a key-encryption
key was configured, or by a server run without one); exchange/_sealing.py describes the rest.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("alerts", "acknowledgements"):  # ADD COLUMN: SQLite needs no table copy
        op.add_column(table, sa.Column("key_id", sa.String(16), nullable=True))
        op.add_column(table, sa.Column("wrapped_key", sa.LargeBinary, nullable=True))
