"""Subscriber wake-ups: a publish wakes the agencies it is addressed to, and only them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

from exchange import _subscriptions
from exchange._errors import Unavailable
from exchange._subscriptions import Hub


def test_a_publish_wakes_only_its_recipients() -> None:
    async def scenario() -> None:
        hub = Hub()
        police, labour = hub.waiter("police"), hub.waiter("labour")
        assert hub.waiter("police") is police  # subscriptions of one agency share the event
        hub.notify(["police", "customs"])  # customs has no subscription: nothing to wake
        assert police.is_set()
        assert not labour.is_set()
        again = hub.waiter("police")
        assert again is not police  # the next wait is for the next publish
        assert not again.is_set()
        hub.notify()  # another replica's wake-up, or shutdown: everyone looks again
        assert again.is_set()
        assert labour.is_set()

    asyncio.run(scenario())


def test_a_subscriber_that_took_its_event_before_querying_misses_nothing() -> None:
    """The event is taken before the query: a publish committed during the query sets it."""

    async def scenario() -> None:
        hub = Hub()
        taken = hub.waiter("police")
        hub.notify(["police"])  # commits while the subscriber queries
        await asyncio.wait_for(taken.wait(), 1)

    asyncio.run(scenario())


Close = Callable[[], list[Any]]


def _counting_read(calls: list[str], result: str) -> Callable[[Close], Awaitable[Any]]:
    async def read(close: Close) -> tuple[str, list[Any]]:
        calls.append(result)
        return result, close()

    return read


def _waiting(
    hub: Hub, calls: list[str], member: str = "s", cursor: int = 1, result: str = "p"
) -> asyncio.Future[Any]:
    """A police stream at ``cursor`` waiting for the next publish to police."""
    read = _counting_read(calls, result)
    after = hub.waiter("police")
    return asyncio.ensure_future(hub.page("police", ("police", cursor), member, read, after=after))


def test_idle_streams_wait_for_the_read_the_next_publish_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Streams waiting after an event share one read that starts only when a publish sets it:
    nothing is read before, each is woken once, by the page, and the read names them all. It
    starts at once: every stream it expects is there, none to gather."""
    monkeypatch.setattr(_subscriptions, "GATHER_SECONDS", 3600.0)

    async def scenario() -> None:
        reads: list[bool] = []
        hub = Hub(reads=reads.append)
        calls: list[str] = []
        event = hub.waiter("police")
        streams = [
            asyncio.ensure_future(
                hub.page("police", ("police", 7), f"s{i}", _counting_read(calls, "p"), after=event)
            )
            for i in range(3)
        ]
        await asyncio.sleep(0)  # every stream is now waiting
        assert calls == []
        assert not any(s.done() for s in streams)
        hub.notify(["labour"])  # another agency's publish starts nothing
        await asyncio.sleep(0)
        assert calls == []
        hub.notify(["police"])
        results = await asyncio.wait_for(asyncio.gather(*streams), 5)
        assert calls == ["p"]  # one read for the three
        next_event = hub.waiter("police")
        assert next_event is not event
        assert not next_event.is_set()
        for (page, members), wake, streams in results:
            assert streams == 3  # what their next read gathers
            assert page == "p"
            assert members == ["s0", "s1", "s2"]
            assert wake is next_event  # taken when the read started: what to wait for next
        assert reads == [False, True, True]

    asyncio.run(scenario())


def test_a_publish_during_a_read_wakes_the_next_one() -> None:
    """The event returned with a page is the one taken as its read started: a publish committed
    while the read ran sets it, so the stream reads again instead of waiting."""

    async def scenario() -> None:
        hub = Hub()
        gate = asyncio.Event()

        async def read(close: Close) -> list[Any]:
            await gate.wait()
            return close()

        reading = asyncio.ensure_future(hub.page("police", ("police", 1), "s", read))
        await asyncio.sleep(0)
        hub.notify(["police"])  # commits while the read runs
        gate.set()
        _, wake, _ = await reading
        assert wake.is_set()
        calls: list[str] = []
        # Waiting for a set event reads at once.
        _page, _, _ = await asyncio.wait_for(
            hub.page("police", ("police", 2), "s", _counting_read(calls, "q"), after=wake), 1
        )
        assert calls == ["q"]

    asyncio.run(scenario())


