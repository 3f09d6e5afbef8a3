"""The receipt a write is answered with: its entry, the checkpoint, the inclusion proof, and a
consistency proof from the checkpoint the client last verified, so the client can witness the
ledger with every answer (docs/decisions/0008).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import grpc
from sqlalchemy import Engine

from exchange._errors import InvalidArgument
from ledger import Receipt, StorageError
from ledger.store import NodeCache, cached_consistency_proof, prove, prove_consistency
from sinergi.v1 import ledger_pb2

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


class Receipts:
    """Receipt messages, their proofs mostly from the writer's new nodes (``nodes``)."""

    def __init__(self, engine: Engine, nodes: NodeCache) -> None:
        self._engine = engine
        self._nodes = nodes

    async def message(
        self, context: grpc.aio.ServicerContext[Any, Any], receipt: Receipt | int
    ) -> ledger_pb2.Receipt:
        """The receipt message, with a consistency proof from the client's witnessed size.

        ``receipt`` is a fresh receipt, or the seq of an older entry to prove anew (a retry).
        """
        witnessed = witnessed_size(context)
        if isinstance(receipt, Receipt):
            if not witnessed:
                return receipt_message(receipt)
            if witnessed <= receipt.tree_size:  # the usual case: from the writer's new nodes
                proof = cached_consistency_proof(self._nodes, witnessed, receipt.tree_size)
                if proof is not None:
                    return receipt_message(receipt, witnessed, proof)
        return await asyncio.to_thread(self._proven, receipt, witnessed)

    def _proven(self, receipt: Receipt | int, witnessed: int) -> ledger_pb2.Receipt:
        with self._engine.connect() as connection:
            if isinstance(receipt, int):
                receipt = prove(connection, receipt, cache=self._nodes)
            first, second = sorted((witnessed, receipt.tree_size))
            proof: list[bytes] = []
            if 0 < first < second:
                try:
                    proof = prove_consistency(connection, first, second, self._nodes)
                except StorageError:
                    proof = []  # a size this ledger never had: the client detects it
            return receipt_message(receipt, witnessed, proof)
