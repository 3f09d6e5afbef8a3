"""Subscriptions: several per agency, category filters, slow consumers cut off, resumption."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from certs import load_identity
from clients import ExchangeClient, new_alert
from exchange import DEFAULT_POLICY
from ledger import Action, meta
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


def _page_reads(server: RunningServer, shared: str) -> float:
    value = server.server.metrics.registry.get_sample_value(
        "sinergi_subscription_page_reads_total", {"shared": shared}
    )
    return value or 0.0


def _idle(server: RunningServer) -> float:
    return server.server.metrics.registry.get_sample_value("sinergi_subscribers_idle") or 0.0


def test_idle_subscriptions_woken_together_share_one_read_and_one_record(
    start_server: Callable[..., RunningServer], db_url: str, tmp_path: Path
) -> None:
    """Every idle subscription of an agency waits at the same cursor for the read the next
    publish to it starts (query, decryption, signed-addressing check), and one DELIVER entry,
    the exchange's own, names every principal that received it (with the certificate it
    used), where each stream wrote its own."""
    policy = tmp_path / "policy.toml"
    policy.write_text(
        DEFAULT_POLICY.read_text()
        + '\n[agencies.police.principals]\n"officer/investigator" = ["read", "subscribe"]\n'
    )
    server = start_server(db_url, policy=policy)
    streams = 12
    collectors = [
        Collector(server, "police" if n % 2 else "police-officer") for n in range(streams)
    ]
    try:
        wait_for(lambda: _idle(server) == streams, what="every subscription waiting for a publish")
        before = {shared: _page_reads(server, shared) for shared in ("yes", "no")}
        with ExchangeClient(server.pki / "immigration", server.address) as sender:
            alert_id = sender.publish(
                new_alert(category="PASSPORT_HOLD", recipients=["police"], summary="shared")
            ).alert_id
        wait_for(
            lambda: all(c.ids() == [alert_id] for c in collectors),
            what="the alert at every subscription",
        )
    finally:
        for collector in collectors:
            collector.stop()
    identities = [load_identity(server.pki / name) for name in ("police", "police-officer")]
    receivers = {f"{i.spiffe_id} {i.fingerprint}" for i in identities}
    ran = _page_reads(server, "no") - before["no"]
    joined = _page_reads(server, "yes") - before["yes"]
    # Every stream waited for the read the publish started, then waits at the next cursor: a
    # read each time, shared (PostgreSQL's NOTIFY, a second wake-up, may add an empty one).
    assert ran + joined >= streams
    assert ran <= 4, (ran, joined)
    delivered = [e for e in server.entries() if e.action is Action.DELIVER]
    assert [e.objects for e in delivered] == [(f"alert:{alert_id}",)] * len(delivered)
    named = [set(e.meta.get(meta.RECEIVED_BY, [e.actor.id])) for e in delivered]
    assert set().union(*named) >= receivers
    assert len(delivered) == 1  # every stream was waiting for the one read
    assert delivered[0].actor == server.server.actor
    assert set(delivered[0].meta[meta.RECEIVED_BY]) == receivers
