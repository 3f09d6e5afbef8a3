"""The sender's signature on Publish, Update and Cancel (non-repudiation, docs/decisions/0014).

A request carries a signature, by the key of the TLS peer's certificate, over a
``sinergi.v1.Statement`` that holds the request itself (its ``signature`` unset), the sender and
the signing time. The exchange checks it and stores it in the message it makes, so a recipient
can check that the agency asked for exactly this message: the exchange holds no agency's key and
so cannot make a message one would accept.
"""

from __future__ import annotations

from datetime import datetime
from typing import TypeVar

from google.protobuf.message import DecodeError

from certs import STATEMENT_MAX_SKEW, STATEMENT_TYPE, SignatureInvalid, verify_signature
from exchange._errors import InvalidArgument, PermissionDenied, Unauthenticated
from exchange._identity import Principal
from sinergi.v1 import alert_pb2, exchange_pb2

__all__ = ["SignedRequest", "check_signature", "unsigned"]

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
