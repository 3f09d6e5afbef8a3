"""The standard gRPC health service: over mutual TLS, following the database, not in the ledger."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
import sqlalchemy
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients import ExchangeClient, new_alert
from ledger import Action
from sinergi.v1 import exchange_pb2
from tests.conftest import RunningServer, as_dba, wait_for
from tests.integration.support import channel, signed, stub
from tests.integration.tcp_proxy import TcpProxy

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICES = ("", "sinergi.v1.Exchange", "sinergi.v1.AuditLedger")


def health(server: RunningServer, who: str = "police") -> health_pb2_grpc.HealthStub:
    return health_pb2_grpc.HealthStub(channel(server, who))


def statuses(stub: health_pb2_grpc.HealthStub) -> set[int]:
    return {
        stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status
        for name in SERVICES
    }


def nameless_client(pki: Path, name: str) -> None:
    """A client certificate signed by the deployment CA with a DNS name and no SPIFFE ID."""
    ca_cert = x509.load_pem_x509_certificate((pki / "ca" / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((pki / "ca" / "ca.key").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(f"{name}.example")]), False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .sign(ca_key, hashes.SHA256())
    )
    directory = pki / name
    directory.mkdir()
    (directory / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "tls.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (directory / "ca.crt").write_bytes((pki / "ca.crt").read_bytes())


def test_health_is_served_over_mtls_and_not_recorded(server: RunningServer, tmp_path: Path) -> None:
    before = len(server.entries())
    stub = health(server)
    assert statuses(stub) == {SERVING}
    with pytest.raises(grpc.RpcError) as unknown:
        stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    # Authentication still applies: a client certificate from the deployment CA that names no
    # principal is refused, and the refusal is logged but not a DENIED entry (a misconfigured
    # probe must not flood the ledger).
    nameless_client(server.pki, "probe")
    with pytest.raises(grpc.RpcError) as refused:
        health(server, "probe").Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert len(server.entries()) == before


def test_watch_turns_not_serving_when_the_server_stops(server: RunningServer) -> None:
    stream = health(server).Watch(health_pb2.HealthCheckRequest(service="sinergi.v1.Exchange"))
    assert next(stream).status == SERVING
    stopper = threading.Thread(target=server.server_thread.stop)
    stopper.start()
    try:
        assert next(stream).status == NOT_SERVING  # enter_graceful_shutdown, before the end
    finally:
        stopper.join(30)


@pytest.mark.postgres
def test_health_follows_the_database_and_the_server_recovers(
    start_server: Callable[..., RunningServer], proxied_postgres: tuple[str, TcpProxy]
) -> None:
    url, proxy = proxied_postgres
    server = start_server(url, health_interval_seconds=0.1)
    stub = health(server)
    assert statuses(stub) == {SERVING}

    proxy.close()  # the database is gone: refused connections, pooled ones dropped
    wait_for(lambda: statuses(stub) == {NOT_SERVING}, what="NOT_SERVING while unreachable")

    proxy.open()
    wait_for(lambda: statuses(stub) == {SERVING}, what="SERVING once reachable again")
    with ExchangeClient(server.pki / "immigration", server.address) as client:
        published = client.publish(
            new_alert(category="PASSPORT_HOLD", recipients=["police"], summary="after outage")
        )
    assert published.receipt.entry.action == Action.PUBLISH
    assert [e.action for e in server.entries()][-1] == Action.PUBLISH


def _publish(server: RunningServer, summary: str) -> str | grpc.StatusCode:
    """One publish by immigration to police, without the client library's retries: the new
    alert's id, or the code it was refused with."""
    request = exchange_pb2.PublishRequest(
        idempotency_key=summary.replace(" ", "-"),
        alert=new_alert(category="PASSPORT_HOLD", recipients=["police"], summary=summary),
    )
    try:
        answer = stub(server, "immigration").Publish(
            signed(server, "immigration", request), timeout=10
        )
    except grpc.RpcError as error:
        return error.code()
    return str(answer.alert_id)


