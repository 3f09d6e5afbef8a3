"""The receipt a write is answered with: its entry, the checkpoint, the inclusion proof, and a
consistency proof from the checkpoint the client last verified, so the client can witness the
ledger with every answer (docs/decisions/0008). With witnesses, also the newest checkpoint with
the witness policy's quorum and the proof that the receipt's tree extends it: the write is then
covered by what the witnesses vouched for as soon as a quorum reaches its size, and a publish
never waits for one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from sqlalchemy import Connection, Engine

from exchange._errors import InvalidArgument
from ledger import WITNESSED_SIZE_HEADER, Receipt, StorageError
from ledger.store import NodeCache, cached_consistency_proof, prove, prove_consistency
from sinergi.v1 import ledger_pb2

#: The newest checkpoint with the witness policy's quorum, (size, cosigned note), or None yet.
Cosigned = Callable[[], tuple[int, bytes] | None]


def receipt_message(
    receipt: Receipt,
    witnessed: int = 0,
    consistency: Sequence[bytes] = (),
    cosigned: tuple[int, bytes] | None = None,
    cosigned_proof: Sequence[bytes] = (),
) -> ledger_pb2.Receipt:
    message = ledger_pb2.Receipt(
        seq=receipt.seq,
        entry_hash=receipt.entry_hash,
        entry=receipt.entry,
        checkpoint=ledger_pb2.Checkpoint(note=receipt.checkpoint),
        inclusion_proof=list(receipt.inclusion_proof),
        witnessed_size=witnessed,
        consistency_proof=list(consistency),
        cosigned_proof=list(cosigned_proof),
    )
    if cosigned is not None:
        message.cosigned.note = cosigned[1]
    return message


def witnessed_size(context: grpc.aio.ServicerContext[Any, Any]) -> int:
    """The size of the newest checkpoint the client has verified, from request metadata."""
    for key, value in context.invocation_metadata() or ():
        if key == WITNESSED_SIZE_HEADER:
            text = value if isinstance(value, str) else value.decode("ascii", "replace")
            if not text.isdigit() or len(text) > 18:
                raise InvalidArgument(
                    "bad witnessed size",
                    [(WITNESSED_SIZE_HEADER, "must be a non-negative integer")],
                )
            return int(text)
    return 0


class Receipts:
    """Receipt messages, their proofs mostly from the writer's new nodes (``nodes``)."""

    def __init__(self, engine: Engine, nodes: NodeCache, cosigned: Cosigned | None = None) -> None:
        self._engine = engine
        self._nodes = nodes
        self._cosigned = cosigned

    async def message(
        self, context: grpc.aio.ServicerContext[Any, Any], receipt: Receipt | int
    ) -> ledger_pb2.Receipt:
        """The receipt message, with a consistency proof from the client's witnessed size, and
        the newest cosigned checkpoint with the proof from it.

        ``receipt`` is a fresh receipt, or the seq of an older entry to prove anew (a retry).
        """
        witnessed = witnessed_size(context)
        cosigned = self._cosigned() if self._cosigned is not None else None
        if isinstance(receipt, Receipt):
            # The usual case: both proofs from the writer's new nodes. A witnessed size beyond
            # the receipt's is proven from the database, which says whether it ever existed.
            proof = (
                self._cached(witnessed, receipt.tree_size)
                if witnessed <= receipt.tree_size
                else None
            )
            extends = self._cached(cosigned[0], receipt.tree_size) if cosigned else []
            if proof is not None and extends is not None:
                return receipt_message(receipt, witnessed, proof, cosigned, extends)
        return await asyncio.to_thread(self._proven, receipt, witnessed, cosigned)

    def _cached(self, one: int, other: int) -> list[bytes] | None:
        """The consistency proof between two committed sizes, smaller first, from the cache
        alone (None when a node is not there); empty when there is nothing to prove."""
        first, second = sorted((one, other))
        if not 0 < first < second:
            return []
        return cached_consistency_proof(self._nodes, first, second)

    def _proven(
        self, receipt: Receipt | int, witnessed: int, cosigned: tuple[int, bytes] | None
    ) -> ledger_pb2.Receipt:
        with self._engine.connect() as connection:
            if isinstance(receipt, int):
                receipt = prove(connection, receipt, cache=self._nodes)
            proof = self._stored(connection, witnessed, receipt.tree_size)
            extends = self._stored(connection, cosigned[0], receipt.tree_size) if cosigned else []
            return receipt_message(receipt, witnessed, proof, cosigned, extends)

    def _stored(self, connection: Connection, one: int, other: int) -> list[bytes]:
        first, second = sorted((one, other))
        if not 0 < first < second:
            return []
        try:
            return prove_consistency(connection, first, second, self._nodes)
        except StorageError:
            return []  # a size this ledger never had: the client detects it
