"""The recipient's check of a sender signature (clients.verify_alert), on messages built here as
the exchange stores them; tests/integration/test_signatures.py runs it against the real server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from certs import STATEMENT_TYPE, Signer, TrustAnchors, create_dev_pki, load_identity
from clients import SignatureFailed, new_alert, parse_subjects, sign_request, verify_alert
from sinergi.v1 import alert_pb2, exchange_pb2

TRUST_DOMAIN = "sinergi.dev"


def _stored(pki: Path, who: str = "immigration", sent: datetime | None = None) -> alert_pb2.Alert:
    """A published alert as the exchange stores it: the request's alert, the assigned fields,
    and the request's signature with the signer's certificate."""
    identity = load_identity(pki / who)
    assert identity.spiffe_id is not None
    request = exchange_pb2.PublishRequest(
        idempotency_key="k1",
        alert=new_alert(
            category="PASSPORT_HOLD",
            recipients=["police"],
            summary="held",
            subjects=parse_subjects(["passport=C1234567"]),
        ),
    )
    sign_request(request, Signer(identity.key_pem), identity.spiffe_id)
    alert = alert_pb2.Alert()
    alert.CopyFrom(request.alert)
    alert.id = "0b0e6f5e-3c3a-4d5e-9f6a-2b1c0d9e8f7a"
    alert.sender = str(identity.spiffe_id)
    alert.message_type = alert_pb2.MESSAGE_TYPE_ALERT
    alert.sent.FromDatetime(sent or datetime.now(UTC))
    alert.signature.CopyFrom(request.signature)
    alert.signature.certificate = identity.certificate.public_bytes(Encoding.DER)
    return alert


def _anchors(pki: Path) -> TrustAnchors:
    return TrustAnchors.from_pem((pki / "police" / "ca.crt").read_bytes())


def test_a_message_as_stored_verifies(pki: Path) -> None:
    signed = verify_alert(_stored(pki), _anchors(pki), TRUST_DOMAIN)
    assert str(signed.sender) == "spiffe://sinergi.dev/agency/immigration/system/gateway"
    assert not signed.redacted


def test_every_alteration_fails_and_says_what(pki: Path) -> None:
    anchors = _anchors(pki)
    cases: dict[str, alert_pb2.Alert] = {}
    cases["fields summary differ"] = _stored(pki)
    cases["fields summary differ"].summary = "released"
    cases["fields subjects differ"] = _stored(pki)
    del cases["fields subjects differ"].subjects[:]
    cases["carries no sender signature"] = _stored(pki)
    cases["carries no sender signature"].ClearField("signature")
    cases["says sender"] = _stored(pki)
    cases["says sender"].sender = "spiffe://sinergi.dev/agency/police/system/gateway"
    cases["statement for a MESSAGE_TYPE_UPDATE"] = _stored(pki)
    cases["statement for a MESSAGE_TYPE_UPDATE"].message_type = alert_pb2.MESSAGE_TYPE_UPDATE
    cases["does not verify"] = _stored(pki)
    cases["does not verify"].signature.statement += b"\x00"
    late = _stored(pki)  # the exchange stamped a time far from the signing time
    late.sent.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
    cases["but signed at"] = late
    garbage = _stored(pki)  # signed by the agency, but not a Statement
    garbage.signature.statement = b"\xff\xff"
    garbage.signature.signature = Signer(load_identity(pki / "immigration").key_pem).sign(
        STATEMENT_TYPE, garbage.signature.statement
    )
    cases["malformed signed statement"] = garbage
    redacted = _stored(pki)  # "redacted" while still holding the content
    redacted.signature.redacted = True
    cases["marked redacted but still holds its content"] = redacted
    for expected, alert in cases.items():
        with pytest.raises(SignatureFailed, match=expected):
            verify_alert(alert, anchors, TRUST_DOMAIN)


def test_a_signer_outside_the_trust_bundle_or_domain_fails(pki: Path, tmp_path: Path) -> None:
    other = create_dev_pki(tmp_path / "other").directory  # another deployment's CA
    with pytest.raises(SignatureFailed, match="not in the trust bundle"):
        verify_alert(_stored(other), _anchors(pki), TRUST_DOMAIN)
    with pytest.raises(SignatureFailed, match="trust domain"):
        verify_alert(_stored(pki), _anchors(pki), "elsewhere.example")
