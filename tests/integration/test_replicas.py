"""Several exchange replicas on one PostgreSQL database: one chain, deliveries across replicas,
and a database outage survived without losing anything acknowledged."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy.engine import make_url

from clients import ExchangeClient, Refused, Unreachable, new_alert
from exchange import initialise_database
from ledger import Action
from tests.clients.conftest import last_json, run
from tests.conftest import PG_URL, RunningServer, _postgres_database, wait_for
from tests.integration.support import Collector, ServeProcess, serve_process
from tests.integration.tcp_proxy import TcpProxy

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_url() -> Iterator[str]:
    for url in _postgres_database():
        initialise_database(url)
        yield url


@pytest.fixture
def replicas(pg_url: str, pki: Path) -> Iterator[tuple[ServeProcess, ServeProcess]]:
    first = serve_process(pg_url, pki)
    second = serve_process(pg_url, pki)
    try:
        yield first, second
    finally:
        assert first.stop() == 0
        assert second.stop() == 0


def _publish(replica: ServeProcess, count: int, label: str) -> list[str]:
    with ExchangeClient(replica.pki / "immigration", replica.address) as client:
        return [
            client.publish(new_alert(category="PASSPORT_HOLD", recipients=["police", "labour"],
                                     summary=f"{label} {i}")).alert_id
            for i in range(count)
        ]  # fmt: skip


def test_two_replicas_share_one_chain_and_deliver_across(
    replicas: tuple[ServeProcess, ServeProcess], pg_url: str
) -> None:
    a, b = replicas
    subscribers = [Collector(a, "police"), Collector(b, "police"), Collector(b, "labour")]
    try:
        with ThreadPoolExecutor(4) as pool:
            batches = list(pool.map(_publish, [a, b, a, b], [15] * 4, ["a1", "b1", "a2", "b2"]))
        published = {alert for batch in batches for alert in batch}
        assert len(published) == 60
        for subscriber in subscribers:
            wait_for(lambda s=subscriber: len(s.deliveries) >= 60, what="deliveries")  # type: ignore[misc]
            assert len(subscriber.ids()) == 60  # each once
            assert set(subscriber.ids()) == published
            cursors = [d.cursor for d in subscriber.deliveries]
            assert cursors == sorted(cursors)  # in commit order, whichever replica took it
        # With replica B idle, only a notification from A's commit can wake B's subscribers.
        (last,) = _publish(a, 1, "last")
        wait_for(lambda: last in subscribers[1].ids(), what="a wake-up from the other replica")
    finally:
        for subscriber in subscribers:
            subscriber.stop()
    verified = run("ledger", "verify", "--db", pg_url, "--ledger-key",
                   str(a.pki / "ledger.vkey"), "--json")  # fmt: skip
    assert verified.returncode == 0, verified.stderr
    report = last_json(verified)
    assert report["ok"] is True
    export = a.pki.parent / "ledger.jsonl"
    assert run("ledger", "export", "--db", pg_url, "--out", str(export)).returncode == 0
    actions = [line.split(b'"action":"')[1].split(b'"')[0] for line in export.read_bytes()
               .splitlines() if line.startswith(b'{"action"')]  # fmt: skip
    assert actions.count(Action.START.value.encode()) == 2
    assert actions.count(Action.PUBLISH.value.encode()) == 61
    assert actions.count(Action.DELIVER.value.encode()) >= 181


def test_a_database_outage_under_load_loses_nothing_acknowledged(
    start_server: Callable[..., RunningServer], proxied_postgres: tuple[str, TcpProxy]
) -> None:
    url, proxy = proxied_postgres
    server = start_server(url)
    acknowledged: list[str] = []
    refused: list[str] = []
    stop = threading.Event()

    def publish_until_stopped() -> None:
        with ExchangeClient(server.pki / "immigration", server.address, timeout=3) as client:
            n = 0
            while not stop.is_set():
                n += 1
                alert = new_alert(category="PASSPORT_HOLD", recipients=["police"],
                                  summary=f"under load {n}")  # fmt: skip
                try:
                    acknowledged.append(client.publish(alert).alert_id)
                except (Unreachable, Refused) as error:
                    refused.append(str(error))

    watcher = Collector(server, "police")
    publisher = threading.Thread(target=publish_until_stopped)
    publisher.start()
    try:
        wait_for(lambda: len(acknowledged) >= 10, what="publishes before the outage")
        proxy.close()  # PostgreSQL goes away: connections refused, pooled ones dropped
        wait_for(lambda: len(refused) >= 3, what="publishes refused during the outage")
        during = len(acknowledged)
        proxy.open()
        wait_for(lambda: len(acknowledged) >= during + 10, what="publishes after the outage")
    finally:
        stop.set()
        publisher.join(30)
    assert all("UNAVAILABLE" in r or "unreachable" in r.lower() for r in refused), refused[:3]
    wait_for(lambda: set(acknowledged) <= set(watcher.ids()), what="every acknowledged alert")
    watcher.stop()
    # Every acknowledged publish is stored with its ledger entry, and the chain verifies.
    direct = make_url(url).set(port=make_url(PG_URL).port).render_as_string(hide_password=False)
    engine = sqlalchemy.create_engine(direct)
    with engine.connect() as connection:
        stored = {row[0] for row in connection.execute(sqlalchemy.text("SELECT id FROM alerts"))}
    engine.dispose()
    assert set(acknowledged) <= stored
    recorded = {e.objects[0] for e in server.entries() if e.action == Action.PUBLISH}
    assert {f"alert:{a}" for a in acknowledged} <= recorded
    verified = run("ledger", "verify", "--db", direct, "--ledger-key",
                   str(server.pki / "ledger.vkey"), "--json")  # fmt: skip
    assert last_json(verified)["ok"] is True, verified.stderr
