"""Wake-ups for subscribers. The database is the source of truth; this only says "look again".

A subscriber takes its agency's current event *before* it queries, so a publish that commits after
its query sets that event: no wake-up is lost, and a spurious one costs one empty query. A publish
wakes only the subscriptions of the agencies it is addressed to (the only ones it can reach,
``alerts_for``); a wake-up from another replica, or for shutdown, wakes every one.

The hub also counts open subscriptions (for the metrics) and tells them when the server is
shutting down, so that they end with UNAVAILABLE and resume elsewhere from their cursor.

A publish wakes every idle subscription of its recipients at once, all at the same cursor: the
first to ask reads the page (query, decryption, the signed-addressing check) and the others
await that same read (:meth:`Hub.shared`), so the work that is the same for every recipient is
done once per wake-up, not once per stream (docs/performance.md, "Fan-out").
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Hashable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

import psycopg
import structlog

_log = structlog.get_logger("sinergi.subscriptions")
T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


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
        self._running: dict[Hashable, asyncio.Future[Any]] = {}
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

    async def shared(self, key: Hashable, read: Callable[[], Awaitable[T]]) -> T:
        """The result of ``read()``, or of the read of ``key`` already running: every caller
        asking with the same ``key`` while it runs gets the same result (or error). A caller
        that goes away (its stream cancelled) does not cancel the read for the others.

        ``key`` must name everything the read depends on (agency, cursor, filter); the results
        are shared, so callers must not change them."""
        running = self._running.get(key)
        joined = running is not None
        if running is None:
            running = self._running[key] = asyncio.ensure_future(read())
            running.add_done_callback(lambda done: self._finished(key, done))
        if self._reads is not None:
            self._reads(joined)
        result: T = await asyncio.shield(running)
        return result

    def _finished(self, key: Hashable, done: asyncio.Future[Any]) -> None:
        if self._running.get(key) is done:
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


class Together(Generic[K]):
    """Callers that join within one turn of the event loop, handled by one call: the streams a
    shared page woke each ask for their delivery to be recorded, and one ledger entry per
    message names them all (docs/ledger-format.md, DELIVER), where each stream would write its
    own. :meth:`join` returns once ``handle`` has handled the caller's batch, or raises what
    it raised."""

    def __init__(self, handle: Callable[[list[K]], Awaitable[None]]) -> None:
        self._handle = handle
        self._open: tuple[dict[K, None], asyncio.Future[None]] | None = None
        self._task: asyncio.Task[None] | None = None  # held: the loop keeps only weak ones

    async def join(self, member: K) -> None:
        if self._open is None:
            self._open = ({}, asyncio.get_running_loop().create_future())
            self._task = asyncio.ensure_future(self._run(*self._open))
        members, done = self._open
        members[member] = None
        await asyncio.shield(done)

    async def _run(self, members: dict[K, None], done: asyncio.Future[None]) -> None:
        # The streams woken with the page run before this task: one more turn, and every one
        # of them has joined; a later caller starts a batch of its own.
        await asyncio.sleep(0)
        self._open = None
        try:
            await self._handle(list(members))
        except BaseException as exc:  # every member gets the error, as if it had called alone
            done.set_exception(exc)
            done.exception()  # retrieved here: a member that went away does not warn
        else:
            done.set_result(None)


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
