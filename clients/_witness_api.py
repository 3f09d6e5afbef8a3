"""Asking the witnesses of a policy what they cosigned: the C2SP tlog-witness monitoring
endpoint (``GET <url>/<origin hash>/checkpoint``) and ``GET <url>/status`` (docs/witness.md).

A witness's latest cosigned checkpoint is what the ledger must still contain: an auditor who
passes it to the verification catches a deleted tail, a restored backup or a rewrite that the
ledger's own checkpoints no longer show. Over HTTPS with mutual TLS, as the identity given;
the standard library's client is enough for two GETs.
"""

from __future__ import annotations

import http.client
import json
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from certs import Identity
from clients._errors import UsageError
from ledger import (
    Checkpoint,
    CosignatureVerifier,
    LedgerError,
    Verifier,
    cosignatures,
    open_checkpoint,
    origin_hash,
)

#: How long one witness gets to answer one request.
TIMEOUT = 10.0


@dataclass(frozen=True)
class Cosigned:
    """A witness's latest cosigned checkpoint of a ledger, its cosignature and the ledger's
    signature verified; ``checkpoint`` None when it has cosigned none of that origin (404)."""

    name: str
    url: str
    checkpoint: Checkpoint | None
    note: bytes | None
    cosigned_at: int | None  # its cosignature's time, POSIX seconds


class WitnessUnreachable(Exception):
    """A witness did not answer, or answered something other than the protocol's answer."""


class WitnessLied(Exception):
    """A witness answered with a checkpoint that does not verify: not its cosignature, not the
    ledger's signature, or not of the origin asked for."""


def tls_context(identity: Identity) -> ssl.SSLContext:
    """TLS 1.2 or later, the witness's certificate checked against the identity's ``ca.crt``
    (and the host named in its URL), and the identity's certificate presented."""
    context = ssl.create_default_context(cadata=identity.ca_pem.decode("ascii"))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(identity.directory / "tls.crt", identity.directory / "tls.key")
    except (ssl.SSLError, OSError) as exc:
        raise UsageError(f"{identity.directory}: cannot use its TLS key: {exc}") from None
    return context


def _get(url: str, path: str, context: ssl.SSLContext, timeout: float) -> tuple[int, bytes]:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise WitnessUnreachable(f"{url} is not an https:// URL")
    connection = http.client.HTTPSConnection(
        parts.hostname, parts.port, context=context, timeout=timeout
    )
    try:
        connection.request("GET", parts.path.rstrip("/") + path)
        response = connection.getresponse()
        return response.status, response.read(1 << 20)
    except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
        raise WitnessUnreachable(f"{url}: {exc}") from None
    finally:
        connection.close()


def latest_cosigned(
    name: str,
    url: str,
    key: CosignatureVerifier,
    origin: str,
    *,
    verifiers: Sequence[Verifier],
    context: ssl.SSLContext,
    timeout: float = TIMEOUT,
) -> Cosigned:
    """The latest checkpoint of ``origin`` that the witness ``name`` (its policy name) at
    ``url`` cosigned, with its cosignature (``key``) and the ledger's signature (``verifiers``)
    checked. Raises :class:`WitnessUnreachable` and :class:`WitnessLied`."""
    code, body = _get(url, f"/{origin_hash(origin)}/checkpoint", context, timeout)
    if code == 404:
        return Cosigned(name, url, None, None, None)
    if code != 200:
        reason = body[:200].decode("utf-8", "replace").strip()
        raise WitnessUnreachable(f"{url} answered {code}: {reason}")
    try:
        checkpoint = open_checkpoint(body, verifiers, origin=origin)
        found = cosignatures(body, [key])
    except LedgerError as exc:
        raise WitnessLied(f"its checkpoint of {origin} does not verify: {exc}") from None
    if not found:
        raise WitnessLied(f"its checkpoint of {origin} carries no cosignature of its key")
    return Cosigned(name, url, checkpoint, body, found[0].timestamp)


def status(url: str, context: ssl.SSLContext, timeout: float = TIMEOUT) -> dict[str, Any]:
    """The witness's ``GET /status`` (its logs, its refusals). Raises
    :class:`WitnessUnreachable`, also for an answer that is not its JSON object."""
    code, body = _get(url, "/status", context, timeout)
    if code != 200:
        raise WitnessUnreachable(f"{url}/status answered {code}")
    try:
        found = json.loads(body)
    except ValueError:
        found = None
    if not isinstance(found, dict):
        raise WitnessUnreachable(f"{url}/status is not a JSON object")
    return found
