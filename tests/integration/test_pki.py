"""A deployment PKI (root, agency CAs) over real mutual TLS: federated trust, revocation while
serving (CRL numbers that never go back, nextUpdate, a CRL for every CA), expiry, and rotation of
the server identity without a restart."""

from __future__ import annotations

import json
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
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs import (
    Pki,
    RevocationDatabase,
    SpiffeId,
    build_crl,
    load_ca,
    load_identity,
    write_identity,
)
from certs._x509 import _leaf, _validity
from clients import ExchangeClient, Refused, Unreachable, new_alert, parse_subjects
from exchange import ServerConfig
from ledger import Action
from tests.conftest import RunningServer, ServerThread, wait_for
from tests.integration.support import Collector, Samples, scrape

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


BUDI = f"spiffe://{TD}/agency/police/officer/budi"
POLICE_CA = f"spiffe://{TD}/agency/police"
IMMIGRATION_CA = f"spiffe://{TD}/agency/immigration"
REVOKED = "certificate revoked (keyCompromise)"


def read(client: ExchangeClient) -> None:
    """A call every identity may make (an officer reads); the guard checks the CRL first."""
    list(client.list_alerts())


def refusal(identity: Path, server: RunningServer) -> str | None:
    """Why the exchange refuses ``identity`` (UNAUTHENTICATED), or None if it answers."""
    with ExchangeClient(identity, server.address) as client:
        try:
            read(client)
        except Refused as exc:  # another code keeps its prefix, and fails the comparison
            return exc.message.removeprefix("UNAUTHENTICATED: ")
    return None


def missing(ca: str) -> str:
    return f"issuing CA {ca} has no CRL in force: its identities are refused"


def crl_refusals(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str | None]]:
    """(reason, CA) of each "CRL refused" error the exchange logged."""
    lines = [
        json.loads(r.getMessage())
        for r in caplog.records
        if r.name == "sinergi.identity" and r.levelno == logging.ERROR
    ]
    return [(line["reason"], line["ca"]) for line in lines if line["event"] == "CRL refused"]


def put_crl(deployment: Deployment, data: bytes) -> None:
    """Replace the CRL file as a copy does: a new file renamed over it."""
    new = deployment.crl.with_name("crl.pem.new")
    new.write_bytes(data)
    new.replace(deployment.crl)


def police_crl(deployment: Deployment, *, this_update: datetime, next_update: datetime) -> bytes:
    """The police CA's next CRL (the number after its last), with these dates."""
    ca_dir = deployment.pki.agency_dir("police")
    database = RevocationDatabase(ca_dir)
    database.crl_number += 1
    database.save()
    crl = build_crl(
        load_ca(ca_dir),
        database.records.values(),
        number=database.crl_number,
        this_update=this_update,
        next_update=next_update,
    )
    return crl.public_bytes(Encoding.PEM)


def crl_file(deployment: Deployment, police: bytes | None) -> None:
    """The CRL file with the root's and immigration's last CRLs, and ``police`` (None: none)."""
    others = [deployment.pki.directory / "root", deployment.pki.agency_dir("immigration")]
    put_crl(deployment, b"".join((d / "crl.pem").read_bytes() for d in others) + (police or b""))


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def forge(ca_dir: Path, identity: SpiffeId, out: Path, bundle: Path, **validity: datetime) -> Path:
    """A certificate the library would refuse to issue, made with the CA key itself."""
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
        read(client)
        # The laptop is lost: revoke, publish the CRL; the same connection is refused next.
        deployment.pki.revoke(laptop, "keyCompromise")
        deployment.pki.write_crls()
        with pytest.raises(Refused) as caught:
            read(client)
    assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert caught.value.message == f"UNAUTHENTICATED: {REVOKED}"
    assert denied(server) == [(BUDI, "UNAUTHENTICATED", REVOKED)]
    # Another officer of the same agency is unaffected.
    assert refusal(deployment.identity("police", "officer", "sari"), server) is None


