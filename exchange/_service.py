"""The Exchange service: publish, subscribe, acknowledge; each act commits with its ledger entry."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeVar

import grpc
from sqlalchemy import Connection, Engine

from certs import SpiffeId
from exchange import _store
from exchange._errors import (
    AlreadyExists,
    ExchangeError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from exchange._identity import Principal
from exchange._policy import AgencyPolicy, Policy
from exchange._rpc import current_principal, denied_entry, request_digest
from exchange._signatures import check_signature, unsigned
from exchange._subscriptions import Hub
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
    validate_search,
    validate_subscribe,
    validate_update,
)
from ledger import Action, EntryDraft, LedgerError, Receipt, StorageError, normalise_identifier
from ledger.store import (
    Committed,
    LedgerWriter,
    Work,
    cached_consistency_proof,
    prove,
    prove_consistency,
)
from sinergi.v1 import alert_pb2, exchange_pb2, exchange_pb2_grpc, ledger_pb2

T = TypeVar("T")
FollowUp = TypeVar("FollowUp", exchange_pb2.UpdateRequest, exchange_pb2.CancelRequest)
PAGE = 100
_SERVICE = "/sinergi.v1.Exchange/"


WITNESSED_SIZE = "sinergi-witnessed-size"


def receipt_message(
    receipt: Receipt, witnessed: int = 0, consistency: Sequence[bytes] = ()
) -> ledger_pb2.Receipt:
    return ledger_pb2.Receipt(
        seq=receipt.seq,
        entry_hash=receipt.entry_hash,
        entry=receipt.entry,
        checkpoint=ledger_pb2.Checkpoint(note=receipt.checkpoint),
        inclusion_proof=list(receipt.inclusion_proof),
        witnessed_size=witnessed,
        consistency_proof=list(consistency),
    )


def witnessed_size(context: grpc.aio.ServicerContext[Any, Any]) -> int:
    """The size of the newest checkpoint the client has verified, from request metadata."""
    for key, value in context.invocation_metadata() or ():
        if key == WITNESSED_SIZE:
            text = value if isinstance(value, str) else value.decode("ascii", "replace")
            if not text.isdigit() or len(text) > 18:
                raise InvalidArgument(
                    "bad witnessed size", [(WITNESSED_SIZE, "must be a non-negative integer")]
                )
            return int(text)
    return 0


def _handling(alert: alert_pb2.Alert) -> str:
    return alert_pb2.Tlp.Name(alert.handling).removeprefix("TLP_")


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _references(original: alert_pb2.Alert, named: str) -> list[str]:
    """CAP <references> of an update or cancel: the thread's original alert first, then the
    message the request named if it is a later one, so the sender's signed request (which names
    it) can be matched to this message by a recipient."""
    return [original.id] if named == original.id else [original.id, named]


def _objects(messages: Sequence[_store.StoredAlert]) -> tuple[str, ...]:
    return tuple(f"alert:{m.alert.id}" for m in messages)


class _Stored(NamedTuple):
    """A message the ledger's transaction stored: its id, and whom to wake."""

    alert_id: str
    recipients: tuple[str, ...]