def test_a_cancelled_stream_cancels_neither_the_read_nor_the_others() -> None:
    async def scenario() -> None:
        hub = Hub()
        calls: list[str] = []
        gone, stays = _waiting(hub, calls, "a"), _waiting(hub, calls, "b")
        await asyncio.sleep(0)
        gone.cancel()
        hub.notify(["police"])
        (page, _members), _, _ = await stays
        assert page == "p"
        assert calls == ["p"]
        assert gone.cancelled()

        # When every waiting stream is gone, the publish starts no read.
        lone = _waiting(hub, calls, "c", cursor=2)
        await asyncio.sleep(0)
        lone.cancel()
        await asyncio.sleep(0)
        hub.notify(["police"])
        await asyncio.sleep(0)
        assert calls == ["p"]

    asyncio.run(scenario())


def test_shutdown_ends_waiting_streams_unavailable_without_reading() -> None:
    async def scenario() -> None:
        hub = Hub()
        calls: list[str] = []
        waiting = _waiting(hub, calls)
        await asyncio.sleep(0)
        hub.close()
        with pytest.raises(Unavailable) as ended:
            await waiting
        assert ended.value.code is grpc.StatusCode.UNAVAILABLE
        assert calls == []
        assert hub.closing

    asyncio.run(scenario())


def test_a_failed_read_fails_every_stream_that_shared_it() -> None:
    async def scenario() -> None:
        hub = Hub()

        async def read(close: Close) -> None:
            close()
            raise RuntimeError("database gone")

        event = hub.waiter("police")
        streams = [
            asyncio.ensure_future(hub.page("police", ("police", 1), f"s{i}", read, after=event))
            for i in range(2)
        ]
        await asyncio.sleep(0)
        hub.notify(["police"])
        outcomes = await asyncio.gather(*streams, return_exceptions=True)
        assert all(isinstance(o, RuntimeError) for o in outcomes)

    asyncio.run(scenario())


def test_two_wake_ups_for_one_commit_cost_one_read() -> None:
    """A commit wakes its recipients twice on PostgreSQL (this process, then the NOTIFY): the
    second, right after, finds no event and starts nothing, and the page's event stays unset."""

    async def scenario() -> None:
        hub = Hub()
        calls: list[str] = []
        waiting = _waiting(hub, calls)
        await asyncio.sleep(0)
        hub.notify(["police"])
        hub.notify(["police"])
        _, wake, _ = await waiting
        assert calls == ["p"]
        assert not wake.is_set()  # nothing to read again

    asyncio.run(scenario())


def test_the_streams_of_a_page_gather_for_the_next_one() -> None:
    """Streams that got one page ask for the next at different times (each sends at its own
    pace): the read waits for all of them, so they stay one group with one read, where each
    asking at once would have split them."""

    async def scenario() -> None:
        hub = Hub()
        calls: list[str] = []
        read = _counting_read(calls, "next")
        key = ("police", 5)
        first = asyncio.ensure_future(hub.page("police", key, "a", read, expect=3))
        second = asyncio.ensure_future(hub.page("police", key, "b", read, expect=3))
        await asyncio.sleep(0)
        assert calls == []  # two of three: still gathering
        third = asyncio.ensure_future(hub.page("police", key, "c", read, expect=3))
        results = await asyncio.gather(first, second, third)
        assert calls == ["next"]
        assert [streams for _, _, streams in results] == [3, 3, 3]

    asyncio.run(scenario())


def test_a_read_does_not_wait_long_for_a_stream_that_is_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_subscriptions, "GATHER_SECONDS", 0.01)

    async def scenario() -> None:
        hub = Hub()
        calls: list[str] = []
        (page, members), _, streams = await asyncio.wait_for(
            hub.page("police", ("police", 5), "a", _counting_read(calls, "p"), expect=3), 5
        )
        assert page == "p"
        assert members == ["a"]
        assert streams == 1  # the next read gathers one

    asyncio.run(scenario())