def test_a_crl_signed_by_no_trusted_ca_keeps_the_last_good_one(
    start: Callable[..., RunningServer], deployment: Deployment, tmp_path: Path
) -> None:
    server = start()
    laptop = deployment.identity("police", "officer", "budi")
    deployment.pki.revoke(laptop, "keyCompromise")
    deployment.pki.write_crls()
    with ExchangeClient(laptop, server.address) as client:
        with pytest.raises(Refused) as first:
            read(client)
        other = Pki.init(tmp_path / "other", TD)
        other.write_crls(deployment.crl)  # an impostor's CRL replaces it: not signed by our CAs
        with pytest.raises(Refused) as second:
            read(client)
    assert first.value.message == second.value.message == f"UNAUTHENTICATED: {REVOKED}"


def test_an_older_crl_put_in_place_of_the_newer_is_refused(
    start: Callable[..., RunningServer], deployment: Deployment, caplog: pytest.LogCaptureFixture
) -> None:
    server = start()
    older = deployment.crl.read_bytes()  # every CA's CRL number 1
    laptop = deployment.identity("police", "officer", "budi")
    deployment.pki.revoke(laptop, "keyCompromise")
    deployment.pki.write_crls()  # number 2: budi revoked
    assert refusal(laptop, server) == REVOKED
    # The older CRLs are validly signed, but their numbers go back: refused, number 2 stays.
    put_crl(deployment, older)
    assert refusal(laptop, server) == REVOKED
    assert refusal(deployment.identity("police", "officer", "sari"), server) is None
    assert sorted(crl_refusals(caplog)) == [
        ("rollback", f"spiffe://{TD}"),
        ("rollback", IMMIGRATION_CA),
        ("rollback", POLICE_CA),
    ]
    assert denied(server) == [(BUDI, "UNAUTHENTICATED", REVOKED)] * 2


def test_a_ca_whose_crl_is_dropped_from_the_file_has_its_identities_refused(
    start: Callable[..., RunningServer], deployment: Deployment, caplog: pytest.LogCaptureFixture
) -> None:
    server = start()
    police, immigration = deployment.identity("police"), deployment.identity("immigration")
    assert refusal(police, server) is None
    crl_file(deployment, police=None)  # police's revocations would be gone with its CRL
    assert refusal(police, server) == missing(POLICE_CA)
    assert refusal(immigration, server) is None
    assert crl_refusals(caplog) == [("missing", POLICE_CA)]
    gateway = f"spiffe://{TD}/agency/police/system/gateway"
    assert denied(server) == [(gateway, "UNAUTHENTICATED", missing(POLICE_CA))]
    deployment.pki.write_crls()  # every CA's CRL again
    assert refusal(police, server) is None


def test_a_crl_past_next_update_and_the_grace_refuses_its_cas_identities(
    start: Callable[..., RunningServer], deployment: Deployment, caplog: pytest.LogCaptureFixture
) -> None:
    server = start()
    police = deployment.identity("police")
    now = datetime.now(UTC).replace(microsecond=0)
    # An hour past nextUpdate: within the grace (a day), still current; a warning says so.
    within = now - timedelta(hours=1)
    crl_file(deployment, police_crl(deployment, this_update=now - timedelta(8), next_update=within))
    assert refusal(police, server) is None
    assert any(
        json.loads(r.getMessage())["event"].startswith("CRL past its nextUpdate, within the grace")
        for r in caplog.records
        if r.name == "sinergi.identity" and r.levelno == logging.WARNING
    )
    # Two days past: out of date, and every police identity is refused.
    late = now - timedelta(days=2)
    crl_file(deployment, police_crl(deployment, this_update=now - timedelta(9), next_update=late))
    out_of_date = (
        f"the CRL of issuing CA {POLICE_CA} is out of date (nextUpdate {late.isoformat()}, "
        "grace 1 day): its identities are refused until a current CRL is loaded"
    )
    assert refusal(police, server) == out_of_date
    assert refusal(deployment.identity("police", "officer", "budi"), server) == out_of_date
    assert refusal(deployment.identity("immigration"), server) is None
    assert crl_refusals(caplog) == [("expired", POLICE_CA)]  # once, not on every call
    assert [reason for _, _, reason in denied(server)] == [out_of_date] * 2
    deployment.pki.write_crls()  # a current CRL
    assert refusal(police, server) is None


