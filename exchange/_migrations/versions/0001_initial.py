"""The first schema: ledger (append-only, with triggers) and alerts.

Revision ID: 0001
Revises:
Create Date: 2026-11-23

Tables are spelled out here rather than taken from the models, so that this revision creates
the same schema forever; tests/integration/test_database.py checks that the models still match
the migrated database. There is no downgrade: the ledger is append-only.
"""

import sqlalchemy as sa
from alembic import op

from ledger.store import install_triggers

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

POSITION = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "ledger_entries",
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "ledger_nodes",
        sa.Column("level", sa.SmallInteger, nullable=False),
        sa.Column("idx", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
        sa.PrimaryKeyConstraint("level", "idx"),
    )
    op.create_table(
        "ledger_checkpoints",
        sa.Column("size", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("note", sa.LargeBinary, nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
    )
    # The tables this revision creates (a migration never follows later schema changes).
    for table in ("ledger_entries", "ledger_nodes", "ledger_checkpoints"):
        install_triggers(op.get_bind(), table)
    op.create_table(
        "alerts",
        sa.Column("position", POSITION, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(36), nullable=False, unique=True),
        sa.Column("sender", sa.String(255), nullable=False),
        sa.Column("sender_agency", sa.String(63), nullable=False),
        sa.Column("category", sa.String(40), nullable=False),
        sa.Column("handling", sa.String(12), nullable=False),
        sa.Column("message_type", sa.String(6), nullable=False),
        sa.Column("thread_id", sa.String(36), nullable=False),
        sa.Column("sent", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires", sa.DateTime(timezone=True), nullable=True),
        sa.Column("idempotency_key", sa.String(128), nullable=False),
        sa.Column("request_digest", sa.String(64), nullable=False),
        sa.Column("publish_seq", sa.BigInteger, nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.UniqueConstraint("sender_agency", "idempotency_key", name="uq_alerts_idempotency"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_alerts_thread", "alerts", ["thread_id", "position"])
    op.create_table(
        "alert_recipients",
        sa.Column("alert_position", POSITION, sa.ForeignKey("alerts.position"), primary_key=True),
        sa.Column("agency", sa.String(63), primary_key=True),
    )
    op.create_index("ix_alert_recipients_agency", "alert_recipients", ["agency", "alert_position"])
    op.create_table(
        "alert_subjects",
        sa.Column("alert_position", POSITION, sa.ForeignKey("alerts.position"), primary_key=True),
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("thread_id", sa.String(36), nullable=False),
    )
    op.create_index("ix_alert_subjects_key", "alert_subjects", ["key"])
    op.create_table(
        "acknowledgements",
        sa.Column("id", POSITION, primary_key=True, autoincrement=True),
        sa.Column("alert_position", POSITION, sa.ForeignKey("alerts.position"), nullable=False),
        sa.Column("agency", sa.String(63), nullable=False),
        sa.Column("principal", sa.String(255), nullable=False),
        sa.Column("response", sa.String(20), nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
    )
