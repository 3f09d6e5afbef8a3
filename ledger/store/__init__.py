"""The ledger's storage on SQLAlchemy (SQLite and PostgreSQL): the append-only tables and their
triggers, the group-committed writer, reads and proofs from stored nodes, verification of a whole
database on every core, and the export file.

Only the exchange and auditors reading a database need it; the pure ledger (:mod:`ledger`) never
imports it, so a client verifies receipts and export files without any database code.
"""

from ledger.store._engine import create_engine, lock_ledger, snapshot, writing
from ledger.store._export import write_export
from ledger.store._reads import (
    NodeCache,
    cached_consistency_proof,
    checkpoint_at,
    cosigned_checkpoints,
    entry_count,
    first_checkpoint_after,
    iter_checkpoints,
    iter_entries,
    latest_checkpoint,
    ledger_origin,
    node_reader,
    prove,
    prove_consistency,
    store_cosignatures,
    witness_heads,
)
from ledger.store._schema import (
    APPEND_ONLY_TABLES,
    create_schema,
    install_triggers,
    metadata,
    missing_triggers,
)
from ledger.store._signed import RolledBack, SignedHistory
from ledger.store._verify import verify_database
from ledger.store._writer import LINGER, BatchStats, Committed, LedgerWriter, Work

__all__ = [
    "APPEND_ONLY_TABLES",
    "LINGER",
    "BatchStats",
    "Committed",
    "LedgerWriter",
    "NodeCache",
    "RolledBack",
    "SignedHistory",
    "Work",
    "cached_consistency_proof",
    "checkpoint_at",
    "cosigned_checkpoints",
    "create_engine",
    "create_schema",
    "entry_count",
    "first_checkpoint_after",
    "install_triggers",
    "iter_checkpoints",
    "iter_entries",
    "latest_checkpoint",
    "ledger_origin",
    "lock_ledger",
    "metadata",
    "missing_triggers",
    "node_reader",
    "prove",
    "prove_consistency",
    "snapshot",
    "store_cosignatures",
    "verify_database",
    "witness_heads",
    "write_export",
    "writing",
]
