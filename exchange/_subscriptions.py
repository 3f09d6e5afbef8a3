"""Wake-ups for subscribers. The database is the source of truth; this only says "look again".

A subscriber takes its agency's current event *before* it queries, so a publish that commits after
its query sets that event: no wake-up is lost, and a spurious one costs one empty query. A publish
wakes only the subscriptions of the agencies it is addressed to (the only ones it can reach,
``alerts_for``); a wake-up from another replica, or for shutdown, wakes every one.

The hub also counts open subscriptions (for the metrics) and tells them when the server is
shutting down, so that they end with UNAVAILABLE and resume elsewhere from their cursor.

A publish wakes every idle subscription of its recipients at once, all at the same cursor: the
first to ask reads the page (query, decryption, the signed-addressing check) and the others
await that same read (:meth:`Hub.shared`), which also records the delivery to all of them in
one DELIVER entry per message: the work that is the same for every recipient is done once per
wake-up, not once per stream (docs/performance.md, "Fan-out").
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Hashable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
import structlog

_log = structlog.get_logger("sinergi.subscriptions")
T = TypeVar("T")


class Hub:
    def __init__(
        self,
        observe: Callable[[int], None] | None = None,
        lag: Callable[[float], None] | None = None,
        reads: Callable[[bool], None] | None = None,
    ) -> None:
        """``reads`` is told of each page a subscription asked for: whether it joined a read
        already running (True) or ran its own (False)."""
        self._events: dict[str, asyncio.Event] = {}
        self._observe = observe
        self._lag = lag
        self._reads = reads
        self._running: dict[Hashable, tuple[asyncio.Future[Any], dict[Hashable, None]]] = {}
        self.open = 0
        self.closing = False

    def waiter(self, agency: str) -> asyncio.Event:
        event = self._events.get(agency)
        if event is None:
            event = self._events[agency] = asyncio.Event()
        return event

    def notify(self, agencies: Iterable[str] | None = None) -> None:
        """Wake the subscriptions of ``agencies`` (every subscription for None)."""
        for agency in list(self._events) if agencies is None else agencies:
            event = self._events.pop(agency, None)
            if event is not None:
                event.set()

    async def shared(
        self,
        key: Hashable,
        member: Hashable,
        read: Callable[[Callable[[], list[Any]]], Awaitable[T]],
    ) -> T:
        """The result of ``read(close)``, or of the read of ``key`` already running: every
        caller asking with the same ``key`` while it runs gets the same result (or error), and
        is one of its members. ``close()``, called by the read, ends the joining (a later caller
        starts a read of its own) and returns the members, each once, in the order they came:
        the streams a page is delivered to, recorded together before any of them sends. A
        caller that goes away (its stream cancelled) does not cancel the read for the others.

        ``key`` must name everything the read depends on (agency, cursor, filter, wake-up
        event); the results are shared, so callers must not change them."""
        running = self._running.get(key)
        joined = running is not None
        if running is None:
            members: dict[Hashable, None] = {}

            def close() -> list[Any]:
                if self._running.get(key, (None, None))[1] is members:
                    del self._running[key]
                return list(members)

            future = asyncio.ensure_future(read(close))
            running = self._running[key] = (future, members)
            future.add_done_callback(lambda done: self._finished(key, members, done))
        running[1][member] = None
        if self._reads is not None:
            self._reads(joined)
        result: T = await asyncio.shield(running[0])
        return result

    def _finished(
        self, key: Hashable, members: dict[Hashable, None], done: asyncio.Future[Any]
    ) -> None:
        if self._running.get(key, (None, None))[1] is members:  # the read failed before close
            del self._running[key]
        if not done.cancelled():
            done.exception()  # retrieved: an error every caller got is not "never retrieved"

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
    server's event loop: the subscriptions of the agencies the payload names (the alert's
    recipients, comma-separated), or all of them for an empty payload. After every
    (re)connection it wakes the hub once more: a notification sent while it was disconnected is
    lost, so subscribers look again instead.
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

    def _wake(self, agencies: list[str] | None = None) -> None:
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._hub.notify, agencies)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    self._wake()
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.5, stop_after=1):
                            self._wake(note.payload.split(",") if note.payload else None)
            except psycopg.Error:
                self.listening.clear()
                _log.warning("lost the notification connection; reconnecting")
                self._stop.wait(1.0)
