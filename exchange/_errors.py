"""Typed errors of the exchange and their gRPC status codes: the only place they are mapped.

Messages are written for the caller and for the ledger, so they never carry personal data or
server internals (grpcio sends an escaping exception's text to the client: see
docs/grpc-python.md, "Interceptors and errors").
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

#: The domain of the ``google.rpc.ErrorInfo`` reasons the exchange sends.
DOMAIN = "sinergi.dev"


class ExchangeError(Exception):
    """Base of every error the exchange answers with; ``code`` is its gRPC status."""

    code = grpc.StatusCode.INTERNAL
    #: a refusal (authentication, policy, validation) that the ledger records as DENIED
    denied = True
    #: a machine-readable reason, sent as a ``google.rpc.ErrorInfo`` detail (domain
    #: :data:`DOMAIN`) where the status code alone would mislead a client (docs/api.md)
    error_reason: str | None = None

    def __init__(self, reason: str, violations: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(reason)
        self.reason = reason
        self.violations = tuple(violations)

    def to_status(self) -> status_pb2.Status:
        """A ``google.rpc.Status`` with a ``BadRequest`` detail listing every bad field."""
        status = status_pb2.Status(code=self.code.value[0], message=self.reason)
        if self.violations:
            detail = any_pb2.Any()
            detail.Pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                        for f, d in self.violations
                    ]
                )
            )
            status.details.append(detail)
        if self.error_reason is not None:
            info = any_pb2.Any()
            info.Pack(error_details_pb2.ErrorInfo(reason=self.error_reason, domain=DOMAIN))
            status.details.append(info)
        return status


class Unauthenticated(ExchangeError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(ExchangeError):
    code = grpc.StatusCode.PERMISSION_DENIED


class InvalidArgument(ExchangeError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ExchangeError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ExchangeError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(ExchangeError):
    """The request is valid but the alert's state forbids it (e.g. updating a cancelled alert)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(ExchangeError):
    """A stream consumer fell too far behind; it should resume from its last cursor."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    denied = False


class RateLimited(ExchangeError):
    """The caller sent more requests than its rate limit allows; it should back off."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(ExchangeError):
    code = grpc.StatusCode.UNAVAILABLE
    denied = False


#: What a write is answered while the ledger writer is halted: the reason (sizes, roots, an
#: origin, a witness's name: never personal data) and what the operator must do.
HALTED = (
    "the exchange refuses to sign its ledger: {reason}. Writes stay refused until an operator "
    "restores the missing entries from the newest backup or, once internal affairs agree, "
    'starts a new ledger (docs/operations.md, "When the exchange refuses to sign")'
)


class LedgerHalted(Unavailable):
    """The ledger writer has halted (the ledger was rolled back or rewritten): UNAVAILABLE, as
    for any outage, with the ErrorInfo reason ``LEDGER_HALTED``, so that a client does not
    retry what only an operator can mend, and says so."""

    error_reason = "LEDGER_HALTED"


def ledger_unavailable(halted: str | None) -> Unavailable:
    """UNAVAILABLE for an act the ledger could not record: with the reason when the writer has
    halted (the ledger was rolled back or rewritten, :class:`ledger.store.RolledBack`), since
    retrying cannot help there and the operator must act; else the plain retry-later."""
    if halted is None:
        return Unavailable("the ledger is unavailable; retry later")
    return LedgerHalted(HALTED.format(reason=halted.rstrip(".")))


class Internal(ExchangeError):
    code = grpc.StatusCode.INTERNAL
    denied = False


class ConfigError(ExchangeError):
    """The server's configuration or policy file is invalid; raised at start, never to a client."""

    denied = False


assert grpc.StatusCode.INVALID_ARGUMENT.value[0] == code_pb2.INVALID_ARGUMENT
