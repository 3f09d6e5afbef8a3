"""Prometheus metrics on their own plain-HTTP port: counters move by exactly what happened."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from clients import ExchangeClient, Refused, new_alert
from exchange._metrics import Metrics
from tests.conftest import RunningServer, wait_for
from tests.integration.support import Collector, Samples, scrape

PUBLISH = "/sinergi.v1.Exchange/Publish"


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_counters_move_by_exactly_what_happened(
    start_server: Callable[..., RunningServer], db_url: str
) -> None:
    server = start_server(db_url, metrics_listen="127.0.0.1:0")
    before = scrape(server)
    with ExchangeClient(server.pki / "immigration", server.address) as immigration:
        immigration.publish(
            new_alert(category="PASSPORT_HOLD", recipients=["police"], summary="counted")
        )
    with ExchangeClient(server.pki / "customs", server.address) as customs:
        with pytest.raises(Refused):
            customs.publish(
                new_alert(category="PASSPORT_HOLD", recipients=["police"], summary="refused")
            )
    # A refusal reaches the client as the guard aborts; it counts the call just after.
    refused = ("sinergi_rpc_total", frozenset({("method", PUBLISH), ("code", "PERMISSION_DENIED")}))

    def counted() -> dict[tuple[str, frozenset[tuple[str, str]]], float] | None:
        now = scrape(server)
        return now if now.get(refused) else None

    after = wait_for(counted, what="the refusal to be counted")
    assert after is not None

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("sinergi_rpc_total", method=PUBLISH, code="OK") == 1
    assert moved("sinergi_rpc_total", method=PUBLISH, code="PERMISSION_DENIED") == 1
    assert moved("sinergi_denied_total", method=PUBLISH, reason_code="PERMISSION_DENIED") == 1
    assert moved("sinergi_rpc_duration_seconds_count", method=PUBLISH) == 2
    # Two commits at least (the publish, the DENIED entry); the gauge is the ledger's size.
    assert moved("sinergi_ledger_append_seconds_count") >= 2
    assert moved("sinergi_ledger_batch_size_count") == moved("sinergi_ledger_append_seconds_count")
    assert value(after, "sinergi_ledger_entries") == len(server.entries())
    expiry = value(after, "sinergi_certificate_expiry_seconds", identity="server")
    assert 0 < expiry < 400 * 86400


def test_subscriber_gauge_follows_open_streams(
    start_server: Callable[..., RunningServer], sqlite_url: str
) -> None:
    server = start_server(sqlite_url, metrics_listen="127.0.0.1:0")
    assert value(scrape(server), "sinergi_subscribers") == 0
    police, labour = Collector(server, "police"), Collector(server, "labour")
    wait_for(lambda: value(scrape(server), "sinergi_subscribers") == 2, what="two subscribers")
    with ExchangeClient(server.pki / "immigration", server.address) as immigration:
        immigration.publish(new_alert(category="PASSPORT_HOLD", recipients=["police", "labour"],
                                      summary="lag"))  # fmt: skip
    wait_for(lambda: len(police.ids()) == len(labour.ids()) == 1, what="both deliveries")
    lag = "sinergi_delivery_lag_seconds"
    # counted once each write completes, which may be just after the client has the message
    wait_for(lambda: value(scrape(server), f"{lag}_count") == 2, what="one lag per delivery")
    assert value(scrape(server), f"{lag}_bucket", le="5.0") == 2  # both within seconds
    police.stop()
    wait_for(lambda: value(scrape(server), "sinergi_subscribers") == 1, what="one left")
    labour.stop()
    wait_for(lambda: value(scrape(server), "sinergi_subscribers") == 0, what="none left")


def test_a_bare_port_binds_loopback_only() -> None:
    metrics = Metrics()
    try:
        port = metrics.serve("0")
        assert metrics._http is not None
        assert metrics._http.server_address[0] == "127.0.0.1"
        assert port > 0
    finally:
        metrics.close()
