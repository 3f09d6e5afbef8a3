import hashlib
import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from certs import (
    CertificateError,
    Issued,
    SpiffeId,
    create_ca,
    fingerprint,
    identity_of,
    issue_client,
    issue_server,
    load_pem_certificate,
)

OFFICER = SpiffeId("sinergi.dev", "police", "officer", "investigator")


@pytest.fixture(scope="module")
def ca():
    return create_ca("Test CA")


@pytest.fixture(scope="module")
def client(ca):
    return issue_client(ca, OFFICER)


@pytest.fixture(scope="module")
def server(ca):
    return issue_server(
        ca,
        common_name="sinergi-exchange",
        dns_names=["localhost"],
        ip_addresses=["127.0.0.1", "::1"],
    )


def ext(cert, kind):
    return cert.extensions.get_extension_for_class(kind)


def policy(ca):
    return PolicyBuilder().store(Store([ca.certificate])).time(datetime.now(UTC))


def test_ca_profile(ca):
    cert = ca.certificate
    constraints = ext(cert, x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value == x509.BasicConstraints(ca=True, path_length=1)
    usage = ext(cert, x509.KeyUsage)
    assert usage.critical
    assert usage.value.key_cert_sign
    assert usage.value.crl_sign
    assert not usage.value.digital_signature
    assert ext(cert, x509.SubjectKeyIdentifier).value == (
        x509.SubjectKeyIdentifier.from_public_key(cert.public_key())
    )
    cert.verify_directly_issued_by(cert)
    assert cert.subject == cert.issuer
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Test CA"
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    assert 0 < cert.serial_number < 2**159


def test_validity_backdated_for_clock_skew(ca, client):
    now = datetime.now(UTC)
    for cert, days in ((ca.certificate, 3650), (client.certificate, 397)):
        skew = now - cert.not_valid_before_utc
        assert timedelta(minutes=4) < skew < timedelta(minutes=6)
        lifetime = cert.not_valid_after_utc - now
        assert timedelta(days=days) - timedelta(minutes=1) < lifetime <= timedelta(days=days)


def test_serials_are_random():
    assert create_ca("a").certificate.serial_number != create_ca("a").certificate.serial_number


def test_client_profile(ca, client):
    cert = client.certificate
    san = ext(cert, x509.SubjectAlternativeName).value
    assert list(san) == [x509.UniformResourceIdentifier(str(OFFICER))]
    assert list(ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    constraints = ext(cert, x509.BasicConstraints)
    assert constraints.critical
    assert not constraints.value.ca
    usage = ext(cert, x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature
    assert not usage.value.key_cert_sign
    assert ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier == (
        ext(ca.certificate, x509.SubjectKeyIdentifier).value.digest
    )
    assert ext(cert, x509.SubjectKeyIdentifier).value == (
        x509.SubjectKeyIdentifier.from_public_key(cert.public_key())
    )
    assert cert.subject.rfc4514_string() == "CN=investigator,OU=officer,O=police"
    assert cert.issuer == ca.certificate.subject


def test_client_chain_verifies(ca, client):
    verified = policy(ca).build_client_verifier().verify(client.certificate, [])
    assert verified.chain == [client.certificate, ca.certificate]
    assert verified.subjects == [x509.UniformResourceIdentifier(str(OFFICER))]


def test_client_from_another_ca_does_not_verify(ca):
    stranger = issue_client(create_ca("Other CA"), OFFICER)
    with pytest.raises(VerificationError):
        policy(ca).build_client_verifier().verify(stranger.certificate, [])


def test_client_cannot_act_as_server(ca, client):
    with pytest.raises(VerificationError):
        policy(ca).build_server_verifier(x509.DNSName("localhost")).verify(client.certificate, [])


def test_identity_and_fingerprint(client):
    assert identity_of(client.certificate) == OFFICER
    der = client.certificate.public_bytes(Encoding.DER)
    assert fingerprint(client.certificate) == hashlib.sha256(der).hexdigest()
    assert len(fingerprint(client.certificate)) == 64


def test_officer_and_system_are_distinct(ca):
    system = issue_client(ca, SpiffeId("sinergi.dev", "police", "system", "gateway"))
    assert identity_of(system.certificate).kind == "system"
    assert system.certificate.subject.rfc4514_string() == "CN=gateway,OU=system,O=police"


def test_server_profile(ca, server):
    cert = server.certificate
    san = ext(cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == []
    assert list(ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not ext(cert, x509.BasicConstraints).value.ca
    assert ext(cert, x509.KeyUsage).critical
    assert cert.subject.rfc4514_string() == "CN=sinergi-exchange"
    for subject in (
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ):
        policy(ca).build_server_verifier(subject).verify(cert, [])
    with pytest.raises(VerificationError):
        policy(ca).build_server_verifier(x509.DNSName("example.org")).verify(cert, [])


def test_server_has_no_identity(server):
    with pytest.raises(CertificateError, match="0 URI"):
        identity_of(server.certificate)


def test_server_arguments_checked(ca):
    with pytest.raises(CertificateError, match="'localhost' is not an IP address"):
        issue_server(ca, common_name="x", dns_names=[], ip_addresses=["localhost"])
    with pytest.raises(CertificateError, match="at least one"):
        issue_server(ca, common_name="x", dns_names=[], ip_addresses=[])


def test_leaf_never_outlives_ca():
    short = create_ca("Short-lived CA", valid_days=1)
    leaf = issue_client(short, OFFICER, valid_days=397)
    assert leaf.certificate.not_valid_after_utc == short.certificate.not_valid_after_utc


def test_leaf_cannot_issue(client):
    with pytest.raises(CertificateError, match="not a CA"):
        issue_client(client, OFFICER)


def test_valid_days_must_be_positive(ca):
    with pytest.raises(ValueError, match="positive"):
        issue_client(ca, OFFICER, valid_days=0)


def test_pem_round_trip(client):
    assert load_pem_certificate(client.cert_pem()) == client.certificate
    key_pem = client.key_pem()
    assert key_pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")  # PKCS#8, unencrypted


def test_issued_refuses_mismatched_key(client):
    with pytest.raises(CertificateError, match="does not match"):
        Issued(client.certificate, ec.generate_private_key(ec.SECP256R1()))


@pytest.mark.parametrize("data", [b"", b"garbage", b"-----BEGIN CERTIFICATE-----\nAAAA\n"])
def test_load_pem_certificate_rejects_garbage(data):
    with pytest.raises(CertificateError, match="not a PEM certificate"):
        load_pem_certificate(data)


def _leaf_with_san(ca, names):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "odd")]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
    )
    if names is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca.private_key, hashes.SHA256())


@pytest.mark.parametrize(
    ("names", "reason"),
    [
        (None, "no subjectAltName"),
        ([x509.DNSName("localhost")], "0 URI"),
        (
            [
                x509.UniformResourceIdentifier("spiffe://sinergi.dev/agency/police/system/a"),
                x509.UniformResourceIdentifier("spiffe://sinergi.dev/agency/police/system/b"),
            ],
            "2 URI",
        ),
        ([x509.UniformResourceIdentifier("spiffe://sinergi.dev/agency/police/bot/a")], "kind"),
    ],
)
def test_identity_of_refuses(ca, names, reason):
    with pytest.raises(CertificateError, match=reason):
        identity_of(_leaf_with_san(ca, names))
