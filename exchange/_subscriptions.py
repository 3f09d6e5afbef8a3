"""Wake-ups for subscribers. The database is the source of truth; this only says "look again".

A subscriber takes the current event *before* it queries, so a publish that commits after its query
sets that event: no wake-up is lost, and a spurious one costs one empty query.

The hub also counts open subscriptions (for the metrics) and tells them when the server is
shutting down, so that they end with UNAVAILABLE and resume elsewhere from their cursor.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Hub:
    def __init__(self, observe: Callable[[int], None] | None = None) -> None:
        self._event = asyncio.Event()
        self._observe = observe
        self.open = 0
        self.closing = False

    def waiter(self) -> asyncio.Event:
        return self._event

    def notify(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    def close(self) -> None:
        """Wake every subscriber for the last time: the server is shutting down."""
        self.closing = True
        self.notify()

    @contextmanager
    def subscription(self) -> Iterator[None]:
        self._count(1)
        try:
            yield
        finally:
            self._count(-1)

    def _count(self, delta: int) -> None:
        self.open += delta
        if self._observe is not None:
            self._observe(self.open)
