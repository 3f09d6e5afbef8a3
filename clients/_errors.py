"""Typed client errors, mapped from gRPC status codes in one place (:func:`from_rpc_error`)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


class ClientError(Exception):
    """Base of every error raised by :mod:`clients`. ``exit_code`` is the CLI's for it."""

    exit_code = 1

    def __init__(self, message: str, violations: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.violations = violations

    @property
    def details(self) -> dict[str, Any]:
        """Facts a program needs besides the message (the CLI's --json adds them)."""
        return {}

    def __str__(self) -> str:
        if not self.violations:
            return self.message
        fields = "; ".join(f"{f}: {d}" for f, d in self.violations)
        return f"{self.message} ({fields})"


class UsageError(ClientError):
    """Wrong or missing local input: a flag, an identity directory, a key file."""

    exit_code = 2


class Unreachable(ClientError):
    exit_code = 3


class Refused(ClientError):
    """The exchange refused the request; ``code`` is the gRPC status."""

    def __init__(
        self, code: grpc.StatusCode, message: str, violations: tuple[tuple[str, str], ...] = ()
    ) -> None:
        super().__init__(message, violations)
        self.code = code


class VerificationFailed(ClientError):
    """A receipt, checkpoint or ledger did not verify. Never a warning: the result is refused."""


class NotForUs(VerificationFailed):
    """The exchange served an alert that its sender's signed marking and recipients keep from
    this agency: the exchange, or whoever changed its database, showed it where it must not go.
    Raised before the alert is returned; says who it was for, never what it says."""

    def __init__(
        self,
        alert_id: str,
        *,
        handling: str,
        sender_agency: str,
        recipients: Sequence[str],
        agency: str,
    ) -> None:
        self.alert_id = alert_id
        self.handling = handling
        self.sender_agency = sender_agency
        self.recipients = tuple(sorted(recipients))
        self.agency = agency
        super().__init__(
            f"alert {alert_id} is TLP:{handling} from {sender_agency or '(unknown)'} to "
            f"{', '.join(self.recipients) or '(no one)'} as its sender signed it, not for "
            f"{agency}: the exchange must not have shown it to you; report it to internal affairs"
        )

    @property
    def details(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id,
            "handling": self.handling,
            "sender_agency": self.sender_agency,
            "recipients": list(self.recipients),
            "agency": self.agency,
        }


# What grpc core says (in UNAVAILABLE's details) when this client's TLS refused the exchange's
# certificate: no chain to the identity's ca.crt (or expired), or not the host dialled.
_SERVER_CERTIFICATE_REFUSED = ("CERTIFICATE_VERIFY_FAILED", "Hostname Verification Check failed")
# The TLS handshake succeeded and the connection closed before any HTTP/2 frame: with TLS 1.3
# the server checks the client certificate last, so this is how a refused one looks to us. A
# proxy with nothing behind it looks the same, so it cannot be called a refusal for certain.
_CLOSED_AFTER_HANDSHAKE = re.compile(r"failed to connect to all addresses.*: Socket closed$")


#: The exchange's ``google.rpc.ErrorInfo`` domain, and the reason it gives when its ledger
#: writer has halted (docs/api.md, "Status codes").
ERROR_DOMAIN = "sinergi.dev"
LEDGER_HALTED = "LEDGER_HALTED"


def from_rpc_error(error: grpc.RpcError) -> ClientError:
    """The typed error for a failed call, returned for the caller to raise:
    :class:`VerificationFailed` when this client refused the exchange's TLS certificate,
    :class:`Unreachable` for UNAVAILABLE and DEADLINE_EXCEEDED, else :class:`Refused` with the
    status as ``.code`` and the fields the exchange named as ``.violations``."""
    code: grpc.StatusCode = error.code()
    details: str = error.details() or code.name
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    reasons = set()
    violations: list[tuple[str, str]] = []
    for detail in status.details if status is not None else ():
        bad, info = error_details_pb2.BadRequest(), error_details_pb2.ErrorInfo()
        if detail.Unpack(bad):
            violations.extend((v.field, v.description) for v in bad.field_violations)
        elif detail.Unpack(info) and info.domain == ERROR_DOMAIN:
            reasons.add(info.reason)
    if code == grpc.StatusCode.UNAVAILABLE and LEDGER_HALTED in reasons:
        # Not an outage to ride out: the exchange refuses to sign a rolled-back ledger until
        # an operator acts. A refusal, said as the exchange says it; never retried.
        return Refused(code, f"{code.name}: {details}")
    if code == grpc.StatusCode.UNAVAILABLE:
        if any(words in details for words in _SERVER_CERTIFICATE_REFUSED):
            return VerificationFailed(
                "the exchange's TLS certificate was refused: it does not verify against the "
                f"identity's ca.crt, or does not name the address dialled ({details})"
            )
        if _CLOSED_AFTER_HANDSHAKE.search(details):
            return Unreachable(
                "exchange unreachable, or it refused this identity's certificate (tls.crt not "
                "issued by a CA it trusts, or expired): the connection closed right after the "
                f"TLS handshake ({details})"
            )
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return Unreachable(f"exchange unreachable: {details}")
    return Refused(code, f"{code.name}: {details}", tuple(violations))
