"""Signing what we send and checking who sent what we receive (non-repudiation,
docs/decisions/0014).

A sender signs a ``sinergi.v1.Statement`` holding its request; the exchange stores that signature
in the message it makes. A recipient checks three things, each with no trust in the exchange:
the signer's certificate chains to an agency CA whose scope covers the sender (the same federated
check the exchange makes of TLS peers, :func:`certs.identity_refusal`); the signature verifies;
and the message is the one the statement asked for, up to what the exchange assigns (id, sent)
and what it derives (a ``*`` recipient list from its policy, an update's or cancellation's
addressing from the thread's original, which :func:`verify_alert` checks when given it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from google.protobuf.message import DecodeError

from certs import (
    STATEMENT_MAX_SKEW,
    STATEMENT_TYPE,
    CertsError,
    Signer,
    SpiffeId,
    TrustAnchors,
    fingerprint,
    trusted_signer,
    verify_signature,
)
from clients._alerts import ALL_MEMBERS, enum_name
from clients._errors import NotForUs, VerificationFailed
from sinergi.v1 import alert_pb2, exchange_pb2

__all__ = [
    "Addressing",
    "SignatureFailed",
    "SignedBy",
    "check_for_us",
    "sign_request",
    "signed_addressing",
    "verify_alert",
]

SignedRequest = (
    exchange_pb2.PublishRequest | exchange_pb2.UpdateRequest | exchange_pb2.CancelRequest
)


class SignatureFailed(VerificationFailed):
    """A message's sender signature is missing, forged, or does not match the message."""


#: Markings whose alerts reach agencies that the sender did not name: TLP:AMBER those a
#: recipient's policy shares with, TLP:GREEN and TLP:CLEAR every member receiving the category.
#: The policy is the exchange's, so a client cannot tell whether it may see them.
_POLICY_DECIDES = frozenset({alert_pb2.TLP_AMBER, alert_pb2.TLP_GREEN, alert_pb2.TLP_CLEAR})


@dataclass(frozen=True)
class Addressing:
    """Who may see a thread, as its sender signed it: the sending agency, the marking, and the
    recipient agencies (for a statement that asked for ``*``, the exchange's expansion)."""

    sender_agency: str
    handling: alert_pb2.Tlp.ValueType
    recipients: tuple[str, ...]


@dataclass(frozen=True)
class SignedBy:
    """Who signed a message and when, as its verified signature says."""

    sender: SpiffeId
    fingerprint: str  # of the signing certificate, as the ledger writes fingerprints
    signed_at: datetime | None  # None when redacted
    redacted: bool = False  # personal data removed under retention: nothing left to check


def sign_request(
    request: SignedRequest, signer: Signer, sender: SpiffeId, now: datetime | None = None
) -> None:
    """Set ``request.signature``: over a Statement holding the request, its signature unset.

    Raises none of the typed errors: it reads nothing but the request and the key."""
    request.ClearField("signature")
    statement = exchange_pb2.Statement(sender=str(sender))
    statement.signed_at.FromDatetime(now or datetime.now(UTC))
    kind = {
        exchange_pb2.PublishRequest: "publish",
        exchange_pb2.UpdateRequest: "update",
        exchange_pb2.CancelRequest: "cancel",
    }[type(request)]
    getattr(statement, kind).CopyFrom(request)
    payload = statement.SerializeToString()
    request.signature.statement = payload
    request.signature.signature = signer.sign(STATEMENT_TYPE, payload)


