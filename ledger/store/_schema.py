"""The ledger's tables, and the database triggers that make them append-only.

The triggers are part of the schema itself, so every database created by Sinergi refuses UPDATE
and DELETE on the ledger (and TRUNCATE on PostgreSQL) even to code that bypasses ours. They do not
stop a database superuser, who can drop them: that is what the signed checkpoints held outside
the database are for (docs/ledger-format.md).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    DateTime,
    Engine,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    event,
    text,
)

metadata = MetaData()

entries = Table(
    "ledger_entries",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", LargeBinary(32), nullable=False),
    Column("body", LargeBinary, nullable=False),
)

# Every perfect subtree of the RFC 6962 tree: (level, index) covers leaves
# [index * 2**level, (index + 1) * 2**level). Proofs and roots read O(log n) of them.
nodes = Table(
    "ledger_nodes",
    metadata,
    Column("level", SmallInteger, nullable=False),
    Column("idx", BigInteger, nullable=False),
    Column("hash", LargeBinary(32), nullable=False),
    PrimaryKeyConstraint("level", "idx"),
)

checkpoints = Table(
    "ledger_checkpoints",
    metadata,
    Column("size", BigInteger, primary_key=True, autoincrement=False),
    Column("note", LargeBinary, nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
)

# Witnesses' cosignature lines (C2SP tlog-cosignature) on a stored checkpoint, one per witness
# key ("<name>+<hex key ID>"): the checkpoint's note with them appended is the cosigned note.
cosignatures = Table(
    "ledger_cosignatures",
    metadata,
    Column("size", BigInteger, nullable=False),
    Column("witness", String(300), nullable=False),
    Column("line", LargeBinary, nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("size", "witness"),
)

APPEND_ONLY_TABLES = (entries.name, nodes.name, checkpoints.name, cosignatures.name)

_PG_FUNCTION = """
CREATE OR REPLACE FUNCTION sinergi_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'table % is append-only', TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
END $$
"""


def trigger_names(table: str) -> tuple[str, ...]:
    """Names of the triggers that guard ``table``; `verify` checks they are all present."""
    return (f"{table}_no_update", f"{table}_no_delete")


def _create_triggers(target: Table, connection: Connection, **_: object) -> None:
    install_triggers(connection, target.name)


def install_triggers(connection: Connection, table: str) -> None:
    """Make ``table`` refuse UPDATE and DELETE (and TRUNCATE on PostgreSQL); migrations call it
    for each of :data:`APPEND_ONLY_TABLES`."""
    no_update, no_delete = trigger_names(table)
    if connection.dialect.name == "sqlite":
        for name, op in ((no_update, "UPDATE"), (no_delete, "DELETE")):
            connection.execute(
                text(
                    f"CREATE TRIGGER {name} BEFORE {op} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
                )
            )
    elif connection.dialect.name == "postgresql":
        connection.execute(text(_PG_FUNCTION))
        for name, op in ((no_update, "UPDATE"), (no_delete, "DELETE")):
            connection.execute(
                text(
                    f"CREATE TRIGGER {name} BEFORE {op} ON {table} "
                    "FOR EACH ROW EXECUTE FUNCTION sinergi_append_only()"
                )
            )
        connection.execute(
            text(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION sinergi_append_only()"
            )
        )
    else:  # pragma: no cover - the engine factory accepts only the two
        raise NotImplementedError(connection.dialect.name)


for _table in (entries, nodes, checkpoints, cosignatures):
    event.listen(_table, "after_create", _create_triggers)


def create_schema(engine: Engine) -> None:
    """Create the ledger tables and their triggers if absent (idempotent)."""
    metadata.create_all(engine)


def missing_triggers(connection: Connection) -> list[str]:
    """The append-only triggers that should exist and do not."""
    expected = {name for table in APPEND_ONLY_TABLES for name in trigger_names(table)}
    if connection.dialect.name == "sqlite":
        rows = connection.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'"))
    else:
        rows = connection.execute(
            text("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal AND tgenabled <> 'D'")
        )
    present = {row[0] for row in rows}
    return sorted(expected - present)