def test_an_agency_ca_without_a_crl_is_refused_from_the_start(
    start: Callable[..., RunningServer],
    deployment: Deployment,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Customs joins, and its CA reaches the server's bundle, but no `pki crl` was run since.
    deployment.pki.create_agency_ca("customs")
    shutil.copy(deployment.pki.directory / "ca.crt", tmp_path / "fed-server" / "ca.crt")
    server = start()
    customs_ca = f"spiffe://{TD}/agency/customs"
    assert crl_refusals(caplog) == [("missing", customs_ca)]  # at start, naming the CA
    customs = deployment.identity("customs")
    assert refusal(customs, server) == missing(customs_ca)
    assert refusal(deployment.identity("police"), server) is None
    deployment.pki.write_crls()
    assert refusal(customs, server) is None


def test_a_restart_keeps_the_highest_crl_number(
    start: Callable[..., RunningServer],
    deployment: Deployment,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = start()
    older = deployment.crl.read_bytes()
    laptop = deployment.identity("police", "officer", "budi")
    deployment.pki.revoke(laptop, "keyCompromise")
    deployment.pki.write_crls()
    assert refusal(laptop, first) == REVOKED  # number 2 taken, and written down
    first.server_thread.stop()
    state = json.loads((tmp_path / "fed-server" / "crl.state.json").read_text())
    assert sorted(issuer["number"] for issuer in state["issuers"].values()) == [2, 2, 2]
    # While it was stopped, the older CRL file came back; the restarted exchange refuses it.
    put_crl(deployment, older)
    caplog.clear()
    second = start()
    assert crl_refusals(caplog) == [  # at start: every CRL goes back, no CA has one
        ("rollback", f"spiffe://{TD}"),
        ("rollback", IMMIGRATION_CA),
        ("rollback", POLICE_CA),
        ("missing", IMMIGRATION_CA),
        ("missing", POLICE_CA),
    ]
    assert refusal(laptop, second) == missing(POLICE_CA)  # no CRL in force: refused still
    immigration = deployment.identity("immigration")
    assert refusal(immigration, second) == missing(IMMIGRATION_CA)
    deployment.pki.write_crls()  # number 3
    assert refusal(laptop, second) == REVOKED
    assert refusal(immigration, second) is None


def test_crl_refusals_are_counted_and_the_crl_options_apply(
    start: Callable[..., RunningServer], deployment: Deployment, tmp_path: Path
) -> None:
    state = tmp_path / "elsewhere" / "crl-numbers.json"
    server = start(metrics_listen="127.0.0.1:0", crl_grace_seconds=0, crl_state=state)
    police = deployment.identity("police")
    before = scrape(server)
    assert value(before, "sinergi_crl_current", ca=POLICE_CA) == 1
    seconds = value(before, "sinergi_crl_next_update_seconds", ca=POLICE_CA)
    assert seconds is not None
    assert 6 * 86400 < seconds <= 7 * 86400
    assert value(before, "sinergi_crl_current", ca=f"spiffe://{TD}") is None  # issues none
    older = deployment.crl.read_bytes()
    deployment.pki.write_crls()
    assert refusal(police, server) is None  # number 2 taken
    put_crl(deployment, older)
    assert refusal(police, server) is None  # number 1 refused; 2 stays
    crl_file(deployment, police=None)
    assert refusal(police, server) == missing(POLICE_CA)
    # Without grace, a CRL a minute past its nextUpdate is out of date.
    now = datetime.now(UTC).replace(microsecond=0)
    late = now - timedelta(minutes=1)
    crl_file(deployment, police_crl(deployment, this_update=now - timedelta(7), next_update=late))
    assert refusal(police, server) == (
        f"the CRL of issuing CA {POLICE_CA} is out of date (nextUpdate {late.isoformat()}, "
        "grace 0 s): its identities are refused until a current CRL is loaded"
    )
    after = scrape(server)
    assert value(after, "sinergi_crl_refused_total", reason="rollback") == 3
    assert value(after, "sinergi_crl_refused_total", reason="missing") == 1
    assert value(after, "sinergi_crl_refused_total", reason="expired") == 1
    assert value(after, "sinergi_crl_refused_total", reason="bad_signature") == 0
    assert value(after, "sinergi_crl_current", ca=POLICE_CA) == 0
    assert value(after, "sinergi_crl_current", ca=IMMIGRATION_CA) == 1
    assert json.loads(state.read_text())["issuers"]
    assert not (tmp_path / "fed-server" / "crl.state.json").exists()


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
