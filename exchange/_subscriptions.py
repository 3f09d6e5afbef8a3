"""Wake-ups for subscribers. The database is the source of truth; this only says "look again".

A subscriber takes the current event *before* it queries, so a publish that commits after its query
sets that event: no wake-up is lost, and a spurious one costs one empty query.
"""

from __future__ import annotations

import asyncio


class Hub:
    def __init__(self) -> None:
        self._event = asyncio.Event()

    def waiter(self) -> asyncio.Event:
        return self._event

    def notify(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()
