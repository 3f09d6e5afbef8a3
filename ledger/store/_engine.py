"""Database engines for the ledger and the exchange: SQLite (embedded) and PostgreSQL.

SQLite runs in WAL mode with ``synchronous=FULL`` so that a commit is durable when it returns, and
write transactions start with ``BEGIN IMMEDIATE`` so that the writer holds the lock for the whole
batch instead of failing to upgrade a read lock midway. PostgreSQL serializes ledger appends with a
transaction-scoped advisory lock (see :func:`lock_ledger`).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy
from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.engine import make_url

from ledger._errors import StorageError

WRITE = "sinergi_write"
_ADVISORY_KEY = 0x53494E45  # "SINE": one chain per database


def create_engine(url: str, **kwargs: Any) -> Engine:  # noqa: ANN401 - passed to SQLAlchemy
    """An engine for ``url`` (``sqlite:///path`` or ``postgresql+psycopg://...``)."""
    try:
        parsed = make_url(url)
    except sqlalchemy.exc.ArgumentError as exc:
        raise StorageError(f"not a database URL: {exc}") from None
    backend = parsed.get_backend_name()
    # Statement parameters are alert contents (personal data): keep them out of error messages,
    # which end up in logs.
    kwargs.setdefault("hide_parameters", True)
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise StorageError("an in-memory SQLite database cannot hold a ledger; name a file")
        engine = sqlalchemy.create_engine(parsed, **kwargs)
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        kwargs.setdefault("pool_pre_ping", True)
        return sqlalchemy.create_engine(parsed, **kwargs)
    raise StorageError(f"unsupported database {backend!r}: use sqlite:/// or postgresql+psycopg://")


def _sqlite_connect(dbapi_connection: Any, _record: object) -> None:  # noqa: ANN401
    # Let SQLAlchemy's begin event issue BEGIN itself (SQLAlchemy docs, "Serializable isolation /
    # Savepoints / Transactional DDL" for pysqlite).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in (
        "journal_mode=WAL",
        "synchronous=FULL",
        "foreign_keys=ON",
        "secure_delete=ON",  # freed pages are zeroed: a purge leaves no personal data behind
        "busy_timeout=30000",
    ):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    immediate = connection.get_execution_options().get(WRITE, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def writing(connection: Connection) -> Connection:
    """Mark ``connection`` as a writer before it begins (``BEGIN IMMEDIATE`` on SQLite)."""
    return connection.execution_options(**{WRITE: True})


def lock_ledger(connection: Connection) -> None:
    """Serialize ledger appends across processes for the rest of this transaction."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_KEY})
    # SQLite: BEGIN IMMEDIATE already holds the database's single write lock.


def snapshot(connection: Connection) -> Connection:
    """``connection`` reading one snapshot for its whole transaction: REPEATABLE READ on
    PostgreSQL, whose default READ COMMITTED takes a new one per statement; a SQLite
    transaction always reads one."""
    if connection.dialect.name == "postgresql":
        return connection.execution_options(isolation_level="REPEATABLE READ")
    return connection
