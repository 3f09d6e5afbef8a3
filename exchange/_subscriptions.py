"""Wake-ups for subscribers. The database is the source of truth; this only says "look again".

A subscriber takes the current event *before* it queries, so a publish that commits after its query
sets that event: no wake-up is lost, and a spurious one costs one empty query.

The hub also counts open subscriptions (for the metrics) and tells them when the server is
shutting down, so that they end with UNAVAILABLE and resume elsewhere from their cursor.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg
import structlog

_log = structlog.get_logger("sinergi.subscriptions")


class Hub:
    def __init__(
        self,
        observe: Callable[[int], None] | None = None,
        lag: Callable[[float], None] | None = None,
    ) -> None:
        self._event = asyncio.Event()
        self._observe = observe
        self._lag = lag
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

    def delivered(self, lag_seconds: float) -> None:
        """One message sent to a subscriber ``lag_seconds`` after it was published."""
        if self._lag is not None:
            self._lag(lag_seconds)

    def _count(self, delta: int) -> None:
        self.open += delta
        if self._observe is not None:
            self._observe(self.open)


CHANNEL = "sinergi_alerts"


class PostgresWakeups:
    """Cross-replica wake-ups: every replica LISTENs, and a publish NOTIFYs in the transaction
    that stores the alert, so the notification goes out exactly when the row is visible.

    A dedicated connection on its own thread waits for notifications and wakes the hub on the
    server's event loop. After every (re)connection it wakes the hub once more: a notification
    sent while it was disconnected is lost, so subscribers look again instead.
    """

    def __init__(self, url: str, hub: Hub, loop: asyncio.AbstractEventLoop) -> None:
        self._conninfo = url
        self._hub = hub
        self._loop = loop
        self._stop = threading.Event()
        self.listening = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-listen", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _wake(self) -> None:
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._hub.notify)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    self._wake()
                    while not self._stop.is_set():
                        if any(True for _ in conn.notifies(timeout=0.5, stop_after=1)):
                            self._wake()
            except psycopg.Error:
                self.listening.clear()
                _log.warning("lost the notification connection; reconnecting")
                self._stop.wait(1.0)
