"""The AuditLedger service: read access for auditors, each call itself recorded (LEDGER_READ).

Any member may fetch the newest checkpoint and consistency proofs, to witness the log; a
recipient its own envelopes (the entries addressed to it), to catch an alert kept from it; whoever
may read an alert, the proof that it was recorded (recorded as a READ of the alert).

Auditors are audited too (docs/architecture.md): the entry is committed before the answer is
sent, naming the range or proof that was read.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import grpc
from sqlalchemy import Connection, Engine

from exchange import _entries
from exchange._envelopes import envelopes_for, proof_of
from exchange._errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ledger_unavailable,
)
from exchange._offload import read
from exchange._policy import Policy
from exchange._receipts import Cosigned
from exchange._rpc import current_principal, denied_recorder
from exchange._validate import validate_alert_id
from exchange._visibility import Visibility
from ledger import EntryDraft, LedgerError, StorageError
from ledger.store import (
    LedgerWriter,
    RolledBack,
    checkpoint_at,
    iter_entries,
    prove,
    prove_consistency,
)
from sinergi.v1 import ledger_pb2, ledger_pb2_grpc

T = TypeVar("T")
PAGE = 1000
#: Entries GetEnvelopes looks at per call: a bounded read, whatever the range asked.
ENVELOPE_SCAN = 10_000
#: Entry bytes per GetEntryPages message: far below grpcio's 4 MiB default receive limit.
PAGE_BYTES = 1 << 20
#: Ledger positions are canonical-JSON integers (docs/ledger-format.md): at most 2^53 - 1. A
#: larger one cannot name an entry, and could not be recorded in the LEDGER_READ entry either.
MAX_POSITION = 2**53 - 1


def _position(value: int, least: int, below: str) -> str | None:
    """What is wrong with a requested ledger position: ``below`` under ``least``, or beyond any
    ledger (it could not be recorded in the LEDGER_READ entry either); None if nothing."""
    if value < least:
        return below
    if value > MAX_POSITION:
        return f"must be at most {MAX_POSITION}"
    return None


def _refuse(summary: str, **problems: str | None) -> None:
    """Refuse a request naming each field that is wrong, and only those, before it is recorded
    or queried: a client fixes what the answer names."""
    bad = [(name, problem) for name, problem in problems.items() if problem is not None]
    if bad:
        raise InvalidArgument(summary, bad)


class AuditLedgerService(ledger_pb2_grpc.AuditLedgerServicer):
    def __init__(
        self,
        policy: Policy,
        ledger: LedgerWriter,
        engine: Engine,
        cosigned: Cosigned | None = None,
    ) -> None:
        """``cosigned`` gives the newest checkpoint with the witness policy's quorum, which
        GetCheckpoint answers while there is one (None: no witnesses)."""
        self._policy = policy
        self._ledger = ledger
        self._engine = engine
        self._cosigned = cosigned

    def _authorize(self, *, witness: bool = False) -> None:
        """Auditors read everything; any member may witness (checkpoints and consistency proofs
        are hashes only, and every client must be able to check the ledger was not rewritten)."""
        agency = current_principal().agency
        if witness:
            self._policy.authorize_member(agency)
        else:
            self._policy.authorize_audit(agency)

    async def _record(self, method: str, **asked: int) -> None:
        await self._append(_entries.ledger_read(current_principal().actor, method, **asked))

    async def _append(self, entry: EntryDraft) -> None:
        try:
            await asyncio.wrap_future(self._ledger.append(entry))
        except LedgerError as exc:
            raise ledger_unavailable(self._ledger.halted) from exc

    async def _read(self, fn: Callable[[Connection], T]) -> T:
        try:
            return await read(self._engine, fn)
        except RolledBack as exc:  # a ledger that lost what was signed: not a missing entry
            raise ledger_unavailable(str(exc)) from None
        except StorageError as exc:
            raise NotFound(str(exc)) from None

    async def _checkpoint(self, size: int) -> tuple[int, bytes]:
        found = await self._read(lambda c: checkpoint_at(c, size or None))
        if found is None:
            raise NotFound(f"no checkpoint of size {size} is stored", [("tree_size", "unknown")])
        return found

    async def GetCheckpoint(  # noqa: N802 - gRPC method name
        self, request: ledger_pb2.GetCheckpointRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> ledger_pb2.Checkpoint:
        self._authorize(witness=True)
        await self._record("GetCheckpoint")
        # With witnesses, the newest checkpoint they vouched for: a newer one that no quorum
        # has seen yet could still be a split view. Until one has its quorum, the newest.
        found = self._cosigned() if self._cosigned is not None else None
        _, note = found or await self._checkpoint(0)
        return ledger_pb2.Checkpoint(note=note)

    async def GetEntries(  # noqa: N802
        self, request: ledger_pb2.GetEntriesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[ledger_pb2.LedgerEntry]:
        async for page in self._entries("GetEntries", request):
            for entry in page:
                yield entry

    async def GetEntryPages(  # noqa: N802
        self, request: ledger_pb2.GetEntriesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[ledger_pb2.LedgerEntryPage]:
        async for page in self._entries("GetEntryPages", request):
            yield ledger_pb2.LedgerEntryPage(entries=page)

    async def _entries(
        self, method: str, request: ledger_pb2.GetEntriesRequest
    ) -> AsyncIterator[list[ledger_pb2.LedgerEntry]]:
        """Entries start..end in pages of at most PAGE entries and PAGE_BYTES of entry bytes (at
        least one entry each), after the read is authorized, checked and recorded."""
        self._authorize()
        after = "must be 0 (the newest) or >= start"
        bad_start = _position(request.start, 1, "must be >= 1")
        bad_end = _position(request.end, 0, after)
        if bad_start is None and bad_end is None and 0 < request.end < request.start:
            bad_end = after
        _refuse("invalid range", start=bad_start, end=bad_end)
        end = request.end or (await self._checkpoint(0))[0]
        await self._record(method, start=request.start, end=end)
        cursor = request.start
        while cursor <= end:
            last = min(end, cursor + PAGE - 1)
            rows = await self._read(lambda c, a=cursor, b=last: list(iter_entries(c, a, b)))  # type: ignore[misc]
            if not rows:
                return
            page: list[ledger_pb2.LedgerEntry] = []
            size = 0
            for seq, _hash, body in rows:
                if page and size + len(body) > PAGE_BYTES:
                    yield page
                    page, size = [], 0
                page.append(ledger_pb2.LedgerEntry(seq=seq, entry=body))
                size += len(body)
            yield page
            cursor = last + 1

    async def GetInclusionProof(  # noqa: N802
        self, request: ledger_pb2.InclusionProofRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> ledger_pb2.InclusionProof:
        self._authorize()
        _refuse(
            "invalid proof request",
            seq=_position(request.seq, 1, "must be >= 1"),
            tree_size=_position(request.tree_size, 0, "must be 0 (the newest) or more"),
        )
        await self._record("GetInclusionProof", seq=request.seq, tree_size=request.tree_size)
        receipt = await self._read(lambda c: prove(c, request.seq, request.tree_size or None))
        return ledger_pb2.InclusionProof(
            seq=receipt.seq,
            entry=receipt.entry,
            checkpoint=ledger_pb2.Checkpoint(note=receipt.checkpoint),
            proof=list(receipt.inclusion_proof),
        )

    async def GetConsistencyProof(  # noqa: N802
        self,
        request: ledger_pb2.ConsistencyProofRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> ledger_pb2.ConsistencyProof:
        self._authorize(witness=True)
        _refuse(
            "invalid proof request",
            first=_position(request.first, 1, "must be >= 1"),
            second=_position(request.second, 0, "must be 0 (the newest) or more"),
        )
        await self._record("GetConsistencyProof", first=request.first, second=request.second)
        size, note = await self._checkpoint(request.second)
        if request.first > size:
            raise InvalidArgument("first is after second", [("first", "must be <= second")])
        proof = await self._read(lambda c: prove_consistency(c, request.first, size))
        return ledger_pb2.ConsistencyProof(
            first=request.first, checkpoint=ledger_pb2.Checkpoint(note=note), proof=proof
        )

    async def GetEnvelopes(  # noqa: N802
        self, request: ledger_pb2.GetEnvelopesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> ledger_pb2.Envelopes:
        principal = current_principal()
        self._policy.authorize_receive(principal.agency)
        if request.agency not in ("", principal.agency):
            raise PermissionDenied(
                f"{principal.agency} may read only the entries addressed to itself",
                [("agency", f"must be empty or {principal.agency!r}")],
            )
        size_problem = _position(request.tree_size, 0, "must be 0 (the newest) or more")
        if size_problem is None and 0 < request.tree_size < request.start:
            size_problem = "must be 0 (the newest) or >= start"
        _refuse(
            "invalid range",
            start=_position(request.start, 1, "must be >= 1"),
            tree_size=size_problem,
        )
        size, _note = await self._checkpoint(request.tree_size)
        if request.start > size:
            raise InvalidArgument(
                "start is after the checkpoint", [("start", f"must be <= {size}")]
            )
        end = min(size, request.start + ENVELOPE_SCAN - 1)
        found = await self._read(
            lambda c: envelopes_for(c, principal.agency, request.start, end, size)
        )
        await self._record(
            "GetEnvelopes", start=request.start, end=end, tree_size=size, results=len(found)
        )
        return ledger_pb2.Envelopes(end=end, tree_size=size, envelopes=found)

    async def GetAlertProof(  # noqa: N802
        self, request: ledger_pb2.GetAlertProofRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> ledger_pb2.AlertProof:
        principal = current_principal()
        visibility = Visibility.of(self._policy, principal.agency, self._policy.authorize_read)
        validate_alert_id(request)
        cosigned = self._cosigned() if self._cosigned is not None else None
        found = await self._read(
            lambda c: proof_of(c, request.alert_id, visibility, cosigned[0] if cosigned else None)
        )
        if isinstance(found, NotFound):  # committed before the answer, as GetAlert's is
            raise await denied_recorder().commit(found, (_entries.alert_object(request.alert_id),))
        if found is None:
            raise FailedPrecondition(
                "the message's entry is not yet covered by a checkpoint its witnesses cosigned: "
                "ask again in a few seconds"
            )
        body, receipt = found
        note = cosigned[1] if cosigned else receipt.checkpoint
        answer = ledger_pb2.AlertProof(
            message=body,
            seq=receipt.seq,
            entry=receipt.entry,
            checkpoint=ledger_pb2.Checkpoint(note=note),
            proof=list(receipt.inclusion_proof),
        )
        await self._append(
            _entries.read(
                principal.actor,
                "GetAlertProof",
                [_entries.alert_object(request.alert_id)],
                answer.SerializeToString(deterministic=True),
            )
        )
        return answer
