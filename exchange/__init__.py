"""The Sinergi exchange server: mutual-TLS gRPC, deny-by-default policy, alerts and their ledger."""

from exchange._errors import (
    AlreadyExists,
    ConfigError,
    ExchangeError,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from exchange._identity import Principal
from exchange._logging import configure_logging
from exchange._policy import DEFAULT_POLICY, Policy
from exchange._server import ExchangeServer, ServerConfig, initialise_database
from exchange._threads import stored_message

__all__ = [
    "DEFAULT_POLICY",
    "AlreadyExists",
    "ConfigError",
    "ExchangeError",
    "ExchangeServer",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "Policy",
    "Principal",
    "ResourceExhausted",
    "ServerConfig",
    "Unauthenticated",
    "Unavailable",
    "configure_logging",
    "initialise_database",
    "stored_message",
]