def test_an_unreadable_row_in_a_subscription_leaves_no_connection_stuck(
    start_server: Callable[..., RunningServer], sqlite_url: str
) -> None:
    """A subscription page that met a row it cannot open (a sealed body, and no key) left its
    statement active on a pooled connection, holding a snapshot: after any outside write, the
    writer's BEGIN IMMEDIATE there failed with "database is locked" (every publish UNAVAILABLE)
    and reads there saw the old snapshot, until a restart, while health said SERVING."""
    server = start_server(sqlite_url, health_interval_seconds=0.1)
    first = [_publish(server, f"before {n}") for n in range(3)]
    assert [type(answer) for answer in first] == [str] * 3, first
    as_dba(sqlite_url, f"UPDATE alerts SET key_id = '{'0' * 16}' WHERE id = '{first[0]}'")
    with pytest.raises(grpc.RpcError) as unreadable:
        next(stub(server, "police").Subscribe(exchange_pb2.SubscribeRequest(), timeout=10))
    assert unreadable.value.code() == grpc.StatusCode.INTERNAL
    outside = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    outside.execute("CREATE TABLE maintenance (note TEXT)")  # a DBA's note: any write will do
    outside.execute("INSERT INTO maintenance VALUES ('reindex on Sunday')")
    outside.close()
    after = [_publish(server, f"after {n}") for n in range(10)]
    assert [type(answer) for answer in after] == [str] * 10, after
    police = stub(server, "police")
    for alert_id in after:  # each read on a pooled connection, none on an old snapshot
        assert police.GetAlert(exchange_pb2.GetAlertRequest(alert_id=alert_id), timeout=10).id
    assert statuses(health(server)) == {SERVING}


def _refusing_trigger(url: str) -> tuple[list[str], list[str]]:
    """Statements that make every checkpoint insert fail, and those that stop it: what a
    database administrator's mistake (or a revoked privilege) does to the ledger writer."""
    if url.startswith("sqlite"):
        return [
            "CREATE TRIGGER refuse BEFORE INSERT ON ledger_checkpoints "
            "BEGIN SELECT RAISE(ABORT, 'the administrator refuses'); END"
        ], ["DROP TRIGGER refuse"]
    return [
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'the administrator refuses'; END $$",
        "CREATE TRIGGER refuse BEFORE INSERT ON ledger_checkpoints "
        "FOR EACH ROW EXECUTE FUNCTION refuse()",
    ], ["DROP TRIGGER refuse ON ledger_checkpoints", "DROP FUNCTION refuse()"]


def _execute(url: str, statements: list[str]) -> None:
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as connection:
        for statement in statements:
            connection.exec_driver_sql(statement)
    engine.dispose()


def test_health_is_not_serving_while_the_ledger_writer_cannot_commit(
    start_server: Callable[..., RunningServer], db_url: str
) -> None:
    """The database answers SELECT 1 but refuses the writer's commits: health NOT_SERVING
    (the writer's last batch failed, and its write probes fail), SERVING again without a
    restart once the writer commits, and publishes succeed."""
    server = start_server(db_url, health_interval_seconds=0.1)
    probe = health(server)
    assert statuses(probe) == {SERVING}
    refuse, allow = _refusing_trigger(db_url)
    _execute(db_url, refuse)
    assert _publish(server, "refused") == grpc.StatusCode.UNAVAILABLE
    wait_for(lambda: statuses(probe) == {NOT_SERVING}, what="NOT_SERVING while it cannot commit")
    assert server.server.health is not None
    assert "the administrator refuses" in server.server.health.reason
    # Still NOT_SERVING after a write probe failed in its turn: no flapping back to SERVING.
    writer = server.server.ledger
    wait_for(lambda: writer.failing is None, what="a probe's batch (it commits nothing)")
    assert statuses(probe) == {NOT_SERVING}
    _execute(db_url, allow)
    wait_for(lambda: statuses(probe) == {SERVING}, what="SERVING once the writer commits again")
    assert isinstance(_publish(server, "accepted"), str)


def test_health_probes_on_its_own_while_every_worker_thread_is_busy(
    start_server: Callable[..., RunningServer], sqlite_url: str
) -> None:
    """Hundreds of subscriptions reading pages fill the worker threads the reads share: the
    probe has a thread and a connection of its own, so a healthy database is not reported
    unreachable (it once said NOT_SERVING three times under fan-out load)."""
    server = start_server(sqlite_url, health_interval_seconds=0.1)
    loop = server.server_thread._loop
    assert server.server.health is not None
    busy, release = 0, threading.Event()

    def occupy() -> None:
        nonlocal busy
        busy += 1
        release.wait(60)

    for _ in range(64):  # far more than the default pool's threads (min(32, cores + 4))
        loop.call_soon_threadsafe(loop.run_in_executor, None, occupy)
    try:
        wait_for(lambda: busy > 0, what="the worker threads to be taken")
        probed = server.server.health.probes
        wait_for(lambda: server.server.health.probes >= probed + 5, what="five probes more")
        assert server.server.health.reason == ""
        assert statuses(health(server)) == {SERVING}
    finally:
        release.set()
