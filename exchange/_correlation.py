"""Correlation: the alert threads that share a subject identifier with another, among those one
agency may see (docs/decisions/0017).

Computed when read, from the blind index search keeps (``alert_subjects``): a thread's
identifiers are taken from its opened messages, and each becomes every key a row about it may
carry (one per KEK, and plain SHA-256: :func:`exchange._search.search_keys`), so rows written
under different KEKs are found. Nothing new is stored. The threads found go through the listing
of every read path (:func:`exchange._visibility.list_threads`: the agency's predicate in the
query, then each thread checked against what its sender signed), so a related alert is one the
agency could open with GetAlert, and one it may not see is neither counted nor hinted at.

A cancelled thread is related to nothing, either way: its sender withdrew it. A purged one has
neither subjects nor index rows left.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import structlog
from sqlalchemy import Connection, select

from exchange._errors import Internal
from exchange._sealing import Keyring
from exchange._search import identifiers, matching_threads, search_keys
from exchange._tables import alert_subjects, alerts
from exchange._threads import StoredAlert, state_of, threads
from exchange._visibility import ListQuery, Tampered, Visibility, list_threads, signed_thread
from ledger import normalise_identifier
from sinergi.v1 import alert_pb2, exchange_pb2

#: Related alerts a GetAlert view carries, and a delivery (which says they exist, found for
#: every message a subscription reads); GetRelatedAlerts pages through the rest.
EMBEDDED = 10
DELIVERED = 3
_OTHER = alerts.alias("other")
_log = structlog.get_logger("sinergi.correlation")


@dataclass
class Related:
    """A page of the related alerts of one thread, and the alarms reading them raised."""

    alerts: list[exchange_pb2.RelatedAlert] = field(default_factory=list)
    #: the next page's token (a position), 0 on the last page
    next_token: int = 0
    tampered: list[Tampered] = field(default_factory=list)

    @property
    def token(self) -> str:
        """The next page's token as the API carries it: empty on the last page."""
        return str(self.next_token) if self.next_token else ""


def _kind(name: str) -> exchange_pb2.IdentifierKind.ValueType:
    return exchange_pb2.IdentifierKind.Value("IDENTIFIER_KIND_" + name.upper())


def _identifiers(messages: Iterable[StoredAlert]) -> dict[bytes, str]:
    """The subject identifiers of ``messages``, normalised as the index keeps them, with their
    kind."""
    return {
        normalise_identifier(kind, value): kind
        for message in messages
        for kind, value in identifiers(message.alert)
    }


def index_keys(messages: Iterable[StoredAlert], keys: Keyring | None) -> list[str]:
    """Every index key a row sharing an identifier with ``messages`` may carry."""
    found: dict[str, None] = {}
    for message in messages:
        for kind, value in identifiers(message.alert):
            found.update(dict.fromkeys(search_keys(kind, value, keys)))
    return list(found)


def related_to(
    connection: Connection,
    visibility: Visibility,
    messages: Sequence[StoredAlert],
    keys: Keyring | None,
    now: datetime,
    *,
    before: int = 0,
    limit: int = EMBEDDED,
) -> Related:
    """The threads ``visibility``'s agency may see that share an identifier with the thread of
    ``messages`` (every message of it, original first), newest first, below position
    ``before`` (0: from the newest), at most ``limit``."""
    if any(m.alert.message_type == alert_pb2.MESSAGE_TYPE_CANCEL for m in messages):
        return Related()
    mine = _identifiers(messages)
    if not mine:
        return Related()
    thread_id = messages[0].alert.id
    cancelled = (
        select(_OTHER.c.position)
        .where(_OTHER.c.thread_id == alert_subjects.c.thread_id, _OTHER.c.message_type == "CANCEL")
        .exists()
    )
    sharing = matching_threads(index_keys(messages, keys)).where(
        alert_subjects.c.thread_id != thread_id, ~cancelled
    )
    query = ListQuery(thread_ids=sharing, before=before, limit=limit)
    try:
        checked, next_token = list_threads(connection, visibility, query, now)
    except Internal:
        # A related row that does not open (altered, moved, or sealed under a KEK no longer
        # listed; _sealing.py logged which) must not make the alert read fail: its related
        # alerts are left out until the row is put right.
        _log.error("related alerts left out: a related alert cannot be read", alert_id=thread_id)
        return Related()
    # The kinds shared, from the related thread's own messages, opened and checked above: the
    # same normalised identifiers its index rows were made from, whichever KEK made them.
    views = [
        _view(thread, {mine[i] for i in _identifiers(thread).keys() & mine.keys()}, now)
        for thread in checked.served
    ]
    return Related(views, next_token, checked.tampered)


def related_of(
    connection: Connection,
    visibility: Visibility,
    thread_ids: Iterable[str],
    keys: Keyring | None,
    now: datetime,
) -> dict[str, Related]:
    """The :data:`DELIVERED` newest related alerts of each thread in ``thread_ids``, each thread
    read once: what a subscription's page of messages carries, found once per read of the page,
    for every stream that shares it. A thread whose rows disagree with what its sender signed
    gets nothing (its delivery was refused, or is raised, on its own)."""
    wanted = sorted(set(thread_ids))
    try:
        found = threads(connection, wanted)
    except Internal:  # a message that does not open: read them one by one, and skip it
        found = {}
        for thread_id in wanted:
            try:
                found.update(threads(connection, [thread_id]))
            except Internal:
                _log.error("related alerts left out: the thread cannot be read", alert_id=thread_id)
    related = {}
    for thread_id, messages in found.items():
        if messages and not isinstance(signed_thread(messages), Tampered):
            related[thread_id] = related_to(
                connection, visibility, messages, keys, now, limit=DELIVERED
            )
    return related


def _view(
    thread: Sequence[StoredAlert], kinds: Iterable[str], now: datetime
) -> exchange_pb2.RelatedAlert:
    """What a related thread shows: its id, category, sender's agency, when it was published,
    its state and the kinds of identifier shared; never its content."""
    original = thread[0]
    assert original.rows is not None, "read with read_messages"
    view = exchange_pb2.RelatedAlert(
        id=original.alert.id,
        category=original.alert.category,
        sender_agency=original.rows.sender_agency,  # checked against what its sender signed
        state=state_of(thread, now),
        shared=sorted(_kind(kind) for kind in kinds),
    )
    view.sent.CopyFrom(original.alert.sent)
    return view