def verify_alert(
    alert: alert_pb2.Alert,
    anchors: TrustAnchors,
    trust_domain: str,
    *,
    original: alert_pb2.Alert | None = None,
) -> SignedBy:
    """Check ``alert``'s sender signature; raise :class:`SignatureFailed` saying what is wrong.

    ``original`` is the first message of the alert's thread: with it, an UPDATE's or CANCEL's
    addressing (which the exchange copies from the original) is checked too."""
    where = f"alert {alert.id or '(no id)'}"
    if not alert.HasField("signature"):
        raise SignatureFailed(f"{where} carries no sender signature")
    signed = alert.signature
    try:
        cert, signer = trusted_signer(bytes(signed.certificate), trust_domain, anchors)
        if signed.redacted:
            return _redacted(alert, cert, signer, where)
        verify_signature(cert, STATEMENT_TYPE, signed.statement, signed.signature)
    except CertsError as exc:
        raise SignatureFailed(f"{where}: {exc}") from None
    statement = exchange_pb2.Statement()
    try:
        statement.ParseFromString(signed.statement)
        signed_at = statement.signed_at.ToDatetime(UTC)
        sent = alert.sent.ToDatetime(UTC)
    except (DecodeError, ValueError, OverflowError) as exc:
        raise SignatureFailed(f"{where}: malformed signed statement ({exc})") from None
    if not str(signer) == statement.sender == alert.sender:
        raise SignatureFailed(
            f"{where} says sender {alert.sender!r}, its statement {statement.sender!r}, "
            f"its certificate {str(signer)!r}"
        )
    if not cert.not_valid_before_utc <= sent <= cert.not_valid_after_utc:
        raise SignatureFailed(f"{where}: the signer's certificate was not valid when it was sent")
    if abs(sent - signed_at) > STATEMENT_MAX_SKEW:
        raise SignatureFailed(f"{where} was sent at {sent}, but signed at {signed_at}")
    mismatch = _mismatch(alert, statement, original)
    if mismatch:
        raise SignatureFailed(f"{where} is not what its sender signed: {mismatch}")
    return SignedBy(signer, fingerprint(cert), signed_at)


def _redacted(
    alert: alert_pb2.Alert, cert: x509.Certificate, signer: SpiffeId, where: str
) -> SignedBy:
    """A message whose statement retention removed: only its envelope is left to be right."""
    if str(signer) != alert.sender:
        raise SignatureFailed(f"{where} says sender {alert.sender!r}, its certificate {signer}")
    if alert.signature.statement or alert.subjects or alert.HasField("place") or alert.details:
        raise SignatureFailed(f"{where} is marked redacted but still holds its content")
    return SignedBy(signer, fingerprint(cert), None, redacted=True)


def _mismatch(
    alert: alert_pb2.Alert, statement: exchange_pb2.Statement, original: alert_pb2.Alert | None
) -> str | None:
    """What differs between ``alert`` and the message ``statement`` asks for, or None."""
    asked = _asked_for(alert, statement)
    if isinstance(asked, str):
        return asked
    expected, named = asked
    expected.message_type = alert.message_type
    expected.id, expected.sender = alert.id, alert.sender
    expected.sent.CopyFrom(alert.sent)
    expected.signature.CopyFrom(alert.signature)
    if named is not None:
        if named not in alert.references:
            return f"the statement names alert {named}, which the message does not reference"
        expected.ClearField("references")
        expected.references.extend(alert.references)
    if expected != alert:
        differ = [
            f.name
            for f in alert_pb2.Alert.DESCRIPTOR.fields
            if getattr(expected, f.name) != getattr(alert, f.name)
        ]
        return "fields " + ", ".join(differ) + " differ"
    if original is not None and named is not None:
        return _addressing_mismatch(
            alert, original, cancel=alert.message_type == alert_pb2.MESSAGE_TYPE_CANCEL
        )
    return None


def _asked_for(
    alert: alert_pb2.Alert, statement: exchange_pb2.Statement
) -> tuple[alert_pb2.Alert, str | None] | str:
    """The content the statement asks for, with the thread it names (None for a publish); or
    what makes the statement the wrong kind for ``alert``."""
    kind = statement.WhichOneof("request")
    expected = alert_pb2.Alert()
    if kind == "publish" and alert.message_type == alert_pb2.MESSAGE_TYPE_ALERT:
        expected.CopyFrom(statement.publish.alert)
        if list(expected.recipients) == [ALL_MEMBERS]:  # the exchange's policy chose them
            expected.ClearField("recipients")
            expected.recipients.extend(alert.recipients)
        return expected, None
    if kind == "update" and alert.message_type == alert_pb2.MESSAGE_TYPE_UPDATE:
        expected.CopyFrom(statement.update.alert)
        for name, given in (("category", expected.category), ("handling", expected.handling)):
            if given and given != getattr(alert, name):
                return f"the update asked for another {name}"
        if expected.recipients and sorted(expected.recipients) != sorted(alert.recipients):
            return "the update asked for other recipients"
        expected.category, expected.handling = alert.category, alert.handling
        expected.ClearField("recipients")
        expected.recipients.extend(alert.recipients)
        return expected, statement.update.alert_id
    if kind == "cancel" and alert.message_type == alert_pb2.MESSAGE_TYPE_CANCEL:
        expected.CopyFrom(alert)  # the envelope is the original's: checked against it
        for name in ("subjects", "place", "details", "expires"):
            expected.ClearField(name)  # type: ignore[arg-type]
        expected.summary = statement.cancel.reason
        return expected, statement.cancel.alert_id
    message_type = alert_pb2.MessageType.Name(alert.message_type)
    return f"a {kind or 'empty'} statement for a {message_type} message"