class ExchangeService(exchange_pb2_grpc.ExchangeServicer):
    def __init__(self, policy: Policy, ledger: LedgerWriter, engine: Engine, hub: Hub) -> None:
        self._policy = policy
        self._ledger = ledger
        self._engine = engine
        self._keys = _store.keyring_of(engine)  # None: bodies stored in plain
        self._hub = hub
        self._nodes = ledger.nodes  # the writer's: a receipt's proof mostly needs new nodes

    async def _commit(self, work: Work[T]) -> Committed[T]:
        try:
            return await asyncio.wrap_future(self._ledger.submit(work))
        except LedgerError as exc:
            raise Unavailable("the ledger is unavailable; retry later") from exc

    async def _record(self, *drafts: EntryDraft) -> None:
        """Commit entries before the data they record is sent (docs/decisions/0004)."""
        await self._commit(lambda _c, _s: (None, drafts))

    async def _refuse(
        self, principal: Principal, method: str, error: ExchangeError, objects: tuple[str, ...]
    ) -> ExchangeError:
        """Record ``error`` as DENIED naming the objects asked for, and return it to raise."""
        digest = request_digest()
        await self._record(denied_entry(principal.actor, _SERVICE + method, digest, error, objects))
        error.recorded = True
        return error

    # -- writing: publish, update, cancel ------------------------------------------------------

    async def _send(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        method: str,
        key: str,
        content_digest: str,
        *,
        signature: alert_pb2.SenderSignature,
        build: Callable[[Connection], alert_pb2.Alert | ExchangeError],
        about: tuple[str, ...] = (),
    ) -> exchange_pb2.PublishResponse:
        """Store the message ``build`` makes (or refuse with the error it returns, recorded as
        DENIED naming ``about``) with its ledger entry, once per idempotency key.

        ``build`` runs in the ledger's transaction, so the checks it makes against the thread
        (originator, cancelled) cannot race with another update of the same alert."""
        principal = current_principal()
        received = request_digest()  # read here: the work runs on the ledger's thread

        def work(connection: Connection, seq: int) -> tuple[object, Sequence[EntryDraft]]:
            existing = _store.find_by_idempotency_key(connection, principal.agency, key)
            if existing is not None:
                if existing.request_digest == content_digest:
                    return existing, ()
                return self._denied(
                    principal,
                    method,
                    received,
                    AlreadyExists(
                        "idempotency key already used for a different request",
                        [("idempotency_key", "was used before with different content")],
                    ),
                )
            alert = build(connection)
            if isinstance(alert, ExchangeError):
                return self._denied(principal, method, received, alert, about)
            alert.id = str(uuid.uuid4())
            alert.sender = str(principal.id)
            alert.sent.FromDatetime(datetime.now(UTC))
            alert.signature.CopyFrom(signature)
            body = alert.SerializeToString(deterministic=True)
            _store.insert_alert(
                connection,
                alert,
                body,
                sender_agency=principal.agency,
                idempotency_key=key,
                request_digest=content_digest,
                publish_seq=seq,
            )
            action = {
                alert_pb2.MESSAGE_TYPE_ALERT: Action.PUBLISH,
                alert_pb2.MESSAGE_TYPE_UPDATE: Action.UPDATE,
                alert_pb2.MESSAGE_TYPE_CANCEL: Action.CANCEL,
            }[alert.message_type]
            entry = EntryDraft(
                action,
                principal.actor,
                objects=(f"alert:{alert.id}", *(f"alert:{r}" for r in alert.references[:1])),
                digest=_digest(body),
                meta={
                    "category": category_name(alert.category),
                    "to": sorted(alert.recipients),
                    "handling": _handling(alert),
                    "signature": _digest(signature.signature),
                },
            )
            return _Stored(alert.id, tuple(alert.recipients)), [entry]

        committed = await self._commit(work)
        value = committed.value
        if isinstance(value, ExchangeError):
            raise value
        if isinstance(value, _store.Existing):  # a retry: the first result, freshly proven
            return exchange_pb2.PublishResponse(
                alert_id=value.alert_id, receipt=await self._receipt(context, value.publish_seq)
            )
        assert isinstance(value, _Stored)
        self._hub.notify(value.recipients)
        return exchange_pb2.PublishResponse(
            alert_id=value.alert_id, receipt=await self._receipt(context, committed.receipts[0])
        )

    @staticmethod
    def _denied(
        principal: Principal, method: str, digest: str, error: ExchangeError,
        objects: tuple[str, ...] = (),
    ) -> tuple[ExchangeError, list[EntryDraft]]:  # fmt: skip
        error.recorded = True
        return error, [denied_entry(principal.actor, _SERVICE + method, digest, error, objects)]

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
            context, "Publish", request.idempotency_key, message_digest(request.alert),
            signature=signature, build=lambda _connection: alert,
        )  # fmt: skip

    @staticmethod
    def _originals_thread(
        connection: Connection, principal: Principal, alert_id: str, visibility: _store.Visibility
    ) -> list[_store.StoredAlert] | ExchangeError:
        """The thread of ``alert_id`` if the caller's agency originated it and it is open."""
        messages = _store.thread_of(connection, alert_id)
        if not messages or not _store.visible(connection, messages[0].position, visibility):
            return NotFound("no alert with that id is visible to your agency")
        if SpiffeId.parse(messages[0].alert.sender).agency != principal.agency:
            return PermissionDenied("only the originating agency may update or cancel an alert")
        if _store.state_of(messages, datetime.now(UTC)) == alert_pb2.ALERT_STATE_CANCELLED:
            return FailedPrecondition("the alert was cancelled")
        return messages

    async def _follow_up(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        method: str,
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
            thread = self._originals_thread(connection, principal, request.alert_id, visibility)
            if isinstance(thread, ExchangeError):
                return thread
            return derive(thread[0].alert)

        return await self._send(
            context, method, request.idempotency_key, message_digest(unsigned(request)),
            signature=signature, build=build, about=(f"alert:{request.alert_id}",),
        )  # fmt: skip

    async def Update(  # noqa: N802
        self, request: exchange_pb2.UpdateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> exchange_pb2.PublishResponse:
        principal = current_principal()

        def derive(original: alert_pb2.Alert) -> alert_pb2.Alert | ExchangeError:
            given = request.alert
            changed = [
                (f"alert.{name}", "cannot change in an update; cancel and publish anew")
                for name, differs in (
                    ("category", given.category not in (0, original.category)),
                    ("handling", given.handling not in (0, original.handling)),
                    (
                        "recipients",
                        bool(given.recipients)
                        and sorted(given.recipients) != sorted(original.recipients),
                    ),
                )
                if differs
            ]
            if changed:
                return InvalidArgument("an update keeps the alert's addressing", changed)
            try:
                self._policy.authorize_publish(
                    principal.agency, category_name(original.category), original.recipients
                )
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

        return await self._follow_up(context, "Update", request, validate_update, derive)

    async def Cancel(  # noqa: N802
        self, request: exchange_pb2.CancelRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> exchange_pb2.PublishResponse:
        def derive(original: alert_pb2.Alert) -> alert_pb2.Alert:
            # The envelope of the original, no subjects: a cancellation repeats no personal data.
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

        return await self._follow_up(context, "Cancel", request, validate_cancel, derive)

    async def _receipt(
        self, context: grpc.aio.ServicerContext[Any, Any], receipt: Receipt | int
    ) -> ledger_pb2.Receipt:
        """The receipt message, with a consistency proof from the client's witnessed size.

        ``receipt`` is a fresh receipt, or the seq of an older entry to prove anew (a retry).
        """
        witnessed = witnessed_size(context)

        def build() -> ledger_pb2.Receipt:
            with self._engine.connect() as connection:
                fresh = (
                    prove(connection, receipt, cache=self._nodes)
                    if isinstance(receipt, int)
                    else receipt
                )
                first, second = sorted((witnessed, fresh.tree_size))
                proof: list[bytes] = []
                if 0 < first < second:
                    try:
                        proof = prove_consistency(connection, first, second, self._nodes)
                    except StorageError:
                        proof = []  # a size this ledger never had: the client detects it
                return receipt_message(fresh, witnessed, proof)

        if isinstance(receipt, Receipt):
            if not witnessed:
                return receipt_message(receipt)
            if witnessed <= receipt.tree_size:  # the usual case: from the writer's new nodes
                proof = cached_consistency_proof(self._nodes, witnessed, receipt.tree_size)
                if proof is not None:
                    return receipt_message(receipt, witnessed, proof)
        return await asyncio.to_thread(build)

    # -- delivering: subscribe, acknowledge ----------------------------------------------------

    async def Subscribe(  # noqa: N802
        self, request: exchange_pb2.SubscribeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[exchange_pb2.Delivery]:
        principal = current_principal()
        self._policy.authorize_receive(principal.agency)
        validate_subscribe(request)
        categories = [category_name(c) for c in request.categories]
        cursor = request.after
        with self._hub.subscription():
            while True:
                if self._hub.closing:
                    raise Unavailable("server shutting down; resume from your last cursor")
                wake = self._hub.waiter(principal.agency)
                page = await _store.read(self._engine,
                    lambda c, after=cursor: _store.alerts_for(  # type: ignore[misc]
                        c, principal.agency, after=after, categories=categories, limit=PAGE,
                        now=datetime.now(UTC),
                    )
                )  # fmt: skip
                if not page:
                    await wake.wait()
                    continue
                # Record before sending: the ledger may say "delivered" for an alert a dropped
                # connection lost (it is sent again on resume), never the reverse.
                await self._record(
                    *(
                        EntryDraft(
                            Action.DELIVER,
                            principal.actor,
                            objects=_objects([stored]),
                            digest=_digest(stored.body),
                            meta={"cursor": stored.position},
                        )
                        for stored in page
                    )
                )
                for stored in page:
                    yield exchange_pb2.Delivery(cursor=stored.position, alert=stored.alert)
                    cursor = stored.position
                    sent = stored.alert.sent.ToDatetime(UTC)
                    self._hub.delivered((datetime.now(UTC) - sent).total_seconds())

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
        asked = f"alert:{request.alert_id}"
        received = request_digest()
        key = request.idempotency_key or None
        content = exchange_pb2.AcknowledgeRequest()
        content.CopyFrom(request)
        content.ClearField("idempotency_key")
        content_digest = message_digest(content)

        def work(connection: Connection, seq: int) -> tuple[object, Sequence[EntryDraft]]:
            if key is not None:
                existing = _store.find_acknowledgement(connection, principal.agency, key)
                if existing is not None:
                    if existing.request_digest == content_digest:
                        return existing, ()
                    error = AlreadyExists(
                        "idempotency key already used for a different acknowledgement",
                        [("idempotency_key", "was used before with different content")],
                    )
                    return self._denied(principal, "Acknowledge", received, error, (asked,))
            original = _store.addressed_to(connection, request.alert_id, principal.agency)
            if original is None:
                missing = NotFound("no alert with that id is addressed to your agency")
                return self._denied(principal, "Acknowledge", received, missing, (asked,))
            ack.alert_id = original.alert.id  # the thread, whichever message was answered
            body = ack.SerializeToString(deterministic=True)
            _store.insert_acknowledgement(
                connection, original.position, ack, body, now,
                idempotency_key=key, request_digest=content_digest, seq=seq,
            )  # fmt: skip
            response = alert_pb2.Response.Name(request.response).removeprefix("RESPONSE_")
            objects = tuple(dict.fromkeys((f"alert:{ack.alert_id}", asked)))
            return ack, [
                EntryDraft(
                    Action.ACK,
                    principal.actor,
                    objects=objects,
                    digest=_digest(body),
                    meta={"response": response},
                )
            ]

        committed = await self._commit(work)
        if isinstance(committed.value, ExchangeError):
            raise committed.value
        if isinstance(committed.value, _store.ExistingAck):  # a retry: the first, proven anew
            return exchange_pb2.AcknowledgeResponse(
                acknowledgement=committed.value.acknowledgement,
                receipt=await self._receipt(context, committed.value.seq),
            )
        return exchange_pb2.AcknowledgeResponse(
            acknowledgement=ack, receipt=await self._receipt(context, committed.receipts[0])
        )

    # -- reading: get, list, search, acknowledgements ------------------------------------------

    def _visibility(
        self, agency: str, authorize: Callable[[str], AgencyPolicy]
    ) -> _store.Visibility:
        policy = authorize(agency)
        return _store.Visibility(agency, policy.receive, self._policy.amber_sharers(agency))

    async def GetAlert(  # noqa: N802
        self, request: exchange_pb2.GetAlertRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> exchange_pb2.AlertView:
        principal = current_principal()
        visibility = self._visibility(principal.agency, self._policy.authorize_read)
        validate_alert_id(request)

        def query(connection: Connection) -> list[_store.StoredAlert]:
            messages = _store.thread_of(connection, request.alert_id)
            if messages and _store.visible(connection, messages[0].position, visibility):
                return messages
            return []

        messages = await _store.read(self._engine, query)
        if not messages:
            raise await self._refuse(
                principal, "GetAlert",
                NotFound("no alert with that id is visible to your agency"),
                (f"alert:{request.alert_id}",),
            )  # fmt: skip
        view = _store.view_of(messages, datetime.now(UTC), history=True)
        await self._record(
            EntryDraft(
                Action.READ,
                principal.actor,
                objects=_objects(messages),
                digest=_digest(view.SerializeToString(deterministic=True)),
                meta={"method": "GetAlert"},
            )
        )
        return view

    async def _list(
        self, principal: Principal, visibility: _store.Visibility, query: _store.ListQuery
    ) -> exchange_pb2.ListAlertsResponse:
        now = datetime.now(UTC)
        found, next_token = await _store.read(
            self._engine, lambda c: _store.list_threads(c, visibility, query, now)
        )
        return exchange_pb2.ListAlertsResponse(
            alerts=[_store.view_of(thread, now, history=False) for thread in found],
            next_page_token=str(next_token) if next_token else "",
        )

    async def ListAlerts(  # noqa: N802
        self, request: exchange_pb2.ListAlertsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> exchange_pb2.ListAlertsResponse:
        principal = current_principal()
        visibility = self._visibility(principal.agency, self._policy.authorize_read)
        validate_list(request)
        query = _store.ListQuery(
            categories=[category_name(c) for c in request.categories],
            sender_agency=request.sender_agency,
            sent_after=request.sent_after.ToDatetime(UTC)
            if request.HasField("sent_after") else None,
            sent_before=request.sent_before.ToDatetime(UTC)
            if request.HasField("sent_before") else None,
            states=[alert_pb2.AlertState.Name(s).removeprefix("ALERT_STATE_")
                    for s in request.states],
            before=int(request.page_token or 0),
            limit=request.page_size or DEFAULT_PAGE,
        )  # fmt: skip
        response = await self._list(principal, visibility, query)
        await self._record(
            EntryDraft(
                Action.READ,
                principal.actor,
                objects=tuple(f"alert:{view.id}" for view in response.alerts),
                digest=_digest(response.SerializeToString(deterministic=True)),
                meta={"method": "ListAlerts", "results": len(response.alerts)},
            )
        )
        return response

    async def SearchAlerts(  # noqa: N802
        self, request: exchange_pb2.SearchAlertsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> exchange_pb2.ListAlertsResponse:
        principal = current_principal()
        visibility = self._visibility(principal.agency, self._policy.authorize_search)
        kind, value = validate_search(request)
        query = _store.ListQuery(
            thread_ids=_store.matching_threads(_store.search_keys(kind, value, self._keys)),
            before=int(request.page_token or 0),
            limit=request.page_size or DEFAULT_PAGE,
        )
        response = await self._list(principal, visibility, query)
        # The query itself is personal data: the entry keeps a salted digest an auditor can
        # test a candidate identifier against (docs/api.md), never the identifier.
        salt = secrets.token_bytes(16)
        await self._record(
            EntryDraft(
                Action.SEARCH,
                principal.actor,
                objects=tuple(f"alert:{view.id}" for view in response.alerts),
                digest=_digest(salt + normalise_identifier(kind, value)),
                meta={
                    "method": "SearchAlerts",
                    "kind": kind,
                    "salt": salt.hex(),
                    "results": len(response.alerts),
                },
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

        def query(connection: Connection) -> list[alert_pb2.Acknowledgement] | None:
            messages = _store.thread_of(connection, request.alert_id)
            if not messages or not _store.visible(connection, messages[0].position, visibility):
                return None
            original = messages[0]
            if SpiffeId.parse(original.alert.sender).agency == principal.agency:
                return _store.acknowledgements_of(connection, original.position, None)
            if _store.addressed_to(connection, original.alert.id, principal.agency) is None:
                return None
            return _store.acknowledgements_of(connection, original.position, principal.agency)

        acks = await _store.read(self._engine, query)
        if acks is None:
            raise await self._refuse(
                principal, "ListAcknowledgements",
                NotFound("no alert with that id is addressed to or sent by your agency"),
                (f"alert:{request.alert_id}",),
            )  # fmt: skip
        response = exchange_pb2.ListAcknowledgementsResponse(acknowledgements=acks)
        await self._record(
            EntryDraft(
                Action.READ,
                principal.actor,
                objects=(f"alert:{request.alert_id}",),
                digest=_digest(response.SerializeToString(deterministic=True)),
                meta={"method": "ListAcknowledgements", "results": len(acks)},
            )
        )
        return response
