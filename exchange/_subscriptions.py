"""Wake-ups for subscribers. The database is the source of truth; this only says "look again".

A read is started under its agency's current event, so a publish that commits after the read
began sets that event: no wake-up is lost, and a spurious one costs one empty query. A publish
wakes only the subscriptions of the agencies it is addressed to (the only ones it can reach,
``alerts_for``); a wake-up from another replica, or for shutdown, wakes every one.

The hub also counts open subscriptions (for the metrics) and tells them when the server is
shutting down, so that they end with UNAVAILABLE and resume elsewhere from their cursor.

The idle subscriptions of an agency all wait, at the same cursor, for the same read, which a
publish to the agency starts (:meth:`Hub.page`): one query, decryption and signed-addressing
check, and one DELIVER entry per message naming them all. The work that is the same for every
recipient is done once per wake-up, not once per stream, and each stream is woken once, by its
page (docs/performance.md, "Fan-out").
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Hashable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
import structlog

from exchange._errors import Unavailable

_log = structlog.get_logger("sinergi.subscriptions")
T = TypeVar("T")
SHUTTING_DOWN = "server shutting down; resume from your last cursor"
#: How long a read waits for the streams of the last page to ask for the next one: the slowest
#: of them to send it, or one gone, holds the others no longer than this.
GATHER_SECONDS = 0.05


class Hub:
    def __init__(
        self,
        observe: Callable[[int], None] | None = None,
        lag: Callable[[float], None] | None = None,
        reads: Callable[[bool], None] | None = None,
    ) -> None:
        """``reads`` is told of each page a subscription asked for: whether it joined a read
        already running or waiting (True) or ran its own (False)."""
        self._events: dict[str, asyncio.Event] = {}
        self._observe = observe
        self._lag = lag
        self._reads = reads
        self._running: dict[Hashable, _Read] = {}  # by (key, the event it started under)
        self._waiting: dict[asyncio.Event, dict[Hashable, _Read]] = {}  # start once it is set
        self._gathering: dict[Hashable, _Read] = {}  # start once their streams have asked
        self.open = 0
        self.closing = False

    def waiter(self, agency: str) -> asyncio.Event:
        """``agency``'s current event: set by the next publish to it (or any wake-up)."""
        event = self._events.get(agency)
        if event is None:
            event = self._events[agency] = asyncio.Event()
        return event

    def notify(self, agencies: Iterable[str] | None = None) -> None:
        """Wake the subscriptions of ``agencies`` (every subscription for None): the reads
        waiting for their events start on the next turn of the event loop, so that a second
        wake-up for the same commit right after (this process's and PostgreSQL's) finds no
        event and costs no second read."""
        for agency in list(self._events) if agencies is None else agencies:
            event = self._events.pop(agency, None)
            if event is None:
                continue
            event.set()
            waiting = self._waiting.pop(event, None)
            if waiting:
                asyncio.get_running_loop().call_soon(self._start_waiting, agency, waiting)

    def _start_waiting(self, agency: str, waiting: dict[Hashable, _Read]) -> None:
        for key, read in waiting.items():
            running = self._running.get((key, self.waiter(agency)))
            if running is not None:  # a stream that found the event set has started it: join
                running.join(read)
                continue
            gathering = self._gathering.get(key)
            if gathering is None:
                self._gather(agency, key, read)
                gathering = read
            else:  # streams that found the event set are gathering for it: together
                gathering.join(read)
            self._go_if_all(agency, key, gathering)  # idle streams: all there, at once

    async def page(
        self,
        agency: str,
        key: Hashable,
        member: Hashable,
        read: Callable[[Callable[[], list[Any]]], Awaitable[T]],
        *,
        after: asyncio.Event | None = None,
        expect: int = 1,
    ) -> tuple[T, asyncio.Event, int]:
        """The result of ``read(close)`` for ``key``, shared; the event taken when that read
        started (anything committed since sets it: what to wait for next); and how many
        streams it served (the ``expect`` of their next page).

        Every caller asking for ``key`` while its read runs under the agency's current event,
        waits for ``after``, or gathers, gets the same result (or error) and is one of its
        members. With ``after`` not yet set, the read starts when it is (a publish to
        ``agency``): an idle stream is woken once, by its page, instead of first by the event
        and then by the read. A read otherwise gathers before it starts: until ``expect``
        streams (those its last page went to) ask for it, or :data:`GATHER_SECONDS`. So the
        streams of a page stay together however long each takes to send it: one read and one
        DELIVER record per page for all of them, where streams that each asked the moment they
        were done drifted apart, each group with reads and records of its own.

        ``close()``, called by the read, ends the joining (a later caller starts a read of its
        own) and returns the members, each once, in the order they came: the streams a page is
        delivered to, recorded together before any of them sends. A caller that goes away (its
        stream cancelled) cancels neither the read nor the others.

        ``key`` must name everything the read depends on (agency, cursor, filter); the results
        are shared, so callers must not change them."""
        if after is not None and not after.is_set():
            waiting = self._waiting.setdefault(after, {})
            running = waiting.get(key)
            joined = running is not None
            if running is None:
                running = waiting[key] = _Read(read)
            gathering = False
        else:
            running = self._running.get((key, self.waiter(agency)))
            if running is None:
                running = self._gathering.get(key)
                gathering = True
                joined = running is not None
                if running is None:
                    running = _Read(read)
                    self._gather(agency, key, running)
            else:
                joined, gathering = True, False
        running.expect = max(running.expect, expect)
        running.members[member] = None
        if self._reads is not None:
            self._reads(joined)
        # Its own future, not the read's: a stream cancelled while waiting cancels only this.
        waiter: asyncio.Future[tuple[T, asyncio.Event, int]]
        waiter = asyncio.get_running_loop().create_future()
        running.waiters.append(waiter)
        if gathering:
            self._go_if_all(agency, key, running)
        return await waiter

    def _gather(self, agency: str, key: Hashable, read: _Read) -> None:
        self._gathering[key] = read
        loop = asyncio.get_running_loop()
        read.timer = loop.call_later(GATHER_SECONDS, self._go, agency, key, read)

    def _go_if_all(self, agency: str, key: Hashable, read: _Read) -> None:
        if len(read.waiters) >= read.expect:
            self._go(agency, key, read)

    def _go(self, agency: str, key: Hashable, read: _Read) -> None:
        if self._gathering.get(key) is not read:  # started already
            return
        del self._gathering[key]
        if read.timer is not None:
            read.timer.cancel()
        if self.closing:
            read.end(Unavailable(SHUTTING_DOWN))
        elif not all(waiter.done() for waiter in read.waiters):  # someone still waits
            self._start(agency, key, read)

    def _start(self, agency: str, key: Hashable, running: _Read) -> None:
        wake = self.waiter(agency)  # taken as the read starts: set by what commits after
        started = (key, wake)
        self._running[started] = running

        def close() -> list[Any]:
            if self._running.get(started) is running:
                del self._running[started]
            return list(running.members)

        task = asyncio.ensure_future(running.read(close))
        task.add_done_callback(lambda done: self._finished(started, running, wake, done))

    def _finished(
        self, started: Hashable, running: _Read, wake: asyncio.Event, done: asyncio.Future[Any]
    ) -> None:
        if self._running.get(started) is running:  # the read failed before close
            del self._running[started]
        for waiter in running.waiters:
            if waiter.done():  # its stream ended while it waited
                continue
            if done.cancelled():
                waiter.cancel()
            elif (error := done.exception()) is not None:
                waiter.set_exception(error)
            else:
                waiter.set_result((done.result(), wake, len(running.waiters)))
        if not done.cancelled():
            done.exception()  # retrieved: an error every caller got is not "never retrieved"

    def close(self) -> None:
        """Wake every subscriber for the last time: the server is shutting down. Reads waiting
        for a publish do not start: their streams end UNAVAILABLE, to resume elsewhere."""
        self.closing = True
        waiting, self._waiting = self._waiting, {}
        for reads in waiting.values():
            for read in reads.values():
                read.end(Unavailable(SHUTTING_DOWN))
        gathering, self._gathering = self._gathering, {}
        for read in gathering.values():
            if read.timer is not None:
                read.timer.cancel()
            read.end(Unavailable(SHUTTING_DOWN))
        self.notify()

    def idle(self) -> int:
        """Streams waiting for the next publish to their agency (the others are reading or
        sending). Safe to call from another thread (the metrics' scrape): it reads copies."""
        return sum(
            1
            for reads in list(self._waiting.values())
            for read in list(reads.values())
            for waiter in list(read.waiters)
            if not waiter.done()
        )

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


class _Read:
    """A shared read, running or waiting to start: its members (for the DELIVER entry, each
    once, in the order they came) and the futures of the streams awaiting it (one per stream)."""

    __slots__ = ("expect", "members", "read", "timer", "waiters")

    def __init__(self, read: Callable[[Callable[[], list[Any]]], Awaitable[Any]]) -> None:
        self.read = read
        self.members: dict[Hashable, None] = {}
        self.waiters: list[asyncio.Future[Any]] = []
        self.expect = 1  # streams to gather before it starts
        self.timer: asyncio.TimerHandle | None = None

    def join(self, other: _Read) -> None:
        """Take ``other``'s streams: one read for both."""
        self.members.update(other.members)
        self.waiters.extend(other.waiters)
        self.expect = max(self.expect, other.expect)

    def end(self, error: Exception) -> None:
        """Its streams get ``error`` instead of a page (the read never runs)."""
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_exception(error)


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
