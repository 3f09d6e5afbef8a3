"""Per-principal rate limits: RESOURCE_EXHAUSTED, recorded without flooding the ledger."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from clients import new_alert
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


def test_no_limit_by_default(server: RunningServer) -> None:
    assert {_publish(server, "immigration", f"k{i}") for i in range(120)} == {grpc.StatusCode.OK}
