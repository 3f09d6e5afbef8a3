"""Database reads from the event loop: run in a worker thread, so the loop never waits on the
database, and answered UNAVAILABLE (not INTERNAL) when the database cannot be reached.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from exchange._errors import Unavailable

T = TypeVar("T")


async def read(engine: Engine, query: Callable[[Connection], T]) -> T:
    """Run ``query`` on a pooled connection in a thread."""

    def run() -> T:
        with engine.connect() as connection:
            return query(connection)

    try:
        return await asyncio.to_thread(run)
    except SQLAlchemyError as exc:
        raise Unavailable("the database is unavailable; retry later") from exc
