"""Per-principal rate limits: RESOURCE_EXHAUSTED, recorded without flooding the ledger."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import grpc

from clients import ExchangeClient, new_alert
from ledger import Action
from sinergi.v1 import exchange_pb2
from tests.conftest import RunningServer, wait_for
from tests.integration.support import signed, stub


def _publish(server: RunningServer, who: str, key: str) -> grpc.StatusCode:
    request = exchange_pb2.PublishRequest(
        idempotency_key=key,
        alert=new_alert(category="OTHER", recipients=["labour"], summary="rate"),
    )
    try:
        stub(server, who).Publish(signed(server, who, request), timeout=5)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def test_a_principal_over_its_rate_is_refused_and_others_are_not(
    start_server: Callable[..., RunningServer], sqlite_url: str
) -> None:
    server = start_server(sqlite_url, rate_limit=0.5, rate_burst=3)
    codes = [_publish(server, "immigration", f"k{i}") for i in range(6)]
    assert codes[:3] == [grpc.StatusCode.OK] * 3
    assert codes[3:] == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 3
    assert _publish(server, "police", "p1") == grpc.StatusCode.OK  # its own bucket
    limited = [
        e for e in server.entries()
        if e.action == Action.DENIED and e.outcome.status == "RESOURCE_EXHAUSTED"
    ]  # fmt: skip
    # Recorded, but at most one entry per principal per second however many are refused.
    assert 1 <= len(limited) < 3
    assert all("/agency/immigration/" in e.actor.id for e in limited)
    wait_for(lambda: _publish(server, "immigration", "later") == grpc.StatusCode.OK,
             timeout=10, what="the bucket to refill")  # fmt: skip


def test_the_default_limit_stops_bulk_reading_and_records_it(
    start_server: Callable[..., RunningServer], sqlite_url: str
) -> None:
    """300 GetAlert calls at once from one officer with the default configuration (20 per
    second, bursts of 100): the burst and what the rate adds are answered and recorded as
    reads, the rest refused RESOURCE_EXHAUSTED, a DENIED entry for the first refusal of each
    second and every refusal counted in the metrics."""
    server = start_server(sqlite_url)
    assert (server.server.config.rate_limit, server.server.config.rate_burst) == (20.0, 100)
    with ExchangeClient(server.pki / "immigration", server.address) as client:
        alert_id = client.publish(
            new_alert(category="PASSPORT_HOLD", recipients=["police"], summary="bulk")
        ).alert_id
    reader = stub(server, "police-officer")
    request = exchange_pb2.GetAlertRequest(alert_id=alert_id)
    began = time.monotonic()
    calls = [reader.GetAlert.future(request, timeout=30) for _ in range(300)]
    codes = [call.code() for call in calls]
    seconds = time.monotonic() - began
    answered = codes.count(grpc.StatusCode.OK)
    refused = codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert answered + refused == 300
    assert 100 <= answered <= 100 + math.ceil(20 * seconds) + 1
    assert refused >= 150
    officer = "spiffe://sinergi.dev/agency/police/officer/investigator"
    entries = [e for e in server.entries() if e.actor.id == officer]
    assert sum(e.action == Action.READ for e in entries) == answered
    limited = [e for e in entries if e.action == Action.DENIED]
    assert 1 <= len(limited) <= math.ceil(seconds) + 1  # one per second, not one per refusal
    assert {(e.outcome.status, e.meta["method"]) for e in limited} == {
        ("RESOURCE_EXHAUSTED", "/sinergi.v1.Exchange/GetAlert")
    }
    counted = server.server.metrics.registry.get_sample_value(
        "sinergi_denied_total",
        {"method": "/sinergi.v1.Exchange/GetAlert", "reason_code": "RESOURCE_EXHAUSTED"},
    )
    assert counted == refused
