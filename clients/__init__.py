"""Sinergi's Python client library and the `sinergi` command-line client."""

from clients._alerts import (
    ALL_MEMBERS,
    alert_from_json,
    content_alert,
    enum_name,
    enum_value,
    new_alert,
    parse_subjects,
)
from clients._client import (
    DEFAULT_SERVER,
    NO_RETRY,
    Acknowledged,
    ExchangeClient,
    Published,
    RetryPolicy,
    find_ledger_key,
    load_verifier,
)
from clients._errors import (
    ClientError,
    Refused,
    Unreachable,
    UsageError,
    VerificationFailed,
    from_rpc_error,
)
from clients._signatures import SignatureFailed, SignedBy, sign_request, verify_alert
from clients._witness import ForkDetected, Witness

__all__ = [
    "ALL_MEMBERS",
    "DEFAULT_SERVER",
    "NO_RETRY",
    "Acknowledged",
    "ClientError",
    "ExchangeClient",
    "ForkDetected",
    "Published",
    "Refused",
    "RetryPolicy",
    "SignatureFailed",
    "SignedBy",
    "Unreachable",
    "UsageError",
    "VerificationFailed",
    "Witness",
    "alert_from_json",
    "content_alert",
    "enum_name",
    "enum_value",
    "find_ledger_key",
    "from_rpc_error",
    "load_verifier",
    "new_alert",
    "parse_subjects",
    "sign_request",
    "verify_alert",
]
