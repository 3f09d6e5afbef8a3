"""Idempotency keys, one rule for every write (Publish, Update, Cancel, Acknowledge): a retry of
the same request gets the first answer, proven anew, and no new entry; a key used again for a
different request is refused ALREADY_EXISTS.

Clients retry a write whose answer was lost (UNAVAILABLE) with the same key; without this, a
retry would publish or acknowledge twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from sqlalchemy import Connection, bindparam, select

from exchange._bodies import ACK_COLUMNS, opened_ack
from exchange._errors import AlreadyExists, ExchangeError
from exchange._tables import acknowledgements, alerts
from ledger import EntryDraft
from ledger.store import Work
from sinergi.v1 import alert_pb2

R = TypeVar("R")
V = TypeVar("V")

#: Returns a refusal and its DENIED entry, for a work to return (DeniedRecorder.within).
Refuse = Callable[[ExchangeError], tuple[ExchangeError, Sequence[EntryDraft]]]


@dataclass(frozen=True)
class Earlier(Generic[R]):
    """A write already committed under the key: its result, the digest of its request, and the
    seq of its ledger entry (proven anew for the retry)."""

    result: R
    request_digest: str
    seq: int


def once(
    work: Work[V],
    *,
    earlier: Callable[[Connection], Earlier[R] | None],
    request_digest: str,
    refuse: Refuse,
    what: str,
) -> Work[V | Earlier[R] | ExchangeError]:
    """``work``, unless ``earlier`` finds a write under the same key: the same request
    (``request_digest``) gets the :class:`Earlier` write and no entry; another request is refused
    with ``refuse``, in the work's transaction. ``what`` names the write in the refusal."""

    def run(
        connection: Connection, seq: int
    ) -> tuple[V | Earlier[R] | ExchangeError, Sequence[EntryDraft]]:
        found = earlier(connection)
        if found is None:
            return work(connection, seq)
        if found.request_digest == request_digest:
            return found, ()
        return refuse(
            AlreadyExists(
                f"idempotency key already used for a different {what}",
                [("idempotency_key", "was used before with different content")],
            )
        )

    return run


# Built once: it runs on every publish (docs/performance.md, benchmark 1).
_FIND_MESSAGE = select(alerts.c.id, alerts.c.request_digest, alerts.c.publish_seq).where(
    alerts.c.sender_agency == bindparam("agency"), alerts.c.idempotency_key == bindparam("key")
)


def earlier_message(connection: Connection, agency: str, key: str) -> Earlier[str] | None:
    """The id of the message ``agency`` published (or updated, or cancelled) under ``key``."""
    row = connection.execute(_FIND_MESSAGE, {"agency": agency, "key": key}).first()
    return Earlier(row.id, row.request_digest, row.publish_seq) if row else None


def earlier_acknowledgement(
    connection: Connection, agency: str, key: str | None
) -> Earlier[alert_pb2.Acknowledgement] | None:
    """The acknowledgement ``agency`` recorded under ``key`` (None: the request had no key)."""
    if key is None:
        return None
    row = connection.execute(
        select(*ACK_COLUMNS, acknowledgements.c.request_digest, acknowledgements.c.ack_seq).where(
            acknowledgements.c.agency == agency, acknowledgements.c.idempotency_key == key
        )
    ).first()
    if row is None:
        return None
    ack = alert_pb2.Acknowledgement.FromString(opened_ack(connection, row))
    return Earlier(ack, row.request_digest, row.ack_seq)
