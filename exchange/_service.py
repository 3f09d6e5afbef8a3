"""The Exchange service: publish, subscribe, acknowledge; each act commits with its ledger entry.

The servicer checks and orders; what it stores, reads, derives and records is in the modules it
calls (docs/architecture.md, "The packages").
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol, TypeVar

import grpc
import structlog
from sqlalchemy import Connection, Engine

from exchange import _entries
from exchange._bodies import keyring_of
from exchange._correlation import EMBEDDED, Related, related_of, related_to
from exchange._errors import (
    ExchangeError,
    InvalidArgument,
    NotFound,
    Unavailable,
    ledger_unavailable,
)
from exchange._followups import cancel, open_thread, update
from exchange._idempotency import Earlier, earlier_acknowledgement, earlier_message, once
from exchange._offload import read
from exchange._policy import AgencyPolicy, Policy
from exchange._receipts import Cosigned, Receipts
from exchange._rpc import current_principal, denied_recorder
from exchange._search import matching_threads, search_keys
from exchange._signatures import check_signature, unsigned
from exchange._subscriptions import SHUTTING_DOWN, Hub
from exchange._threads import (
    StoredAlert,
    acknowledgements_of,
    addressed_to,
    alerts_for,
    thread_of,
    view_of,
)
from exchange._validate import (
    ALL_MEMBERS,
    DEFAULT_PAGE,
    category_name,
    message_digest,
    validate_acknowledge,
    validate_alert_id,
    validate_cancel,
    validate_list,
    validate_publish,
    validate_related,
    validate_search,
    validate_subscribe,
    validate_update,
)
from exchange._visibility import (
    Checked,
    ListQuery,
    Tampered,
    Visibility,
    deliverable,
    list_threads,
    signed_thread,
    visible,
    visible_thread,
)
from exchange._writes import insert_acknowledgement, insert_alert, number_envelope
from ledger import Actor, EntryDraft, LedgerError
from ledger.store import Committed, LedgerWriter, Work
from sinergi.v1 import alert_pb2, exchange_pb2, exchange_pb2_grpc, ledger_pb2

T = TypeVar("T")
R = TypeVar("R")
FollowUp = TypeVar("FollowUp", exchange_pb2.UpdateRequest, exchange_pb2.CancelRequest)
PAGE = 100

#: How a new message is made from what the ledger's transaction reads (or why it is refused).
Build = Callable[[Connection], alert_pb2.Alert | ExchangeError]
_log = structlog.get_logger("sinergi.visibility")


class Alarms(Protocol):
    """Where the alarms of the read paths are counted (the server's metrics)."""

    def tampered(self, field: str) -> None:
        """One alert refused because its ``field`` disagrees with what its sender signed."""


#: The method whose grant lets a subscription carry related alerts (exchange/_correlation.py).
_RELATED_METHOD = "/sinergi.v1.Exchange/GetRelatedAlerts"


class _Page(NamedTuple):
    """A page of a subscription, shared by the streams at its cursor (read-only to them). It
    keeps what the streams send, serialized, and not the decrypted alerts it was built from: a
    stream that lags holds one page of bytes."""

    positions: list[int]  # each message's position (a stream's cursor once it is sent)
    sends: list[bytes]  # each Delivery serialized once, sent as is by each stream
    sent: list[float]  # each message's sending time, POSIX seconds (the lag metric)
    last: int  # the position read up to
    full: bool  # as many rows as a page holds: there may be more to read at once


class _Stored(NamedTuple):
    """A message the ledger's transaction stored: its id, and whom to wake."""

    alert_id: str
    recipients: tuple[str, ...]


def _thread_id(stored: StoredAlert) -> str:
    """The thread a stored message belongs to, as its rows say (checked by the read paths)."""
    return stored.rows.thread_id if stored.rows is not None else stored.alert.id


def _list_query(request: exchange_pb2.ListAlertsRequest) -> ListQuery:
    after = request.sent_after.ToDatetime(UTC) if request.HasField("sent_after") else None
    before = request.sent_before.ToDatetime(UTC) if request.HasField("sent_before") else None
    states = [alert_pb2.AlertState.Name(s).removeprefix("ALERT_STATE_") for s in request.states]
    return ListQuery(
        categories=[category_name(c) for c in request.categories],
        sender_agency=request.sender_agency,
        sent_after=after,
        sent_before=before,
        states=states,
        before=int(request.page_token or 0),
        limit=request.page_size or DEFAULT_PAGE,
    )


class ExchangeService(exchange_pb2_grpc.ExchangeServicer):
    def __init__(
        self,
        policy: Policy,
        ledger: LedgerWriter,
        engine: Engine,
        hub: Hub,
        cosigned: Cosigned | None = None,
        *,
        actor: Actor,
        metrics: Alarms | None = None,
    ) -> None:
        """``cosigned`` gives the newest checkpoint with the witness policy's quorum, which
        receipts carry (None: no witnesses); ``actor`` is the exchange's own identity, which
        names a delivery to several subscribers at once; ``metrics`` counts alerts refused
        because their rows disagree with what their sender signed (they are logged at error in
        any case)."""
        self._policy = policy
        self._actor = actor
        self._metrics = metrics
        self._ledger = ledger
        self._engine = engine
        self._keys = keyring_of(engine)  # None: bodies stored in plain
        self._hub = hub
        # the writer's nodes: a receipt's proof mostly needs new nodes
        self._receipts = Receipts(engine, ledger.nodes, cosigned)

    async def _commit(self, work: Work[T]) -> Committed[T]:
        try:
            return await asyncio.wrap_future(self._ledger.submit(work))
        except LedgerError as exc:
            raise ledger_unavailable(self._ledger.halted) from exc

    async def _record(self, *drafts: EntryDraft) -> None:
        """Commit entries before the data they record is sent (docs/decisions/0004)."""
        await self._commit(lambda _c, _s: (None, drafts))

    async def _refused(self, error: ExchangeError, asked: str) -> ExchangeError:
        """Commit ``error``'s DENIED entry naming the alert ``asked`` for, and return it to
        raise (:meth:`DeniedRecorder.commit`)."""
        return await denied_recorder().commit(error, (asked,))

    async def _write(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        work: Work[T | Earlier[R] | ExchangeError],
        fresh: Callable[[T], R],
    ) -> tuple[R, ledger_pb2.Receipt]:
        """Commit a write made idempotent by :func:`once`, and its answer with a receipt: a
        refusal it returned is raised (its DENIED entry committed with it); a retry gets the
        earlier result, its entry proven anew; a new write's value goes through ``fresh``."""
        committed = await self._commit(work)
        value = committed.value
        if isinstance(value, ExchangeError):
            raise value
        if isinstance(value, Earlier):
            return value.result, await self._receipts.message(context, value.seq)
        result = fresh(value)
        return result, await self._receipts.message(context, committed.receipts[0])

    # -- writing: publish, update, cancel ------------------------------------------------------

    async def _send(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        key: str,
        content_digest: str,
        *,
        signature: alert_pb2.SenderSignature,
        build: Build,
        about: tuple[str, ...] = (),
    ) -> exchange_pb2.PublishResponse:
        """Store the message ``build`` makes (or refuse with the error it returns, recorded as
        DENIED naming ``about``) with its ledger entry, once per idempotency key.

        ``build`` runs in the ledger's transaction, so the checks it makes against the thread
        (originator, cancelled) cannot race with another update of the same alert."""
        principal = current_principal()
        denied = denied_recorder()  # read here: the work runs on the ledger's thread

        def store(
            connection: Connection, seq: int
        ) -> tuple[_Stored | ExchangeError, Sequence[EntryDraft]]:
            alert = build(connection)
            if isinstance(alert, ExchangeError):
                return denied.within(alert, about)
            alert.id = str(uuid.uuid4())
            alert.sender = str(principal.id)
            alert.sent.FromDatetime(datetime.now(UTC))
            alert.signature.CopyFrom(signature)
            body = alert.SerializeToString(deterministic=True)
            insert_alert(
                connection,
                alert,
                body,
                sender_agency=principal.agency,
                idempotency_key=key,
                request_digest=content_digest,
                publish_seq=seq,
            )
            to_index = number_envelope(connection, alert.recipients, seq)
            stored = _Stored(alert.id, tuple(alert.recipients))
            return stored, [_entries.message(principal.actor, alert, body, to_index)]

        work = once(
            store,
            earlier=lambda connection: earlier_message(connection, principal.agency, key),
            request_digest=content_digest,
            refuse=denied.within,
            what="request",
        )
        alert_id, receipt = await self._write(context, work, self._wake_recipients)
        return exchange_pb2.PublishResponse(alert_id=alert_id, receipt=receipt)

    def _wake_recipients(self, stored: _Stored) -> str:
        """Wake the local subscribers of a new message's recipients; its id."""
        self._hub.notify(stored.recipients)
        return stored.alert_id

    async def Publish(  # noqa: N802 - gRPC method name
        self, request: exchange_pb2.PublishRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> exchange_pb2.PublishResponse:
        principal = current_principal()
        validate_publish(request)
        signature = check_signature(request, principal, datetime.now(UTC))
        category = category_name(request.alert.category)
        alert = alert_pb2.Alert()
        alert.CopyFrom(request.alert)
        alert.message_type = alert_pb2.MESSAGE_TYPE_ALERT
        if list(alert.recipients) == [ALL_MEMBERS]:
            del alert.recipients[:]
            alert.recipients.extend(self._policy.recipients_of(category, principal.agency))
            if not alert.recipients:
                raise InvalidArgument(
                    "no member agency may receive this category",
                    [("alert.recipients", f"no other member receives {category} alerts")],
                )
        self._policy.authorize_publish(principal.agency, category, alert.recipients)
        return await self._send(
            context,
            request.idempotency_key,
            message_digest(request.alert),
            signature=signature,
            build=lambda _connection: alert,
        )

    async def _follow_up(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        request: FollowUp,
        validate: Callable[[FollowUp], None],
        derive: Callable[[alert_pb2.Alert], alert_pb2.Alert | ExchangeError],
    ) -> exchange_pb2.PublishResponse:
        """An UPDATE or CANCEL: ``derive`` makes the message from the thread's original, which
        the caller's agency must have sent and not cancelled."""
        principal = current_principal()
        visibility = self._visibility(principal.agency, self._policy.authorize_sender)
        validate(request)
        signature = check_signature(request, principal, datetime.now(UTC))

        def build(connection: Connection) -> alert_pb2.Alert | ExchangeError:
            thread = open_thread(connection, principal.agency, request.alert_id, visibility)
            if isinstance(thread, ExchangeError):
                return thread
            return derive(thread[0].alert)

        return await self._send(
            context,
            request.idempotency_key,
            message_digest(unsigned(request)),
            signature=signature,
            build=build,
            about=(_entries.alert_object(request.alert_id),),
        )

    async def Update(  # noqa: N802
        self, request: exchange_pb2.UpdateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> exchange_pb2.PublishResponse:
        agency = current_principal().agency

        def derive(original: alert_pb2.Alert) -> alert_pb2.Alert | ExchangeError:
            return update(original, request, self._policy, agency)

        return await self._follow_up(context, request, validate_update, derive)

    async def Cancel(  # noqa: N802
        self, request: exchange_pb2.CancelRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> exchange_pb2.PublishResponse:
        def derive(original: alert_pb2.Alert) -> alert_pb2.Alert:
            return cancel(original, request)

        return await self._follow_up(context, request, validate_cancel, derive)

    # -- delivering: subscribe, acknowledge ----------------------------------------------------

    async def Subscribe(  # type: ignore[override]  # noqa: N802
        self, request: exchange_pb2.SubscribeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[bytes]:  # Deliveries serialized once per page (the guard sends bytes as is)
        principal = current_principal()
        self._policy.authorize_receive(principal.agency)
        validate_subscribe(request)
        categories = sorted({category_name(c) for c in request.categories})
        cursor = request.after
        # Related alerts are a read: the caller needs its grant, and sees what GetAlert shows.
        visibility: Visibility | None = None
        if request.related:
            self._policy.authorize_call(principal.id, _RELATED_METHOD)
            visibility = self._visibility(principal.agency, self._policy.authorize_read)

        def page_after(after: int) -> Callable[[Callable[[], list[Actor]]], Awaitable[_Page]]:
            def query(connection: Connection) -> tuple[Checked, int, bool, dict[str, Related]]:
                now = datetime.now(UTC)
                page = alerts_for(
                    connection,
                    principal.agency,
                    after=after,
                    categories=categories,
                    limit=PAGE,
                    now=now,
                )
                last = page[-1].position if page else after
                checked = deliverable(connection, page, principal.agency)
                related: dict[str, Related] = {}
                if visibility is not None and checked.served:  # once per read, for every stream
                    ids = (_thread_id(thread[0]) for thread in checked.served)
                    related = related_of(connection, visibility, ids, self._keys, now)
                return checked, last, len(page) == PAGE, related

            async def run(close: Callable[[], list[Actor]]) -> _Page:
                checked, last, full, related = await read(self._engine, query)
                self._alarm("Subscribe", principal.agency, checked.tampered)  # once per read
                for found in related.values():
                    self._alarm("Subscribe", principal.agency, found.tampered)
                page = [thread[0] for thread in checked.served]
                beside = [related.get(_thread_id(s), Related()) for s in page]
                receivers = close()  # the streams that joined this read, and no later one
                if page:  # recorded before any of them sends (docs/decisions/0004)
                    await self._record(
                        *(
                            _entries.deliveries(self._actor, receivers, s, r.alerts)
                            for s, r in zip(page, beside, strict=True)
                        )
                    )
                sends = [
                    exchange_pb2.Delivery(
                        cursor=s.position,
                        alert=s.alert,
                        related=r.alerts,
                        related_next_page_token=r.token,
                    ).SerializeToString()
                    for s, r in zip(page, beside, strict=True)
                ]
                sent = [s.alert.sent.ToDatetime(UTC).timestamp() for s in page]
                return _Page([s.position for s in page], sends, sent, last, full)

            return run

        with self._hub.subscription():
            after: asyncio.Event | None = None  # the wake-up the next read waits for (None: now)
            expect = 1  # the streams the last page went to, which the next read gathers
            while True:
                if self._hub.closing:
                    raise Unavailable(SHUTTING_DOWN)
                # Every idle subscription of the agency waits at the same cursor for the read
                # the next publish to it starts: one read serves them all, and wakes each once.
                key = (principal.agency, cursor, tuple(categories), request.related)
                reading = page_after(cursor)
                page, wake, expect = await self._hub.page(
                    principal.agency, key, principal.actor, reading, after=after, expect=expect
                )
                if not page.positions:
                    after = wake if page.last == cursor else None
                    cursor = page.last  # past what the checks refused: it is never sent
                    continue
                # Recorded before it came back (with every stream that joined the read): the
                # ledger may say "delivered" for an alert a dropped connection lost (it is sent
                # again on resume), never the reverse.
                for position, delivery, sent in zip(
                    page.positions, page.sends, page.sent, strict=True
                ):
                    yield delivery
                    cursor = position
                    self._hub.delivered(time.time() - sent)
                cursor = page.last
                # A page that was not full held everything committed before its read, and its
                # event is set by anything committed since: the next read waits for it.
                after = None if page.full else wake

    async def Acknowledge(  # noqa: N802
        self, request: exchange_pb2.AcknowledgeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> exchange_pb2.AcknowledgeResponse:
        principal = current_principal()
        self._policy.authorize_receive(principal.agency)
        validate_acknowledge(request)
        now = datetime.now(UTC)
        ack = alert_pb2.Acknowledgement(
            principal=str(principal.id),
            agency=principal.agency,
            response=request.response,
            case_reference=request.case_reference,
            note=request.note,
        )
        ack.time.FromDatetime(now)
        asked = _entries.alert_object(request.alert_id)
        denied = denied_recorder()  # read here: the work runs on the ledger's thread
        key = request.idempotency_key or None
        content = exchange_pb2.AcknowledgeRequest()
        content.CopyFrom(request)
        content.ClearField("idempotency_key")
        content_digest = message_digest(content)

        def refuse(error: ExchangeError) -> tuple[ExchangeError, Sequence[EntryDraft]]:
            return denied.within(error, (asked,))

        def store(
            connection: Connection, seq: int
        ) -> tuple[alert_pb2.Acknowledgement | ExchangeError, Sequence[EntryDraft]]:
            original = addressed_to(connection, request.alert_id, principal.agency)
            if original is None:
                return refuse(NotFound("no alert with that id is addressed to your agency"))
            ack.alert_id = original.alert.id  # the thread, whichever message was answered
            body = ack.SerializeToString(deterministic=True)
            insert_acknowledgement(
                connection,
                original.position,
                ack,
                body,
                now,
                idempotency_key=key,
                request_digest=content_digest,
                seq=seq,
            )
            return ack, [_entries.acknowledgement(principal.actor, ack, body, asked)]

        work = once(
            store,
            earlier=lambda connection: earlier_acknowledgement(connection, principal.agency, key),
            request_digest=content_digest,
            refuse=refuse,
            what="acknowledgement",
        )
        acknowledgement, receipt = await self._write(context, work, lambda fresh: fresh)
        return exchange_pb2.AcknowledgeResponse(acknowledgement=acknowledgement, receipt=receipt)

    # -- reading: get, list, search, acknowledgements ------------------------------------------

    def _visibility(self, agency: str, authorize: Callable[[str], AgencyPolicy]) -> Visibility:
        return Visibility.of(self._policy, agency, authorize)

    def _alarm(self, method: str, agency: str, tampered: Sequence[Tampered]) -> None:
        """Raise the alarm for alerts refused because their rows (or message) disagree with what
        their sender signed: someone with the database changed them. Ids and field names only,
        no contents; the refusal itself is answered and recorded as for an invisible alert."""
        for alarm in tampered:
            _log.error(
                "alert rows disagree with what its sender signed: not served",
                alert_id=alarm.alert_id,
                field=alarm.field,
                method=method,
                agency=agency,
            )
            if self._metrics is not None:
                self._metrics.tampered(alarm.field)

    async def GetAlert(  # noqa: N802
        self, request: exchange_pb2.GetAlertRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> exchange_pb2.AlertView:
        principal = current_principal()
        visibility = self._visibility(principal.agency, self._policy.authorize_read)
        validate_alert_id(request)
        now = datetime.now(UTC)
        checked, related = await read(
            self._engine, lambda c: self._with_related(c, visibility, request.alert_id, now)
        )
        self._alarm("GetAlert", principal.agency, [*checked.tampered, *related.tampered])
        messages = checked.served[0] if checked.served else []
        if not messages:
            missing = NotFound("no alert with that id is visible to your agency")
            raise await self._refused(missing, _entries.alert_object(request.alert_id))
        view = view_of(messages, now, history=True)
        view.related.extend(related.alerts)
        view.related_next_page_token = related.token
        objects = [_entries.alert_object(m.alert.id) for m in messages]
        answer = view.SerializeToString(deterministic=True)
        await self._record(
            _entries.read(principal.actor, "GetAlert", objects, answer, related=related.alerts)
        )
        return view

    def _with_related(
        self,
        connection: Connection,
        visibility: Visibility,
        alert_id: str,
        now: datetime,
        *,
        before: int = 0,
        limit: int = EMBEDDED,
    ) -> tuple[Checked, Related]:
        """The thread of ``alert_id`` if ``visibility``'s agency may see it, and a page of its
        related alerts (:func:`related_to`, the first when ``before`` is 0)."""
        messages = thread_of(connection, alert_id)
        if not messages or not visible(connection, messages[0].position, visibility):
            return Checked(), Related()
        checked = visible_thread(visibility, messages, messages[0].alert.id)
        if not checked.served:
            return checked, Related()
        found = related_to(
            connection, visibility, messages, self._keys, now, before=before, limit=limit
        )
        return checked, found

    async def _list(
        self, method: str, visibility: Visibility, query: ListQuery
    ) -> tuple[exchange_pb2.ListAlertsResponse, list[str]]:
        """A page of the visible threads ``query`` asks for, and the objects it names."""
        now = datetime.now(UTC)
        checked, next_token = await read(
            self._engine, lambda c: list_threads(c, visibility, query, now)
        )
        self._alarm(method, visibility.agency, checked.tampered)
        response = exchange_pb2.ListAlertsResponse(
            alerts=[view_of(thread, now, history=False) for thread in checked.served],
            next_page_token=str(next_token) if next_token else "",
        )
        return response, [_entries.alert_object(view.id) for view in response.alerts]

    async def ListAlerts(  # noqa: N802
        self, request: exchange_pb2.ListAlertsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> exchange_pb2.ListAlertsResponse:
        principal = current_principal()
        visibility = self._visibility(principal.agency, self._policy.authorize_read)
        validate_list(request)
        response, objects = await self._list("ListAlerts", visibility, _list_query(request))
        answer = response.SerializeToString(deterministic=True)
        await self._record(
            _entries.read(principal.actor, "ListAlerts", objects, answer, len(objects))
        )
        return response

    async def SearchAlerts(  # noqa: N802
        self, request: exchange_pb2.SearchAlertsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> exchange_pb2.ListAlertsResponse:
        principal = current_principal()
        visibility = self._visibility(principal.agency, self._policy.authorize_search)
        kind, value = validate_search(request)
        query = ListQuery(
            thread_ids=matching_threads(search_keys(kind, value, self._keys)),
            before=int(request.page_token or 0),
            limit=request.page_size or DEFAULT_PAGE,
        )
        response, objects = await self._list("SearchAlerts", visibility, query)
        salt = secrets.token_bytes(16)
        await self._record(
            _entries.search(
                principal.actor, objects, kind=kind, value=value, salt=salt, results=len(objects)
            )
        )
        return response

    async def ListAcknowledgements(  # noqa: N802
        self,
        request: exchange_pb2.ListAcknowledgementsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> exchange_pb2.ListAcknowledgementsResponse:
        principal = current_principal()
        visibility = self._visibility(principal.agency, self._policy.authorize_read)
        validate_alert_id(request)
        asked = _entries.alert_object(request.alert_id)

        def query(connection: Connection) -> list[alert_pb2.Acknowledgement] | Tampered | None:
            messages = thread_of(connection, request.alert_id)
            if not messages or not visible(connection, messages[0].position, visibility):
                return None
            signed = signed_thread(messages)
            if isinstance(signed, Tampered):
                return signed
            if not visibility.sees(signed):
                return None
            position = messages[0].position
            if signed.sender_agency == principal.agency:
                return acknowledgements_of(connection, position, None)
            if principal.agency not in signed.recipients:
                return None
            return acknowledgements_of(connection, position, principal.agency)

        acks = await read(self._engine, query)
        if isinstance(acks, Tampered):
            self._alarm("ListAcknowledgements", principal.agency, [acks])
            acks = None
        if acks is None:
            missing = NotFound("no alert with that id is addressed to or sent by your agency")
            raise await self._refused(missing, asked)
        response = exchange_pb2.ListAcknowledgementsResponse(acknowledgements=acks)
        answer = response.SerializeToString(deterministic=True)
        await self._record(
            _entries.read(principal.actor, "ListAcknowledgements", [asked], answer, len(acks))
        )
        return response

    async def GetRelatedAlerts(  # noqa: N802
        self,
        request: exchange_pb2.GetRelatedAlertsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> exchange_pb2.RelatedAlerts:
        principal = current_principal()
        visibility = self._visibility(principal.agency, self._policy.authorize_read)
        validate_related(request)
        asked = _entries.alert_object(request.alert_id)
        now = datetime.now(UTC)
        before, limit = int(request.page_token or 0), request.page_size or DEFAULT_PAGE
        checked, related = await read(
            self._engine,
            lambda c: self._with_related(
                c, visibility, request.alert_id, now, before=before, limit=limit
            ),
        )
        self._alarm("GetRelatedAlerts", principal.agency, [*checked.tampered, *related.tampered])
        if not checked.served:
            missing = NotFound("no alert with that id is visible to your agency")
            raise await self._refused(missing, asked)
        response = exchange_pb2.RelatedAlerts(
            alert_id=checked.served[0][0].alert.id,
            related=related.alerts,
            next_page_token=related.token,
        )
        answer = response.SerializeToString(deterministic=True)
        await self._record(
            _entries.read(
                principal.actor,
                "GetRelatedAlerts",
                [asked],
                answer,
                len(related.alerts),
                related=related.alerts,
            )
        )
        return response
