"""Database engines for the ledger and the exchange: SQLite (embedded) and PostgreSQL.

SQLite runs in WAL mode with ``synchronous=FULL`` so that a commit is durable when it returns, and
write transactions start with ``BEGIN IMMEDIATE`` so that the writer holds the lock for the whole
batch instead of failing to upgrade a read lock midway. A SQLite connection goes back to the pool
with no statement left active (:func:`_sqlite_reset`). PostgreSQL serializes ledger appends with
a transaction-scoped advisory lock (see :func:`lock_ledger`).
"""

from __future__ import annotations

import sqlite3
import weakref
from collections.abc import Callable
from typing import Any, TypeVar, overload

import sqlalchemy
from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.engine import make_url

from ledger._errors import StorageError

WRITE = "sinergi_write"
_ADVISORY_KEY = 0x53494E45  # "SINE": one chain per database
_CursorT = TypeVar("_CursorT", bound=sqlite3.Cursor)


class _Connection(sqlite3.Connection):
    """A SQLite connection that knows its cursors, so that the pool can close those still open
    when the connection comes back (:func:`_sqlite_reset`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # noqa: ANN401 - sqlite3.connect's
        super().__init__(*args, **kwargs)
        self.cursors: weakref.WeakSet[sqlite3.Cursor] = weakref.WeakSet()

    @overload
    def cursor(self, factory: None = None) -> sqlite3.Cursor: ...
    @overload
    def cursor(self, factory: Callable[[sqlite3.Connection], _CursorT]) -> _CursorT: ...
    def cursor(
        self, factory: Callable[[sqlite3.Connection], sqlite3.Cursor] | None = None
    ) -> sqlite3.Cursor:
        made = super().cursor() if factory is None else super().cursor(factory)
        self.cursors.add(made)
        return made


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
        kwargs["connect_args"] = {"factory": _Connection, **kwargs.get("connect_args", {})}
        engine = sqlalchemy.create_engine(parsed, **kwargs)
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        event.listen(engine, "reset", _sqlite_reset)
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


def _sqlite_reset(dbapi_connection: Any, _record: object, _state: object) -> None:  # noqa: ANN401
    """Close every cursor a connection coming back to the pool left open.

    A result not read to its end (an exception while its rows were read, such as a sealed body
    that does not open) keeps its statement active, and an active statement keeps its read
    transaction whatever ROLLBACK says. The next user of the connection would read that old
    snapshot, and once anyone else wrote, its BEGIN IMMEDIATE would fail with "database is
    locked" (SQLITE_BUSY_SNAPSHOT), each time the pool handed it to the ledger writer."""
    for cursor in list(getattr(dbapi_connection, "cursors", ())):
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
