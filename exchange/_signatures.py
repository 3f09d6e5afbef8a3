"""The sender's signature on Publish, Update and Cancel (non-repudiation, docs/decisions/0014).

A request carries a signature, by the key of the TLS peer's certificate, over a
``sinergi.v1.Statement`` that holds the request itself (its ``signature`` unset), the sender and
the signing time. The exchange checks it and stores it in the message it makes, so a recipient
can check that the agency asked for exactly this message: the exchange holds no agency's key and
so cannot make a message one would accept.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from google.protobuf.message import DecodeError

from certs import (
    STATEMENT_MAX_SKEW,
    STATEMENT_TYPE,
    CertsError,
    SignatureInvalid,
    SpiffeId,
    verify_signature,
)
from exchange._errors import InvalidArgument, PermissionDenied, Unauthenticated
from exchange._identity import Principal
from exchange._validate import ALL_MEMBERS
from sinergi.v1 import alert_pb2, exchange_pb2

__all__ = [
    "Addressing",
    "SignedRequest",
    "check_signature",
    "envelope_of",
    "follow_up_mismatch",
    "signed_addressing",
    "signed_statement",
    "unsigned",
]

SignedRequest = TypeVar(
    "SignedRequest",
    exchange_pb2.PublishRequest,
    exchange_pb2.UpdateRequest,
    exchange_pb2.CancelRequest,
)

_KIND = {
    exchange_pb2.PublishRequest: "publish",
    exchange_pb2.UpdateRequest: "update",
    exchange_pb2.CancelRequest: "cancel",
}


def unsigned(request: SignedRequest) -> SignedRequest:
    """``request`` without its signature: what the statement holds, and what a retry repeats."""
    bare = type(request)()
    bare.CopyFrom(request)
    bare.ClearField("signature")
    return bare


def check_signature(
    request: SignedRequest, principal: Principal, now: datetime
) -> alert_pb2.SenderSignature:
    """The signature to store in the message, or the error to refuse the request with."""
    if not request.HasField("signature"):
        raise InvalidArgument(
            "the request must be signed with your identity key",
            [("signature", "is required: a signature over a Statement holding this request")],
        )
    signed = request.signature
    der = principal.certificate_der
    if signed.certificate and signed.certificate != der:
        raise InvalidArgument(
            "the signature names another certificate",
            [("signature.certificate", "must be empty or the certificate you connect with")],
        )
    try:
        verify_signature(principal.certificate, STATEMENT_TYPE, signed.statement, signed.signature)
    except SignatureInvalid:
        raise Unauthenticated(
            "the signature is not by the key of your TLS certificate",
            [("signature.signature", "does not verify with your certificate's key")],
        ) from None
    statement = exchange_pb2.Statement()
    try:
        statement.ParseFromString(signed.statement)
    except DecodeError:
        raise InvalidArgument(
            "the signed statement cannot be parsed",
            [("signature.statement", "is not a serialized sinergi.v1.Statement")],
        ) from None
    if statement.sender != str(principal.id):
        raise PermissionDenied(
            "the statement is signed for another sender",
            [("signature.statement.sender", f"must be your identity, {principal.id}")],
        )
    if not statement.HasField("signed_at") or not _near(statement, now):
        raise InvalidArgument(
            "the statement's signing time is not now",
            [("signature.statement.signed_at", "must be within 5 minutes of the exchange's clock")],
        )
    kind = _KIND[type(request)]
    if statement.WhichOneof("request") != kind or getattr(statement, kind) != unsigned(request):
        raise InvalidArgument(
            "the signed statement does not hold this request",
            [("signature.statement", f"must hold this {kind} request, its signature unset")],
        )
    return alert_pb2.SenderSignature(
        statement=signed.statement, signature=signed.signature, certificate=der
    )


def _near(statement: exchange_pb2.Statement, now: datetime) -> bool:
    try:
        signed_at = statement.signed_at.ToDatetime(now.tzinfo)
    except (ValueError, OverflowError):
        return False
    return abs(signed_at - now) <= STATEMENT_MAX_SKEW


# -- what the sender signed, read back from a stored message ---------------------------------


@dataclass(frozen=True)
class Addressing:
    """Who may see a thread, in the terms of the alert rows (exchange/_tables.py): the sending
    agency, the category and marking by name without their enum prefix, the recipient agencies.
    """

    sender_agency: str
    category: str
    handling: str
    recipients: frozenset[str]


def _agency(spiffe_id: str) -> str:
    try:
        return SpiffeId.parse(spiffe_id).agency
    except CertsError:
        return ""  # matches no row: the message is refused as tampered


def _category(value: alert_pb2.Category.ValueType) -> str:
    try:
        return alert_pb2.Category.Name(value).removeprefix("CATEGORY_")
    except ValueError:  # a number no release defined: a row never holds it
        return str(int(value))


def _handling(value: alert_pb2.Tlp.ValueType) -> str:
    try:
        return alert_pb2.Tlp.Name(value).removeprefix("TLP_")
    except ValueError:
        return str(int(value))


def envelope_of(alert: alert_pb2.Alert) -> Addressing:
    """The addressing ``alert`` itself carries (the exchange wrote it; sealed with the body)."""
    return Addressing(
        sender_agency=_agency(alert.sender),
        category=_category(alert.category),
        handling=_handling(alert.handling),
        recipients=frozenset(alert.recipients),
    )


def signed_statement(alert: alert_pb2.Alert) -> exchange_pb2.Statement | None:
    """The statement ``alert``'s sender signed; None when the message keeps none (removed under
    retention, or stored before signatures were required). Raises ``DecodeError``.

    Not verified again: the exchange verified it before storing it, and the sealed body is bound
    to its row; a database administrator can rewrite only plain bodies, which they read anyway.
    """
    if not alert.HasField("signature") or alert.signature.redacted:
        return None
    return exchange_pb2.Statement.FromString(alert.signature.statement)


def signed_addressing(original: alert_pb2.Alert) -> Addressing | str:
    """The addressing the sender of a thread's ``original`` signed, or the field of the message
    that disagrees with its statement.

    A ``*`` recipient list is the exchange's expansion under its policy, which the message holds.
    A message without a statement has only its own envelope to go by."""
    try:
        statement = signed_statement(original)
    except DecodeError:
        return "message.statement"
    if statement is None:
        return envelope_of(original)
    if statement.WhichOneof("request") != "publish":
        return "message.statement"
    if statement.sender != original.sender:
        return "message.sender"
    asked = statement.publish.alert
    everyone = list(asked.recipients) == [ALL_MEMBERS]
    return Addressing(
        sender_agency=_agency(statement.sender),
        category=_category(asked.category),
        handling=_handling(asked.handling),
        recipients=frozenset(original.recipients if everyone else asked.recipients),
    )


def follow_up_mismatch(message: alert_pb2.Alert) -> str | None:
    """What of an UPDATE's or CANCEL's own statement disagrees with the message, or None: its
    kind, its sender, the thread message it names, and the addressing an update restated (the
    rest of its addressing is the original's, which the caller compares)."""
    try:
        statement = signed_statement(message)
    except DecodeError:
        return "message.statement"
    if statement is None:
        return None
    kind = statement.WhichOneof("request")
    cancel = message.message_type == alert_pb2.MESSAGE_TYPE_CANCEL
    if kind != ("cancel" if cancel else "update"):
        return "message.statement"
    named = statement.cancel.alert_id if cancel else statement.update.alert_id
    given = statement.update.alert
    differs = {
        "message.sender": statement.sender != message.sender,
        "message.references": named not in message.references,
        "message.category": given.category not in (0, message.category),
        "message.handling": given.handling not in (0, message.handling),
        "message.recipients": bool(given.recipients)
        and set(given.recipients) != set(message.recipients),
    }
    return next((name for name, differ in differs.items() if differ), None)
