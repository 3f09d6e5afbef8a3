"""Update and Cancel: which threads they may follow, and the message each derives from the
thread's original (CAP 1.2 ``msgType``). They run inside the ledger's transaction, so their checks
cannot race with another update of the same alert.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Connection

from certs import SpiffeId
from exchange._errors import (
    ExchangeError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from exchange._policy import Policy
from exchange._threads import StoredAlert, state_of, thread_of
from exchange._validate import category_name
from exchange._visibility import Visibility, visible
from sinergi.v1 import alert_pb2, exchange_pb2


def open_thread(
    connection: Connection, agency: str, alert_id: str, visibility: Visibility
) -> list[StoredAlert] | ExchangeError:
    """The thread of ``alert_id`` if ``agency`` originated it and it is not cancelled."""
    messages = thread_of(connection, alert_id)
    if not messages or not visible(connection, messages[0].position, visibility):
        return NotFound("no alert with that id is visible to your agency")
    if SpiffeId.parse(messages[0].alert.sender).agency != agency:
        return PermissionDenied("only the originating agency may update or cancel an alert")
    if state_of(messages, datetime.now(UTC)) == alert_pb2.ALERT_STATE_CANCELLED:
        return FailedPrecondition("the alert was cancelled")
    return messages


def _references(original: alert_pb2.Alert, named: str) -> list[str]:
    """CAP <references> of an update or cancel: the thread's original alert first, then the
    message the request named if it is a later one, so the sender's signed request (which names
    it) can be matched to this message by a recipient."""
    return [original.id] if named == original.id else [original.id, named]


def _changed_addressing(given: alert_pb2.Alert, original: alert_pb2.Alert) -> list[str]:
    """The addressing fields ``given`` sets to something else than ``original`` has."""
    recipients = bool(given.recipients) and sorted(given.recipients) != sorted(original.recipients)
    differs = {
        "category": given.category not in (0, original.category),
        "handling": given.handling not in (0, original.handling),
        "recipients": recipients,
    }
    return [name for name, changed in differs.items() if changed]


def update(
    original: alert_pb2.Alert, request: exchange_pb2.UpdateRequest, policy: Policy, agency: str
) -> alert_pb2.Alert | ExchangeError:
    """The UPDATE message: the new content, with the original's addressing, which it must keep
    and which the policy must still allow ``agency`` to send."""
    given = request.alert
    changed = _changed_addressing(given, original)
    if changed:
        why = "cannot change in an update; cancel and publish anew"
        violations = [(f"alert.{name}", why) for name in changed]
        return InvalidArgument("an update keeps the alert's addressing", violations)
    try:
        policy.authorize_publish(agency, category_name(original.category), original.recipients)
    except ExchangeError as exc:
        return exc
    alert = alert_pb2.Alert()
    alert.CopyFrom(given)
    alert.message_type = alert_pb2.MESSAGE_TYPE_UPDATE
    alert.category, alert.handling = original.category, original.handling
    del alert.recipients[:]
    alert.recipients.extend(original.recipients)
    alert.references.extend(_references(original, request.alert_id))
    return alert


def cancel(original: alert_pb2.Alert, request: exchange_pb2.CancelRequest) -> alert_pb2.Alert:
    """The CANCEL message: the envelope of the original, no subjects (a cancellation repeats no
    personal data), and the reason as its summary."""
    return alert_pb2.Alert(
        status=original.status,
        message_type=alert_pb2.MESSAGE_TYPE_CANCEL,
        category=original.category,
        severity=original.severity,
        urgency=original.urgency,
        certainty=original.certainty,
        handling=original.handling,
        recipients=original.recipients,
        summary=request.reason,
        references=_references(original, request.alert_id),
    )
