"""Subscriber wake-ups: a publish wakes the agencies it is addressed to, and only them."""

from __future__ import annotations

import asyncio

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
