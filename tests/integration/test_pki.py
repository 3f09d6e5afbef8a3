"""A deployment PKI (root, agency CAs) over real mutual TLS: federated trust, revocation while
serving, expiry, and rotation of the server identity without a restart."""

from __future__ import annotations

import logging
import shutil
import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs import Pki, SpiffeId, load_identity, write_identity
from certs._x509 import _leaf, _validity
from clients import ExchangeClient, Refused, Unreachable, new_alert, parse_subjects
from exchange import ServerConfig
from ledger import Action
from tests.conftest import RunningServer, ServerThread, wait_for
from tests.integration.support import Collector

TD = "sinergi.dev"


@dataclass
class Deployment:
    pki: Pki
    ids: Path  # identity directories, with ledger.vkey beside them
    crl: Path

    def identity(self, agency: str, kind: str = "system", name: str = "gateway") -> Path:
        out = self.ids / f"{agency}-{name}"
        self.pki.issue_identity(out, SpiffeId(TD, agency, kind, name))
        return out


@pytest.fixture
def deployment(pki: Path, tmp_path: Path) -> Deployment:
    created = Pki.init(tmp_path / "fed", TD)
    for agency in ("police", "immigration"):
        created.create_agency_ca(agency)
    created.issue_server(
        tmp_path / "fed-server",
        common_name="sinergi-exchange",
        dns_names=["localhost"],
        ip_addresses=["127.0.0.1"],
    )
    crl = created.write_crls()[-1]
    ids = tmp_path / "ids"
    ids.mkdir()
    shutil.copy(pki / "ledger.vkey", ids / "ledger.vkey")
    return Deployment(created, ids, crl)


@pytest.fixture
def start(
    deployment: Deployment, pki: Path, sqlite_url: str, tmp_path: Path
) -> Iterator[Callable[..., RunningServer]]:
    threads: list[ServerThread] = []

    def run(**options: object) -> RunningServer:
        config = ServerConfig(
            identity=tmp_path / "fed-server",
            ledger_key=pki / "ledger.key",
            database=sqlite_url,
            listen="127.0.0.1:0",
            grace_seconds=0.5,
            crl=deployment.crl,
            **options,  # type: ignore[arg-type]
        )
        thread = ServerThread(config)
        threads.append(thread)
        server = thread.start()
        return RunningServer(f"127.0.0.1:{server.port}", sqlite_url, pki, server, thread)

    yield run
    for thread in threads:
        thread.stop()


def alert(recipients: tuple[str, ...] = ("police",)) -> object:
    """Immigration's alert, or with recipients ("customs",) one police may send."""
    if recipients == ("customs",):
        return new_alert(category="IMEI_FRAUD", recipients=["customs"], summary="x",
                         subjects=parse_subjects(["imei=490154203237518"]))  # fmt: skip
    return new_alert(category="PASSPORT_HOLD", recipients=list(recipients), summary="x")


def denied(server: RunningServer) -> list[tuple[str, str, str]]:
    return [
        (e.actor.id, e.outcome.status, e.outcome.reason)
        for e in server.entries()
        if e.action == Action.DENIED
    ]


def forge(ca_dir: Path, identity: SpiffeId, out: Path, bundle: Path, **validity: datetime) -> Path:
    """A certificate the library would refuse to issue, made with the CA key itself."""
    from certs import load_ca  # noqa: PLC0415

    ca = load_ca(ca_dir)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity.name)])
    san = [x509.UniformResourceIdentifier(str(identity))]
    window = (validity["not_before"], validity["not_after"]) if validity else _validity(30)
    issued = _leaf(ca, subject, san, ExtendedKeyUsageOID.CLIENT_AUTH, window)
    write_identity(out, issued, x509.load_pem_x509_certificates(bundle.read_bytes()))
    return out


def test_agency_ca_identities_are_accepted(
    start: Callable[..., RunningServer], deployment: Deployment
) -> None:
    server = start()
    with ExchangeClient(deployment.identity("immigration"), server.address) as client:
        published = client.publish(alert())  # type: ignore[arg-type]
    assert published.receipt.entry.actor.id == f"spiffe://{TD}/agency/immigration/system/gateway"
    assert denied(server) == []


def test_police_ca_cannot_vouch_for_immigration(
    start: Callable[..., RunningServer], deployment: Deployment
) -> None:
    server = start()
    claimed = SpiffeId(TD, "immigration", "system", "gateway")
    forged = forge(deployment.pki.agency_dir("police"), claimed, deployment.ids / "forged",
                   deployment.pki.directory / "ca.crt")  # fmt: skip
    with ExchangeClient(forged, server.address) as client, pytest.raises(Refused) as caught:
        client.publish(alert())  # type: ignore[arg-type]
    assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED
    reason = (
        f"issuing CA spiffe://{TD}/agency/police may issue for agency 'police' only, "
        "not 'immigration'"
    )
    assert caught.value.message == f"UNAUTHENTICATED: {reason}"
    assert denied(server) == [(str(claimed), "UNAUTHENTICATED", reason)]


def test_root_does_not_issue_identities(
    start: Callable[..., RunningServer], deployment: Deployment
) -> None:
    server = start()
    claimed = SpiffeId(TD, "police", "system", "gateway")
    forged = forge(deployment.pki.directory / "root", claimed, deployment.ids / "by-root",
                   deployment.pki.directory / "ca.crt")  # fmt: skip
    with ExchangeClient(forged, server.address) as client, pytest.raises(Refused) as caught:
        client.publish(alert())  # type: ignore[arg-type]
    assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert denied(server) == [
        (str(claimed), "UNAUTHENTICATED",
         f"issuing CA spiffe://{TD} is the deployment root, which issues no agency identities"),
    ]  # fmt: skip