def _addressing_mismatch(
    alert: alert_pb2.Alert, original: alert_pb2.Alert, *, cancel: bool
) -> str | None:
    """An update or cancel keeps its thread's addressing (a cancel its whole envelope)."""
    if not alert.references or alert.references[0] != original.id:
        return f"it does not reference its thread's original alert {original.id}"
    names = ["category", "handling"]
    if cancel:
        names += ["status", "severity", "urgency", "certainty"]
    differ = [n for n in names if getattr(alert, n) != getattr(original, n)]
    if sorted(alert.recipients) != sorted(original.recipients):
        differ.append("recipients")
    return f"its {', '.join(differ)} differ from the original's" if differ else None


def _agency(spiffe_id: str) -> str:
    try:
        return SpiffeId.parse(spiffe_id).agency
    except CertsError:
        return ""


def signed_addressing(
    alert: alert_pb2.Alert, original: alert_pb2.Alert | None = None
) -> Addressing:
    """Who may see ``alert`` as its thread's sender signed it: from ``original``'s statement when
    given (an update or cancellation keeps the original's addressing), else from ``alert``'s.

    What a statement leaves to the exchange is taken from the message, which :func:`verify_alert`
    checked against it: a ``*`` recipient list (the exchange's policy expands it), an update's
    addressing when it did not restate it, a cancellation's, and everything of a message whose
    statement retention removed. Raises nothing: a statement that does not parse is
    :func:`verify_alert`'s to refuse."""
    message = original if original is not None else alert
    statement = exchange_pb2.Statement()
    signed = message.signature
    if message.HasField("signature") and not signed.redacted:
        try:
            statement.ParseFromString(signed.statement)
        except DecodeError:
            statement.Clear()
    kind = statement.WhichOneof("request")
    asked = alert_pb2.Alert()
    if kind in ("publish", "update"):
        asked = statement.publish.alert if kind == "publish" else statement.update.alert
    recipients = list(asked.recipients)
    if not recipients or recipients == [ALL_MEMBERS]:
        recipients = list(message.recipients)
    return Addressing(
        sender_agency=_agency(statement.sender if kind else message.sender),
        handling=asked.handling or message.handling,
        recipients=tuple(recipients),
    )


def _marking(handling: alert_pb2.Tlp.ValueType) -> str:
    try:
        return enum_name(alert_pb2.Tlp, "TLP_", handling).replace("_", "+")
    except ValueError:  # a marking this client does not know
        return str(int(handling))


def check_for_us(
    alert: alert_pb2.Alert,
    agency: str,
    *,
    original: alert_pb2.Alert | None = None,
    delivered: bool = False,
) -> Addressing:
    """Refuse ``alert`` (:class:`NotForUs`) unless what its sender signed lets ``agency`` see it;
    return what it signed.

    What a client can tell without the exchange's policy: its own agency's alerts are its to
    see; a delivery (``delivered``: Subscribe pushes only what is addressed) and a TLP:RED or
    TLP:AMBER+STRICT alert must name ``agency`` among the recipients. A TLP:AMBER alert may be
    shared with it by a recipient's policy, and a TLP:GREEN or TLP:CLEAR one reaches every
    member that receives its category: the policy says, which the client does not hold, so these
    pass. ``original`` is the thread's first message, when the caller has it."""
    signed = signed_addressing(alert, original)
    if delivered:
        allowed = agency in signed.recipients
    else:
        allowed = (
            signed.sender_agency == agency
            or agency in signed.recipients
            or signed.handling in _POLICY_DECIDES
        )
    if allowed:
        return signed
    raise NotForUs(
        alert.id,
        handling=_marking(signed.handling),
        sender_agency=signed.sender_agency,
        recipients=signed.recipients,
        agency=agency,
    )
