"""Witnessing rules: when a newly shown checkpoint may replace the newest one verified before.

A party that keeps the newest checkpoint it verified (a client, an auditor) catches a rewritten
or rolled-back history when the next checkpoint it is shown is not consistent with the kept one
(RFC 9162 section 2.1.4), even if the key holder signed it. These are the rules alone: where the
kept checkpoint lives, and how it is locked and cached, is the keeper's business
(clients/_witness.py), as python-tuf keeps its trust rules apart from its I/O.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from datetime import date
from typing import Final

from ledger._errors import ForkError, LedgerError
from ledger._merkle import verify_consistency
from ledger._note import Checkpoint

#: The gRPC metadata key of a write: the size of the newest checkpoint the caller verified, so
#: that the receipt's consistency proof starts there (docs/api.md). Clients send it, the exchange
#: reads it; one spelling for both.
WITNESSED_SIZE_HEADER: Final = "sinergi-witnessed-size"

#: Fetches the consistency proof between two sizes, smaller first, from the exchange.
ProofFetcher = Callable[[int, int], Sequence[bytes]]


def describe(cp: Checkpoint) -> str:
    return f"{cp.origin} size {cp.size} root {cp.root.hex()}"


def new_origin(key_name: str, today: date) -> str:
    """The origin of a new ledger signed by the key named ``key_name``: that name, the day and
    8 random hex digits (``sinergi.dev/ledger/20261207-3f9a01c2``). Each ledger is its own log
    for witnesses and clients, so a ledger made anew (a deleted development database, a
    rebuilt deployment) is never mistaken for a rewrite of the old one, nor the other way round
    (C2SP tlog-checkpoint: the origin identifies the log)."""
    return f"{key_name}/{today:%Y%m%d}-{secrets.token_hex(4)}"


def under_key(origin: str, key_name: str) -> bool:
    """Whether a checkpoint of ``origin`` may be signed by the key named ``key_name``: the
    name itself (ledgers from before per-ledger origins) or a ledger under it."""
    return origin == key_name or origin.startswith(key_name + "/")


def advance(
    kept: Checkpoint | None,
    shown: Checkpoint,
    *,
    proof: Sequence[bytes] = (),
    proof_from: int = 0,
    fetch: ProofFetcher | None = None,
    newest_since: int | None = None,
) -> bool:
    """Whether ``shown`` (already verified against the ledger's keys) replaces ``kept``, the
    newest checkpoint of its origin verified before; :class:`ForkError` if it is not consistent
    with it.

    ``proof`` is a consistency proof between ``proof_from`` and ``shown.size`` (as a receipt
    carries it); when it does not connect to the kept checkpoint, ``fetch`` gets one that does.
    ``newest_since`` marks a checkpoint presented as the newest, asked for when the kept one had
    that size: a smaller one is a rollback. One between that size and the kept one is not: the
    kept one arrived meanwhile (another thread's or process's receipt), and the answer must then
    be a prefix of it, which a consistency proof shows."""
    if kept is None:
        return True
    if newest_since is not None and shown.size < newest_since:
        raise ForkError(
            f"the exchange's newest checkpoint ({describe(shown)}) is older than one already "
            f"verified ({describe(kept)}): the ledger was rolled back"
        )
    if shown.size == kept.size:
        if shown.root != kept.root:
            raise ForkError(
                f"two different ledgers: {describe(shown)}, verified before: {describe(kept)}"
            )
        return False
    old, new = sorted((kept, shown), key=lambda cp: cp.size)
    if proof_from != kept.size or not proof:
        if fetch is None:
            raise ForkError(f"no consistency proof between {describe(old)} and {describe(new)}")
        proof = fetch(old.size, new.size)
    try:
        verify_consistency(old.size, new.size, old.root, new.root, list(proof))
    except LedgerError as exc:
        raise ForkError(
            f"checkpoint {describe(new)} is not consistent with {describe(old)}: "
            f"history was rewritten ({exc})"
        ) from None
    return shown.size > kept.size
