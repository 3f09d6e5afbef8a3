"""The client library across a network that fails: a real exchange over mTLS on 127.0.0.1, reached
through a TCP proxy the test cuts, so the client meets real dropped connections."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from clients import NO_RETRY, ExchangeClient, Refused, RetryPolicy, Unreachable, new_alert
from ledger import Action
from sinergi.v1 import alert_pb2
from tests.clients.cutting_proxy import CuttingProxy
from tests.clients.lying_server import LyingServer
from tests.conftest import RunningServer, wait_for
from tests.integration.support import Collector

Start = Callable[..., RunningServer]


@dataclass(frozen=True)
class Via:
    """The exchange as reached through the proxy (an endpoint for :class:`Collector`)."""

    address: str
    pki: Path


@pytest.fixture
def exchange(start_server: Start, sqlite_url: str) -> RunningServer:
    return start_server(sqlite_url)


@pytest.fixture
def proxy(exchange: RunningServer) -> Iterator[CuttingProxy]:
    host, port = exchange.address.rsplit(":", 1)
    cutter = CuttingProxy(host, int(port))
    cutter.open()
    yield cutter
    cutter.shutdown()


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(2) as executor:
        yield executor


def _alert(summary: str = "Applicant recruited by an unlicensed agent") -> alert_pb2.Alert:
    return new_alert(category="PASSPORT_HOLD", recipients=["police"], summary=summary)


def _actions(server: RunningServer, action: Action) -> list[tuple[str, ...]]:
    return [e.objects for e in server.entries() if e.action is action]


def _alert_rows(server: RunningServer) -> int:
    with sqlite3.connect(server.database.removeprefix("sqlite:///")) as connection:
        (count,) = connection.execute("SELECT COUNT(*) FROM alerts").fetchone()
    return int(count)


def _cut_after_the_server_acted(
    proxy: CuttingProxy, server: RunningServer, action: Action, count: int
) -> None:
    """Wait until the exchange has recorded the act whose reply is being lost, then cut the
    connection and let new ones through: the client sees UNAVAILABLE for a write that happened."""
    wait_for(lambda: len(_actions(server, action)) == count, what=f"{count} {action} entries")
    proxy.close()
    proxy.lose_replies = False
    proxy.open()


def test_publish_whose_reply_was_lost_is_retried_and_stored_once(
    exchange: RunningServer, proxy: CuttingProxy, pool: ThreadPoolExecutor
) -> None:
    via = f"127.0.0.1:{proxy.port}"
    with ExchangeClient(exchange.pki / "immigration", via, timeout=30) as client:
        client.checkpoint()  # connected before the replies go missing
        proxy.lose_replies = True
        publishing = pool.submit(client.publish, _alert())
        _cut_after_the_server_acted(proxy, exchange, Action.PUBLISH, 1)
        result = publishing.result(30)

    assert _actions(exchange, Action.PUBLISH) == [(f"alert:{result.alert_id}",)]
    assert _alert_rows(exchange) == 1
    assert result.receipt.entry.objects == (f"alert:{result.alert_id}",)


def test_without_retries_the_outcome_is_unknown_until_the_same_key_is_sent_again(
    exchange: RunningServer, proxy: CuttingProxy, pool: ThreadPoolExecutor
) -> None:
    """The counterpart of the test above: the lost reply really is lost, and the idempotency key
    is what makes the second attempt safe."""
    via = f"127.0.0.1:{proxy.port}"
    with ExchangeClient(exchange.pki / "immigration", via, retry=NO_RETRY) as client:
        client.checkpoint()
        proxy.lose_replies = True
        publishing: Future[object] = pool.submit(client.publish, _alert(), idempotency_key="k-1")
        _cut_after_the_server_acted(proxy, exchange, Action.PUBLISH, 1)
        with pytest.raises(Unreachable):
            publishing.result(30)
        again = client.publish(_alert(), idempotency_key="k-1")

    assert _actions(exchange, Action.PUBLISH) == [(f"alert:{again.alert_id}",)]
    assert _alert_rows(exchange) == 1


def test_writes_answered_after_their_deadline_report_what_was_committed(
    exchange: RunningServer, pki: Path
) -> None:
    """An exchange too loaded to answer before the deadline, which committed all the same: the
    caller is not told "failed" for an alert that went out. The write is asked once more under
    its key and the answer is the committed one; nothing is recorded twice. Without retries the
    deadline is the answer."""
    late = LyingServer(exchange.address, pki, pki / "immigration")
    late.start()
    try:
        late.late = {"Publish": 1, "Acknowledge": 1}
        with ExchangeClient(pki / "immigration", late.address, timeout=2) as client:
            published = client.publish(_alert())
        with ExchangeClient(pki / "police", exchange.address) as police:
            held = new_alert(
                category="TRAFFICKING_SUSPECT", recipients=["immigration"], summary="held"
            )
            police_alert = police.publish(held).alert_id
        with ExchangeClient(pki / "immigration", late.address, timeout=2) as client:
            acked = client.acknowledge(police_alert, alert_pb2.RESPONSE_ACCEPTED)
        late.late = {"Publish": 1}
        with (
            ExchangeClient(pki / "immigration", late.address, timeout=1, retry=NO_RETRY) as once,
            pytest.raises(Unreachable, match=r"(?i)deadline"),
        ):
            once.publish(_alert("asked once"))
    finally:
        late.stop()
    asked = [method.rsplit("/", 1)[1] for method, _ in late.witnessed]
    assert asked.count("Publish") == 3
    assert asked.count("Acknowledge") == 2
    published_ids = [objects[0] for objects in _actions(exchange, Action.PUBLISH)]
    assert published_ids.count(f"alert:{published.alert_id}") == 1
    assert published.receipt.entry.objects == (f"alert:{published.alert_id}",)
    assert len(_actions(exchange, Action.ACK)) == 1
    assert acked.receipt.entry.action is Action.ACK
    assert _alert_rows(exchange) == 3  # immigration's two (one reported failed) and police's


@dataclass(frozen=True)
class ReopenOnFirstRetry(RetryPolicy):
    """The default policy, except that the first retry reopens the proxy: the first attempt
    surely met a closed port, and a later one an open port."""

    proxy: CuttingProxy | None = None

    def delay(self, retry: int) -> float:
        if retry == 1:
            assert self.proxy is not None
            self.proxy.open()
        return super().delay(retry)


def test_publish_rides_out_a_short_outage(exchange: RunningServer, proxy: CuttingProxy) -> None:
    via = f"127.0.0.1:{proxy.port}"
    with ExchangeClient(
        exchange.pki / "immigration", via, retry=ReopenOnFirstRetry(proxy=proxy)
    ) as client:
        proxy.close()
        result = client.publish(_alert())
    assert _actions(exchange, Action.PUBLISH) == [(f"alert:{result.alert_id}",)]


def test_refusals_are_answers_and_are_not_retried(exchange: RunningServer) -> None:
    with ExchangeClient(exchange.pki / "customs", exchange.address) as client:
        with pytest.raises(Refused) as refused:
            client.publish(_alert())
    assert refused.value.code.name == "PERMISSION_DENIED"
    assert len(_actions(exchange, Action.DENIED)) == 1


def test_unreachable_exchange_fails_within_the_retry_budget(pki: Path) -> None:
    policy = RetryPolicy()
    started = time.monotonic()
    with ExchangeClient(pki / "immigration", "127.0.0.1:1", timeout=30) as client:
        with pytest.raises(Unreachable, match="exchange unreachable"):
            client.publish(_alert())
        with pytest.raises(Unreachable, match="exchange unreachable"):
            client.acknowledge("00000000-0000-4000-8000-000000000000", alert_pb2.RESPONSE_RECEIVED)
    assert time.monotonic() - started < 2 * policy.patience() + 5


def test_acknowledge_waits_for_a_connection_and_is_sent_once(
    exchange: RunningServer, proxy: CuttingProxy, pool: ThreadPoolExecutor
) -> None:
    with ExchangeClient(exchange.pki / "immigration", exchange.address) as immigration:
        alert_id = immigration.publish(_alert()).alert_id
    via = f"127.0.0.1:{proxy.port}"
    patient = RetryPolicy(attempts=30, initial=0.05, maximum=0.5)
    with ExchangeClient(exchange.pki / "police", via, timeout=30, retry=patient) as police:
        proxy.close()
        acking = pool.submit(police.acknowledge, alert_id, alert_pb2.RESPONSE_ACCEPTED)
        proxy.open()
        assert acking.result(30).acknowledgement.alert_id == alert_id
    assert _actions(exchange, Action.ACK) == [(f"alert:{alert_id}",)]


def test_acknowledge_whose_reply_was_lost_is_retried_and_recorded_once(
    exchange: RunningServer, proxy: CuttingProxy, pool: ThreadPoolExecutor
) -> None:
    """The retry carries the first attempt's idempotency key: the exchange answers it with the
    acknowledgement it already recorded."""
    with ExchangeClient(exchange.pki / "immigration", exchange.address) as immigration:
        alert_id = immigration.publish(_alert()).alert_id
    via = f"127.0.0.1:{proxy.port}"
    with ExchangeClient(exchange.pki / "police", via, timeout=30) as police:
        police.checkpoint()
        proxy.lose_replies = True
        acking = pool.submit(police.acknowledge, alert_id, alert_pb2.RESPONSE_ACCEPTED)
        _cut_after_the_server_acted(proxy, exchange, Action.ACK, 1)
        acked = acking.result(30)
        assert acked.acknowledgement.alert_id == alert_id
        assert [a.response for a in police.acknowledgements(alert_id)] == [
            alert_pb2.RESPONSE_ACCEPTED
        ]
    assert len(_actions(exchange, Action.ACK)) == 1
    assert acked.receipt.seq == next(
        e.seq for e in exchange.entries() if e.action == Action.ACK
    )  # the receipt proves the one entry there is


def test_subscription_cut_mid_stream_resumes_from_its_cursor_and_loses_nothing(
    exchange: RunningServer, proxy: CuttingProxy
) -> None:
    collector = Collector(Via(f"127.0.0.1:{proxy.port}", exchange.pki), "police")
    try:
        with ExchangeClient(exchange.pki / "immigration", exchange.address) as immigration:
            first = immigration.publish(_alert("before the cut")).alert_id
            wait_for(lambda: first in collector.ids(), what="the first delivery")
            proxy.close()  # the subscription's connection is dropped
            during = [immigration.publish(_alert(f"during the cut {n}")).alert_id for n in (1, 2)]
            proxy.open()
            wait_for(lambda: set(during) <= set(collector.ids()), what="deliveries after the cut")
            after = immigration.publish(_alert("after the cut")).alert_id
            wait_for(lambda: after in collector.ids(), what="a live delivery after resuming")
    finally:
        collector.stop()
    ids = list(dict.fromkeys(collector.ids()))  # at least once: a repeat is allowed, a gap is not
    assert ids == [first, *during, after]
    cursors = [d.cursor for d in collector.deliveries]
    assert cursors == sorted(cursors)


def test_a_subscription_ended_cancelled_resumes_from_its_cursor(
    exchange: RunningServer, pki: Path
) -> None:
    """grpc ends some streams CANCELLED when hundreds open at once, before the exchange's code
    runs: the client resumes them like a dropped connection, after its last cursor."""
    cutting = LyingServer(exchange.address, pki, pki / "police")
    cutting.start()
    try:
        with ExchangeClient(pki / "immigration", exchange.address) as immigration:
            sent = [immigration.publish(_alert(f"alert {n}")).alert_id for n in range(3)]
        cutting.cancel = {"Subscribe": 2}
        with ExchangeClient(pki / "police", cutting.address) as police:
            stream = police.subscribe()
            received = [next(stream).alert.id for _ in range(3)]
            stream.close()
    finally:
        cutting.stop()
    assert received == sent  # one message per stream, each resumed after the last cursor
    assert cutting.cancel == {"Subscribe": 0}
