"""Statement signatures by identity keys (DSSE v1) and whether a signer's certificate is trusted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs import (
    STATEMENT_TYPE,
    CaScope,
    CertificateError,
    SignatureInvalid,
    Signer,
    SpiffeId,
    TrustAnchors,
    create_agency_ca,
    create_ca,
    issue_client,
    issue_server,
    pae,
    trusted_signer,
    verify_signature,
)
from certs._x509 import _leaf, _validity

IMMIGRATION = SpiffeId("sinergi.dev", "immigration", "system", "gateway")


def _pem(key: object) -> bytes:
    return key.private_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def test_pae_is_dsse_v1() -> None:
    # secure-systems-lab/dsse protocol.md, "Signature definition", worked example.
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )
    assert pae("t", b"") == b"DSSEv1 1 t 0 "


def test_ecdsa_identity_signs_and_only_that_statement_and_type_verify() -> None:
    ca = create_ca("Test CA", scope=CaScope("sinergi.dev", development=True))
    issued = issue_client(ca, IMMIGRATION)
    signature = Signer(_pem(issued.private_key)).sign(STATEMENT_TYPE, b"statement")
    verify_signature(issued.certificate, STATEMENT_TYPE, b"statement", signature)
    with pytest.raises(SignatureInvalid):
        verify_signature(issued.certificate, STATEMENT_TYPE, b"statemenT", signature)
    with pytest.raises(SignatureInvalid):  # the payload type is signed too
        verify_signature(issued.certificate, "application/other", b"statement", signature)
    other = issue_client(ca, IMMIGRATION)  # same name, another key
    with pytest.raises(SignatureInvalid):
        verify_signature(other.certificate, STATEMENT_TYPE, b"statement", signature)


def test_ed25519_keys_sign_too() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ed25519")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(now).not_valid_after(now + timedelta(days=1))
        .sign(key, None)
    )  # fmt: skip
    signature = Signer(_pem(key)).sign(STATEMENT_TYPE, b"s")
    verify_signature(cert, STATEMENT_TYPE, b"s", signature)
    with pytest.raises(SignatureInvalid):
        verify_signature(cert, STATEMENT_TYPE, b"t", signature)


def test_a_signer_is_trusted_only_through_a_ca_whose_scope_covers_its_agency() -> None:
    root = create_ca("Root", scope=CaScope("sinergi.dev"))
    immigration_ca = create_agency_ca(root, "immigration")
    police_ca = create_agency_ca(root, "police")
    anchors = TrustAnchors.from_pem(
        b"".join(
            c.certificate.public_bytes(Encoding.PEM) for c in (root, immigration_ca, police_ca)
        )
    )
    good = issue_client(immigration_ca, IMMIGRATION).certificate.public_bytes(Encoding.DER)
    cert, who = trusted_signer(good, "sinergi.dev", anchors)
    assert who == IMMIGRATION
    assert cert.public_bytes(Encoding.DER) == good

    # What issue_client refuses to make, made with the police CA's key itself.
    san = [x509.UniformResourceIdentifier(str(IMMIGRATION))]
    cross = _leaf(police_ca, x509.Name([]), san, ExtendedKeyUsageOID.CLIENT_AUTH, _validity(30))
    refusals = {
        "another agency's CA": cross,
        "a CA outside the bundle": issue_client(
            create_ca("Stranger", scope=CaScope("sinergi.dev", development=True)), IMMIGRATION
        ),
        "another trust domain": issue_client(
            create_ca("Elsewhere", scope=CaScope("elsewhere.example", development=True)),
            SpiffeId("elsewhere.example", "immigration", "system", "gateway"),
        ),
    }
    for what, issued in refusals.items():
        with pytest.raises(CertificateError, match="signer"):
            trusted_signer(issued.certificate.public_bytes(Encoding.DER), "sinergi.dev", anchors)
        assert what
    server = issue_server(root, common_name="x", dns_names=["localhost"], ip_addresses=[])
    with pytest.raises(CertificateError):  # no principal: the exchange's own key signs nothing
        trusted_signer(server.certificate.public_bytes(Encoding.DER), "sinergi.dev", anchors)
    with pytest.raises(CertificateError, match="cannot be parsed"):
        trusted_signer(b"\x30\x03junk", "sinergi.dev", anchors)
