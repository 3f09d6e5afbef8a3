"""Every ledger entry the exchange writes, drafted here: one function per action, with the
objects, digest and meta keys (``ledger.meta``) it records.

The entries are the exchange's lasting record, read by verifiers and audit queries long after the
code that wrote them changed (docs/ledger-format.md, section 1.1): their shape is decided in one
place, never in the code that acts. No entry holds personal data, only ids and digests.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import datetime

from exchange._errors import ExchangeError
from exchange._threads import StoredAlert
from exchange._validate import category_name
from ledger import Action, Actor, EntryDraft, Outcome, meta, normalise_identifier
from sinergi.v1 import alert_pb2, exchange_pb2

#: The one object of every AuditLedger read.
LEDGER = "ledger"


def alert_object(alert_id: str) -> str:
    """How an entry names an alert in ``objects``."""
    return f"alert:{alert_id}"


def _alerts(alert_ids: Iterable[str]) -> tuple[str, ...]:
    return tuple(alert_object(alert_id) for alert_id in alert_ids)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def message(
    actor: Actor, alert: alert_pb2.Alert, body: bytes, to_index: Sequence[str]
) -> EntryDraft:
    """PUBLISH, UPDATE or CANCEL (by the message's type) of the stored ``body`` of ``alert``: the
    message and the thread's original, whom it is addressed to and the entry's number for each
    of them (``to_index``: what lets a recipient's monitor see an entry kept from it), and the
    sender's signature."""
    action = {
        alert_pb2.MESSAGE_TYPE_ALERT: Action.PUBLISH,
        alert_pb2.MESSAGE_TYPE_UPDATE: Action.UPDATE,
        alert_pb2.MESSAGE_TYPE_CANCEL: Action.CANCEL,
    }[alert.message_type]
    return EntryDraft(
        action,
        actor,
        objects=_alerts([alert.id, *alert.references[:1]]),
        digest=_digest(body),
        meta={
            meta.CATEGORY: category_name(alert.category),
            meta.TO: sorted(alert.recipients),
            meta.TO_INDEX: list(to_index),
            meta.HANDLING: alert_pb2.Tlp.Name(alert.handling).removeprefix("TLP_"),
            meta.SIGNATURE: _digest(alert.signature.signature),
        },
    )


def _related(related: Sequence[exchange_pb2.RelatedAlert]) -> dict[str, list[str]]:
    """``meta.related`` naming each related alert shown and the kinds of identifier it shares
    (never their values), in the order shown; no key when none was."""
    if not related:
        return {}
    kinds = exchange_pb2.IdentifierKind.Name
    named = [
        f"{alert_object(r.id)} "
        + ",".join(kinds(k).removeprefix("IDENTIFIER_KIND_").lower() for k in r.shared)
        for r in related
    ]
    return {meta.RELATED: named}


def delivery(
    actor: Actor, stored: StoredAlert, related: Sequence[exchange_pb2.RelatedAlert] = ()
) -> EntryDraft:
    """DELIVER of one message to a subscriber, at its cursor, with the related alerts shown
    beside it (a subscription that asked for them)."""
    return EntryDraft(
        Action.DELIVER,
        actor,
        objects=_alerts([stored.alert.id]),
        digest=_digest(stored.body),
        meta={meta.CURSOR: stored.position, **_related(related)},
    )


def deliveries(
    exchange: Actor,
    receivers: Sequence[Actor],
    stored: StoredAlert,
    related: Sequence[exchange_pb2.RelatedAlert] = (),
) -> EntryDraft:
    """DELIVER of one message to every subscriber in ``receivers`` at once (the subscriptions
    one wake-up served from one page): the exchange's own entry naming each principal and the
    certificate it used (docs/ledger-format.md, 1.1); for one receiver, its own entry."""
    if len(receivers) == 1:
        return delivery(receivers[0], stored, related)
    named = sorted({f"{actor.id} {actor.cert}" for actor in receivers})
    return EntryDraft(
        Action.DELIVER,
        exchange,
        objects=_alerts([stored.alert.id]),
        digest=_digest(stored.body),
        meta={meta.CURSOR: stored.position, meta.RECEIVED_BY: named, **_related(related)},
    )


def acknowledgement(
    actor: Actor, ack: alert_pb2.Acknowledgement, body: bytes, asked: str
) -> EntryDraft:
    """ACK of the stored ``body``: the thread's original, and the message named (``asked``)."""
    return EntryDraft(
        Action.ACK,
        actor,
        objects=tuple(dict.fromkeys((alert_object(ack.alert_id), asked))),
        digest=_digest(body),
        meta={meta.RESPONSE: alert_pb2.Response.Name(ack.response).removeprefix("RESPONSE_")},
    )


def read(
    actor: Actor,
    method: str,
    objects: Sequence[str],
    answer: bytes,
    results: int | None = None,
    *,
    related: Sequence[exchange_pb2.RelatedAlert] = (),
) -> EntryDraft:
    """READ by ``method`` (its name alone) of ``objects``; ``answer`` is what was sent, with the
    ``related`` alerts it showed through correlation."""
    told: dict[str, str | int | list[str]] = {meta.METHOD: method}
    if results is not None:
        told[meta.RESULTS] = results
    told.update(_related(related))
    return EntryDraft(Action.READ, actor, objects=tuple(objects), digest=_digest(answer), meta=told)


def search(
    actor: Actor, objects: Sequence[str], *, kind: str, value: str, salt: bytes, results: int
) -> EntryDraft:
    """SEARCH for the identifier ``value`` of ``kind``. The query itself is personal data: the
    entry keeps a salted digest an auditor can test a candidate identifier against (docs/api.md),
    never the identifier."""
    return EntryDraft(
        Action.SEARCH,
        actor,
        objects=tuple(objects),
        digest=_digest(salt + normalise_identifier(kind, value)),
        meta={
            meta.METHOD: "SearchAlerts",
            meta.KIND: kind,
            meta.SALT: salt.hex(),
            meta.RESULTS: results,
        },
    )


def ledger_read(
    actor: Actor,
    method: str,
    *,
    start: int | None = None,
    end: int | None = None,
    seq: int | None = None,
    tree_size: int | None = None,
    first: int | None = None,
    second: int | None = None,
    results: int | None = None,
) -> EntryDraft:
    """LEDGER_READ by ``method`` (its name alone), with the range or proof asked for (and, for
    GetEnvelopes, how many entries were sent)."""
    asked = {
        meta.START: start,
        meta.END: end,
        meta.SEQ: seq,
        meta.TREE_SIZE: tree_size,
        meta.FIRST: first,
        meta.SECOND: second,
        meta.RESULTS: results,
    }
    named = {key: value for key, value in asked.items() if value is not None}
    return EntryDraft(
        Action.LEDGER_READ, actor, objects=(LEDGER,), meta={meta.METHOD: method, **named}
    )


def denied(
    actor: Actor, method: str, digest: str, error: ExchangeError, objects: tuple[str, ...] = ()
) -> EntryDraft:
    """DENIED: who, which method (its full path), the digest of the request bytes, and why."""
    return EntryDraft(
        Action.DENIED,
        actor,
        objects=objects,
        digest=digest,
        outcome=Outcome(error.code.name, error.reason),
        meta={meta.METHOD: method},
    )


def redaction(
    actor: Actor, messages: Sequence[StoredAlert], category: str, days: str, ended: datetime
) -> EntryDraft:
    """REDACT of a thread's ``messages`` under retention; the digest covers their bodies before."""
    return EntryDraft(
        Action.REDACT,
        actor,
        objects=_alerts(m.alert.id for m in messages),
        digest=_digest(b"".join(m.body for m in messages)),
        meta={
            meta.CATEGORY: category,
            meta.RETENTION_DAYS: days,
            meta.ENDED: ended.isoformat(timespec="seconds"),
        },
    )


def start(actor: Actor, policy_digest: str, origin: str) -> EntryDraft:
    """START of a server: the policy it enforces and the origin of its checkpoints."""
    return EntryDraft(
        Action.START,
        actor,
        digest=policy_digest,
        meta={meta.POLICY_DIGEST: policy_digest, meta.ORIGIN: origin},
    )
