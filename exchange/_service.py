"""The Exchange service: publish, subscribe, acknowledge; each act commits with its ledger entry."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import grpc
from sqlalchemy import Connection, Engine

from exchange import _store
from exchange._errors import AlreadyExists, ExchangeError, InvalidArgument, NotFound, Unavailable
from exchange._policy import Policy
from exchange._rpc import current_principal, denied_entry
from exchange._subscriptions import Hub
from exchange._validate import (
    category_name,
    message_digest,
    validate_acknowledge,
    validate_publish,
    validate_subscribe,
)
from ledger import (
    Action,
    Committed,
    EntryDraft,
    LedgerError,
    LedgerWriter,
    Receipt,
    StorageError,
    Work,
    prove,
    prove_consistency,
)
from sinergi.v1 import alert_pb2, exchange_pb2, exchange_pb2_grpc, ledger_pb2

T = TypeVar("T")
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


class ExchangeService(exchange_pb2_grpc.ExchangeServicer):
    def __init__(self, policy: Policy, ledger: LedgerWriter, engine: Engine, hub: Hub) -> None:
        self._policy = policy
        self._ledger = ledger
        self._engine = engine
        self._hub = hub

    async def _commit(self, work: Work[T]) -> Committed[T]:
        try:
            return await asyncio.wrap_future(self._ledger.submit(work))
        except LedgerError as exc:
            raise Unavailable("the ledger is unavailable; retry later") from exc

    async def Publish(  # noqa: N802 - gRPC method name
        self, request: exchange_pb2.PublishRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> exchange_pb2.PublishResponse:
        principal = current_principal()
        validate_publish(request)
        category = category_name(request.alert.category)
        self._policy.authorize_publish(principal.agency, category, request.alert.recipients)

        alert = alert_pb2.Alert()
        alert.CopyFrom(request.alert)
        alert.id = str(uuid.uuid4())
        alert.sender = str(principal.id)
        alert.sent.FromDatetime(datetime.now(UTC))
        body = alert.SerializeToString(deterministic=True)
        request_digest = message_digest(request.alert)
        key = request.idempotency_key

        def work(connection: Connection, seq: int) -> tuple[object, Sequence[EntryDraft]]:
            existing = _store.find_by_idempotency_key(connection, principal.agency, key)
            if existing is not None:
                if existing.request_digest == request_digest:
                    return existing, ()
                error = AlreadyExists(
                    "idempotency key already used for a different alert",
                    [("idempotency_key", "was used before with different content")],
                    recorded=True,
                )
                return error, [
                    denied_entry(principal.actor, _SERVICE + "Publish", request_digest, error)
                ]
            _store.insert_alert(
                connection,
                alert,
                body,
                sender_agency=principal.agency,
                category=category,
                idempotency_key=key,
                request_digest=request_digest,
                publish_seq=seq,
            )
            entry = EntryDraft(
                Action.PUBLISH,
                principal.actor,
                objects=(f"alert:{alert.id}",),
                digest=hashlib.sha256(body).hexdigest(),
                meta={
                    "category": category,
                    "to": sorted(alert.recipients),
                    "handling": alert_pb2.Tlp.Name(alert.handling).removeprefix("TLP_"),
                },
            )
            return alert.id, [entry]

        committed = await self._commit(work)
        value = committed.value
        if isinstance(value, ExchangeError):
            raise value
        if isinstance(value, _store.Existing):  # a retry: the first result, freshly proven
            return exchange_pb2.PublishResponse(
                alert_id=value.alert_id, receipt=await self._receipt(context, value.publish_seq)
            )
        self._hub.notify()
        return exchange_pb2.PublishResponse(
            alert_id=alert.id, receipt=await self._receipt(context, committed.receipts[0])
        )

    async def _receipt(
        self, context: grpc.aio.ServicerContext[Any, Any], receipt: Receipt | int
    ) -> ledger_pb2.Receipt:
        """The receipt message, with a consistency proof from the client's witnessed size.

        ``receipt`` is a fresh receipt, or the seq of an older entry to prove anew (a retry).
        """
        witnessed = witnessed_size(context)

        def build() -> ledger_pb2.Receipt:
            with self._engine.connect() as connection:
                fresh = prove(connection, receipt) if isinstance(receipt, int) else receipt
                first, second = sorted((witnessed, fresh.tree_size))
                proof: list[bytes] = []
                if 0 < first < second:
                    try:
                        proof = prove_consistency(connection, first, second)
                    except StorageError:
                        proof = []  # a size this ledger never had: the client detects it
                return receipt_message(fresh, witnessed, proof)

        if isinstance(receipt, Receipt) and not witnessed:
            return receipt_message(receipt)
        return await asyncio.to_thread(build)

    def _alerts_for(
        self, agency: str, after: int, categories: Sequence[str]
    ) -> list[_store.StoredAlert]:
        with self._engine.connect() as connection:
            return _store.alerts_for(connection, agency, after, categories, PAGE)

    async def Subscribe(  # noqa: N802
        self, request: exchange_pb2.SubscribeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[exchange_pb2.Delivery]:
        principal = current_principal()
        self._policy.authorize_receive(principal.agency)
        validate_subscribe(request)
        categories = [category_name(c) for c in request.categories]
        cursor = request.after
        while True:
            wake = self._hub.waiter()
            page = await asyncio.to_thread(self._alerts_for, principal.agency, cursor, categories)
            if not page:
                await wake.wait()
                continue
            # Record before sending: the ledger may say "delivered" for an alert a dropped
            # connection lost (it is sent again on resume), never the reverse.
            await self._commit(
                lambda _c, _s, page=page: (  # type: ignore[misc]
                    None,
                    [
                        EntryDraft(
                            Action.DELIVER,
                            principal.actor,
                            objects=(f"alert:{stored.alert.id}",),
                            digest=hashlib.sha256(stored.body).hexdigest(),
                            meta={"cursor": stored.position},
                        )
                        for stored in page
                    ],
                )
            )
            for stored in page:
                yield exchange_pb2.Delivery(cursor=stored.position, alert=stored.alert)
                cursor = stored.position

    async def Acknowledge(  # noqa: N802
        self, request: exchange_pb2.AcknowledgeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> exchange_pb2.AcknowledgeResponse:
        principal = current_principal()
        self._policy.authorize_receive(principal.agency)
        validate_acknowledge(request)
        now = datetime.now(UTC)
        ack = alert_pb2.Acknowledgement(
            alert_id=request.alert_id,
            principal=str(principal.id),
            agency=principal.agency,
            response=request.response,
            case_reference=request.case_reference,
            note=request.note,
        )
        ack.time.FromDatetime(now)
        body = ack.SerializeToString(deterministic=True)
        objects = (f"alert:{request.alert_id}",)

        def work(connection: Connection, _seq: int) -> tuple[object, Sequence[EntryDraft]]:
            position = _store.addressed_to(connection, request.alert_id, principal.agency)
            if position is None:
                error = NotFound("no alert with that id is addressed to your agency", recorded=True)
                digest = message_digest(request)
                method = _SERVICE + "Acknowledge"
                return error, [denied_entry(principal.actor, method, digest, error, objects)]
            _store.insert_acknowledgement(connection, position, ack, body, now)
            response = alert_pb2.Response.Name(request.response).removeprefix("RESPONSE_")
            return ack, [
                EntryDraft(
                    Action.ACK,
                    principal.actor,
                    objects=objects,
                    digest=hashlib.sha256(body).hexdigest(),
                    meta={"response": response},
                )
            ]

        committed = await self._commit(work)
        if isinstance(committed.value, ExchangeError):
            raise committed.value
        return exchange_pb2.AcknowledgeResponse(
            acknowledgement=ack, receipt=await self._receipt(context, committed.receipts[0])
        )
