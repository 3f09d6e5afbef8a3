"""The alert tables (alerts, their recipients and search keys, acknowledgements), defined once
for the code that reads and writes them; the migrations in ``_migrations/`` create them.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)

metadata = MetaData()

_Position = BigInteger().with_variant(Integer, "sqlite")

alerts = Table(
    "alerts",
    metadata,
    Column("position", _Position, primary_key=True, autoincrement=True),
    Column("id", String(36), nullable=False, unique=True),
    Column("sender", String(255), nullable=False),
    Column("sender_agency", String(63), nullable=False),
    Column("category", String(40), nullable=False),
    Column("handling", String(12), nullable=False),
    Column("message_type", String(6), nullable=False),  # ALERT, UPDATE or CANCEL
    Column("thread_id", String(36), nullable=False),  # the original alert's id (its own, if ALERT)
    Column("sent", DateTime(timezone=True), nullable=False),
    Column("expires", DateTime(timezone=True), nullable=True),
    Column("idempotency_key", String(128), nullable=False),
    Column("request_digest", String(64), nullable=False),
    Column("publish_seq", BigInteger, nullable=False),
    Column("body", LargeBinary, nullable=False),  # plaintext, or sealed (exchange/_sealing.py)
    Column("key_id", String(16), nullable=True),  # the KEK that wrapped the data key; NULL: plain
    Column("wrapped_key", LargeBinary, nullable=True),
    UniqueConstraint("sender_agency", "idempotency_key", name="uq_alerts_idempotency"),
    Index("ix_alerts_thread", "thread_id", "position"),
    sqlite_autoincrement=True,
)

# Search keys: a keyed hash (a blind index: HMAC-SHA256 under a key derived from the KEK) of each
# normalised subject identifier, or its plain SHA-256 without a KEK (exchange/_search.py);
# exact-match only, and a retention purge removes it with the alert.
alert_subjects = Table(
    "alert_subjects",
    metadata,
    Column("alert_position", _Position, ForeignKey("alerts.position"), primary_key=True),
    Column("key", String(64), primary_key=True),
    Column("thread_id", String(36), nullable=False),
    Index("ix_alert_subjects_key", "key"),
)

alert_recipients = Table(
    "alert_recipients",
    metadata,
    Column("alert_position", _Position, ForeignKey("alerts.position"), primary_key=True),
    Column("agency", String(63), primary_key=True),
    Index("ix_alert_recipients_agency", "agency", "alert_position"),
)

#: The numbers PUBLISH, UPDATE and CANCEL entries give their recipients: the n-th entry addressed
#: to an agency records n in ``meta.to_index``, so that agency's monitor sees a gap when an entry
#: addressed to it is kept from it (docs/ledger-format.md, section 1.1). Written in the ledger's
#: transaction, insert only; a row deleted or added by hand shows as a gap or a repeat in the
#: ledger, which the monitor or ``verify`` refuses.
envelope_numbers = Table(
    "envelope_numbers",
    metadata,
    Column("agency", String(63), primary_key=True),
    Column("number", BigInteger, primary_key=True),
    Column("seq", BigInteger, nullable=False),
)

#: What a read checks against the statement a thread's sender signed, and the alarm names when
#: one disagrees (exchange/_visibility.py): the alert rows a database administrator can change,
#: and the fields of the stored message. A fixed set, so the alarm's metric label stays bounded.
TAMPERED_FIELDS = (
    "alerts.id",
    "alerts.message_type",
    "alerts.thread_id",
    "alerts.sender_agency",
    "alerts.category",
    "alerts.handling",
    "alert_recipients",
    "message.statement",
    "message.sender",
    "message.references",
    "message.category",
    "message.handling",
    "message.recipients",
)

acknowledgements = Table(
    "acknowledgements",
    metadata,
    Column("id", _Position, primary_key=True, autoincrement=True),
    Column("alert_position", _Position, ForeignKey("alerts.position"), nullable=False),
    Column("agency", String(63), nullable=False),
    Column("principal", String(255), nullable=False),
    Column("response", String(20), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("time", DateTime(timezone=True), nullable=False),
    Column("key_id", String(16), nullable=True),
    Column("wrapped_key", LargeBinary, nullable=True),
    # a retried acknowledgement (same agency and key) is answered with the first one
    Column("idempotency_key", String(128), nullable=True),
    Column("request_digest", String(64), nullable=True),
    Column("ack_seq", BigInteger, nullable=True),
    Index("uq_acknowledgements_idempotency", "agency", "idempotency_key", unique=True),
)