def test_revocation_takes_effect_on_the_next_call(
    start: Callable[..., RunningServer], deployment: Deployment
) -> None:
    server = start()
    laptop = deployment.identity("police", "officer", "budi")
    with ExchangeClient(laptop, server.address) as client:
        client.publish(alert(("customs",)))  # type: ignore[arg-type]
        # The laptop is lost: revoke, publish the CRL; the same connection is refused next.
        deployment.pki.revoke(laptop, "keyCompromise")
        deployment.pki.write_crls()
        with pytest.raises(Refused) as caught:
            client.publish(alert(("customs",)))  # type: ignore[arg-type]
    assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert caught.value.message == "UNAUTHENTICATED: certificate revoked (keyCompromise)"
    assert denied(server) == [
        (f"spiffe://{TD}/agency/police/officer/budi", "UNAUTHENTICATED",
         "certificate revoked (keyCompromise)"),
    ]  # fmt: skip
    # Another officer of the same agency is unaffected.
    with ExchangeClient(deployment.identity("police", "officer", "sari"), server.address) as sari:
        sari.publish(alert(("customs",)))  # type: ignore[arg-type]


def test_a_crl_signed_by_no_trusted_ca_keeps_the_last_good_one(
    start: Callable[..., RunningServer], deployment: Deployment, tmp_path: Path
) -> None:
    server = start()
    laptop = deployment.identity("police", "officer", "budi")
    deployment.pki.revoke(laptop, "keyCompromise")
    deployment.pki.write_crls()
    with ExchangeClient(laptop, server.address) as client:
        with pytest.raises(Refused) as first:
            client.publish(alert(("customs",)))  # type: ignore[arg-type]
        other = Pki.init(tmp_path / "other", TD)
        other.write_crls(deployment.crl)  # an impostor's CRL replaces it: not signed by our CAs
        with pytest.raises(Refused) as second:
            client.publish(alert(("customs",)))  # type: ignore[arg-type]
    assert (
        first.value.message
        == second.value.message
        == ("UNAUTHENTICATED: certificate revoked (keyCompromise)")
    )


def test_expired_client_certificate_fails_the_handshake(
    start: Callable[..., RunningServer], deployment: Deployment
) -> None:
    server = start()
    now = datetime.now(UTC)
    old = SpiffeId(TD, "police", "system", "old")
    expired = forge(deployment.pki.agency_dir("police"), old, deployment.ids / "expired",
                    deployment.pki.directory / "ca.crt", not_before=now - timedelta(days=2),
                    not_after=now - timedelta(days=1))  # fmt: skip
    with ExchangeClient(expired, server.address, timeout=5) as client:
        with pytest.raises(Unreachable):
            client.publish(alert())  # type: ignore[arg-type]
    # TLS refuses it before grpcio runs any code of ours: nothing to record per principal.
    assert denied(server) == []


def test_start_warns_about_certificates_expiring_within_30_days(
    start: Callable[..., RunningServer], deployment: Deployment, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.INFO, logger="sinergi.tls")
    deployment.pki.renew(tmp_path / "fed-server", valid_days=10)
    start()
    warnings = [r.getMessage() for r in caplog.records if r.name == "sinergi.tls"]
    assert any('"certificate expires soon"' in w and '"role": "server"' in w for w in warnings)
    assert not any('"role": "trusted CA"' in w for w in warnings)


def _peer_serial(address: str, identity: Path) -> int:
    """The serial of the certificate the server presents to a new TLS connection."""
    context = ssl.create_default_context(cafile=str(identity / "ca.crt"))
    context.load_cert_chain(identity / "tls.crt", identity / "tls.key")
    context.set_alpn_protocols(["h2"])
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_server_certificate_rotates_without_dropping_streams(
    start: Callable[..., RunningServer], deployment: Deployment, tmp_path: Path
) -> None:
    server = start()
    police = deployment.identity("police")
    immigration = deployment.identity("immigration")
    old = load_identity(tmp_path / "fed-server").certificate.serial_number
    assert _peer_serial(server.address, police) == old
    # A subscriber on the police identity, connected before the rotation.
    as_ids = RunningServer(server.address, server.database, deployment.ids, server.server,
                           server.server_thread)  # fmt: skip
    subscriber = Collector(as_ids, police.name)
    try:
        with ExchangeClient(immigration, server.address) as client:
            first = client.publish(alert())  # type: ignore[arg-type]
        wait_for(lambda: subscriber.ids() == [first.alert_id], what="delivery before rotation")

        renewed = deployment.pki.renew(tmp_path / "fed-server")
        new = renewed.certificate.serial_number
        assert _peer_serial(server.address, police) == new  # a new connection: new certificate
        with ExchangeClient(immigration, server.address) as client:
            second = client.publish(alert())  # type: ignore[arg-type]
        # The subscriber's connection, made before the rotation, still delivers.
        wait_for(lambda: subscriber.ids() == [first.alert_id, second.alert_id],
                 what="delivery after rotation")  # fmt: skip
    finally:
        subscriber.stop()
    assert server.server.tls.reloads == 1


def test_a_broken_identity_keeps_the_previous_one(
    start: Callable[..., RunningServer], deployment: Deployment, tmp_path: Path
) -> None:
    server = start()
    police = deployment.identity("police")
    before = _peer_serial(server.address, police)
    other = tmp_path / "unrelated"
    deployment.pki.issue_server(other, common_name="x", dns_names=["x"], ip_addresses=[])
    shutil.copy(other / "tls.crt", tmp_path / "fed-server" / "tls.crt")  # key no longer matches
    assert _peer_serial(server.address, police) == before
    with ExchangeClient(police, server.address) as client:
        client.publish(alert(("customs",)))  # type: ignore[arg-type]
    assert server.server.tls.reloads == 0
