"""Subscriptions: several per agency, category filters, slow consumers cut off, resumption."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import grpc
import pytest

from clients import ExchangeClient, new_alert
from sinergi.v1 import alert_pb2, exchange_pb2
from tests.conftest import RunningServer, wait_for
from tests.integration.support import Collector, stub

BULKY = "x" * 9_000  # details near their limit, so a reader that stops fills its window fast


def test_a_slow_subscriber_blocks_no_one_and_loses_nothing(
    start_server: Callable[..., RunningServer], db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sinergi.rpc")
    # 150 publishes back to back from one identity: a load on purpose, above the default rate.
    server = start_server(db_url, stall_seconds=1.0, rate_limit=0)
    # A consumer that stops reading: with no BDP probing its flow-control window stays small.
    slow = stub(server, "police", (("grpc.http2.bdp_probe", 0),)).Subscribe(
        exchange_pb2.SubscribeRequest(after=0)
    )
    fast = Collector(server, "police")  # a second subscriber of the same agency
    other = Collector(server, "labour")
    count = 150
    try:
        with ExchangeClient(server.pki / "immigration", server.address, timeout=5) as sender:
            published = [
                sender.publish(new_alert(category="PASSPORT_HOLD", recipients=["police", "labour"],
                                         summary=f"alert {i}", details=BULKY)).alert_id
                for i in range(count)
            ]  # fmt: skip
        wait_for(lambda: fast.ids() == published, what="the fast police subscriber")
        wait_for(lambda: other.ids() == published, what="the labour subscriber")
    finally:
        fast.stop()
        other.stop()

    def cut_off() -> bool:
        lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "sinergi.rpc"]
        return any(line["event"] == "stream stalled" for line in lines)

    wait_for(cut_off, what="the stalled subscriber to be cut off")
    received: list[exchange_pb2.Delivery] = []
    with pytest.raises(grpc.RpcError) as error:
        received.extend(slow)
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "resume from the last cursor" in str(error.value.details())
    assert len(received) < count  # it really was cut off mid-stream
    # Resuming from the last cursor it saw gets the rest: nothing lost, in order.
    after = received[-1].cursor if received else 0
    resumed = stub(server, "police").Subscribe(exchange_pb2.SubscribeRequest(after=after))
    rest = [next(resumed) for _ in range(count - len(received))]
    resumed.cancel()
    assert [d.alert.id for d in received + rest] == published


def test_category_filter(server: RunningServer) -> None:
    with ExchangeClient(server.pki / "police", server.address) as police:
        imei = police.publish(new_alert(category="IMEI_FRAUD", recipients=["customs"],
                                        summary="joki IMEI")).alert_id  # fmt: skip
        police.publish(new_alert(category="PEOPLE_SMUGGLING", recipients=["customs"],
                                 summary="boat"))  # fmt: skip
        last = police.publish(new_alert(category="IMEI_FRAUD", recipients=["customs"],
                                        summary="again")).alert_id  # fmt: skip
    call = stub(server, "customs").Subscribe(
        exchange_pb2.SubscribeRequest(categories=[alert_pb2.CATEGORY_IMEI_FRAUD])
    )
    assert [next(call).alert.id for _ in range(2)] == [imei, last]
    call.cancel()
