"""Reads of the stored ledger: entries, checkpoints, Merkle nodes, and proofs made from them.

Every proof reads O(log n) stored nodes (RFC 6962 section 2.1), fetched in one query
(:func:`prefetched`) and kept in a :class:`NodeCache`: a stored node never changes.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy import Connection, bindparam, func, insert, select

from ledger import _meta as meta
from ledger._entry import Action, Entry
from ledger._errors import LedgerError, StorageError
from ledger._merkle import NodeReader, consistency_proof, inclusion_proof
from ledger._receipt import Receipt
from ledger.store._schema import checkpoints, cosignatures, entries, nodes

T = TypeVar("T")

# Statements of every proof and read, built once (a statement built per call pays for its
# construction and cache key each time).
SIZE = select(func.coalesce(func.max(entries.c.seq), 0))
_NODE = select(nodes.c.hash).where(
    nodes.c.level == bindparam("level"), nodes.c.idx == bindparam("idx")
)
_ENTRY_AT = select(entries.c.hash, entries.c.body).where(entries.c.seq == bindparam("seq"))
_CHECKPOINT = select(checkpoints.c.size, checkpoints.c.note)
_NEWEST_CHECKPOINT = _CHECKPOINT.order_by(checkpoints.c.size.desc()).limit(1)
_CHECKPOINT_AT = _CHECKPOINT.where(checkpoints.c.size == bindparam("size"))
_NEXT_SEQ = select(func.min(entries.c.seq)).where(entries.c.seq > bindparam("after"))
_COSIGNATURES = select(cosignatures.c.size, cosignatures.c.line)
#: What a proof's first pass reads in place of each node (see prefetched).
_PLACEHOLDER = bytes(32)


class NodeCache:
    """Recently read tree nodes. A stored node never changes (the table is append-only), so a
    cache of them is always right for its database; consecutive proofs share most nodes, so
    receipts mostly skip the database. Bounded, least recently used first out; thread-safe."""

    def __init__(self, size: int = 1 << 16) -> None:
        self._size = size
        self._nodes: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[int, int]) -> bytes | None:
        with self._lock:
            node = self._nodes.get(key)
            if node is not None:
                self._nodes.move_to_end(key)
            return node

    def put(self, key: tuple[int, int], node: bytes) -> None:
        self.put_all({key: node})

    def put_all(self, nodes: dict[tuple[int, int], bytes]) -> None:
        with self._lock:
            self._nodes.update(nodes)
            for _ in range(len(self._nodes) - self._size):
                self._nodes.popitem(last=False)


def node_reader(connection: Connection, cache: NodeCache | None = None) -> NodeReader:
    """Perfect-subtree hashes from the ``ledger_nodes`` table, one indexed lookup each (none for
    a node in ``cache``)."""
    if cache is None:
        return lambda level, index: read_node(connection, level, index)

    def cached(level: int, index: int) -> bytes:
        node = cache.get((level, index))
        if node is None:
            node = read_node(connection, level, index)
            cache.put((level, index), node)
        return node

    return cached


def cached_consistency_proof(cache: NodeCache, first: int, second: int) -> list[bytes] | None:
    """PROOF(first, D[second]) from ``cache`` alone, or None when a node is not there (then
    :func:`prove_consistency` reads it). For sizes known to be committed: nothing checks here
    that the ledger reached ``second``."""

    def cached(level: int, index: int) -> bytes:
        node = cache.get((level, index))
        if node is None:
            raise _NotCached
        return node

    try:
        return consistency_proof(first, second, cached)
    except _NotCached:
        return None


class _NotCached(Exception):
    """A node a cache-only proof needs is not in the cache."""


def read_nodes(
    connection: Connection, keys: Sequence[tuple[int, int]], cache: NodeCache | None = None
) -> dict[tuple[int, int], bytes]:
    """The stored nodes ``(level, index)`` of ``keys``: those not in ``cache`` in one query.
    StorageError if one is missing."""
    found: dict[tuple[int, int], bytes] = {}
    missing = []
    for key in dict.fromkeys(keys):
        node = cache.get(key) if cache is not None else None
        if node is None:
            missing.append(key)
        else:
            found[key] = node
    if not missing:
        return found
    # One point lookup per key, OR'ed: both databases search the primary key for each (SQLite's
    # "MULTI-INDEX OR"; a row-value IN made SQLite scan the whole table).
    statement = _nodes_query(len(missing), marker(connection))
    rows = connection.exec_driver_sql(statement, tuple(v for key in missing for v in key))
    read = {(int(level), int(index)): blob(node) for level, index, node in rows}
    for level, index in missing:
        if (level, index) not in read:
            raise StorageError(f"Merkle node ({level}, {index}) is missing from the ledger")
    if cache is not None:
        cache.put_all(read)
    found.update(read)
    return found


def prefetched(
    connection: Connection, compute: Callable[[NodeReader], T], cache: NodeCache | None
) -> T:
    """``compute(reader)``, a proof or root, with the nodes it reads fetched in one query.

    Which nodes an RFC 6962 proof or root reads (section 2.1) depends on the sizes and indices
    alone, never on the hashes: a first pass with placeholder hashes names them, one ``SELECT``
    reads them, and the real pass runs from memory. One round trip instead of one per node (24
    at a million entries), which matters most on a database across a network."""
    wanted: list[tuple[int, int]] = []

    def record(level: int, index: int) -> bytes:
        wanted.append((level, index))
        return _PLACEHOLDER

    compute(record)
    found = read_nodes(connection, wanted, cache)
    return compute(lambda level, index: found[level, index])


@functools.lru_cache(maxsize=256)
def _nodes_query(count: int, marker: str) -> str:
    match = f"(level = {marker} AND idx = {marker})"
    # Names from the schema and placeholders only: every value is a bound parameter.
    return f"SELECT level, idx, hash FROM {nodes.name} WHERE " + " OR ".join([match] * count)  # noqa: S608


def marker(connection: Connection) -> str:
    """The driver's positional placeholder: psycopg's ``%s``, sqlite3's ``?``."""
    return "%s" if connection.dialect.name == "postgresql" else "?"


def read_node(connection: Connection, level: int, index: int) -> bytes:
    row = connection.execute(_NODE, {"level": level, "idx": index}).first()
    if row is None:
        raise StorageError(f"Merkle node ({level}, {index}) is missing from the ledger")
    return blob(row[0])


def blob(value: object) -> bytes:
    """Column bytes as stored. SQLite lets anyone with write access store TEXT in a BLOB column;
    the verifier must then report a mismatch, not crash on the type."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return str(value).encode()


def entry_count(connection: Connection) -> int:
    return int(connection.execute(select(func.count()).select_from(entries)).scalar_one())


def iter_entries(
    connection: Connection, start: int = 1, end: int | None = None, page: int = 5000
) -> Iterator[tuple[int, bytes, bytes]]:
    """(seq, stored hash, body) in seq order, paged so that memory stays flat at any size.

    Read through the DBAPI cursor of ``connection`` (in its transaction): SQLAlchemy's row
    processing cost more than the read itself, and ``verify`` reads every entry
    (docs/performance.md, benchmark 4). The only values in the statement are integers."""
    first = int(start)
    while end is None or first <= end:
        last = first + page - 1 if end is None else min(int(end), first + page - 1)
        # A cursor per page, closed before yielding: a caller may stop early (at the first
        # broken entry) and close the connection before this generator is collected.
        cursor = connection.connection.cursor()
        try:
            cursor.execute(
                f"SELECT seq, hash, body FROM {entries.name} "  # noqa: S608 - integers only
                f"WHERE seq >= {first:d} AND seq <= {last:d} ORDER BY seq"
            )
            rows = cursor.fetchall()
        finally:
            cursor.close()
        if not rows:  # the end, or a gap of a whole page: look for the next stored entry
            following = connection.execute(_NEXT_SEQ, {"after": last}).scalar()
            if following is None or (end is not None and following > end):
                return
            first = int(following)
            continue
        for seq, digest, body in rows:
            if type(digest) is bytes and type(body) is bytes:
                yield seq, digest, body
            else:
                yield seq, blob(digest), blob(body)
        first = last + 1


def ledger_origin(connection: Connection, default: str) -> str | None:
    """The origin of the stored ledger, as its first entry records it: the first START's
    ``meta.origin`` (chosen when the ledger was created). ``default`` when entry 1 records none
    (a ledger written by another tool, which signed under the key's name); None while the
    ledger is empty. StorageError when entry 1 cannot be read as an entry."""
    row = connection.execute(_ENTRY_AT, {"seq": 1}).first()
    if row is None:
        return None
    try:
        first = Entry.decode(blob(row.body))
    except LedgerError as exc:
        raise StorageError(f"entry 1 of the ledger is not an entry: {exc}") from None
    origin = first.meta.get(meta.ORIGIN) if first.action is Action.START else None
    if origin is None:
        return default
    if not isinstance(origin, str) or not origin:
        raise StorageError("entry 1 of the ledger records an origin that is not a name")
    return origin


def iter_checkpoints(connection: Connection) -> Iterator[tuple[int, bytes]]:
    """(size, signed note) for every stored checkpoint, smallest first, each with the
    witnesses' cosignatures stored for it appended."""
    lines: dict[int, list[bytes]] = {}
    for size, line in connection.execute(_COSIGNATURES.order_by(cosignatures.c.created)):
        lines.setdefault(int(size), []).append(blob(line))
    rows = connection.execute(
        select(checkpoints.c.size, checkpoints.c.note).order_by(checkpoints.c.size)
    )
    for size, note in rows:
        yield size, blob(note) + b"".join(lines.get(size, ()))


def latest_checkpoint(connection: Connection) -> bytes | None:
    found = checkpoint_at(connection, None)
    return found[1] if found else None


def checkpoint_at(connection: Connection, size: int | None) -> tuple[int, bytes] | None:
    """The stored checkpoint of exactly ``size`` entries (the newest for None), with the
    witnesses' cosignatures stored for it."""
    if size is None:
        row = connection.execute(_NEWEST_CHECKPOINT).first()
    else:
        row = connection.execute(_CHECKPOINT_AT, {"size": size}).first()
    if row is None:
        return None
    found = connection.execute(
        _COSIGNATURES.where(cosignatures.c.size == row.size).order_by(cosignatures.c.created)
    )
    return int(row.size), blob(row.note) + b"".join(blob(line) for _, line in found)


def first_checkpoint_after(connection: Connection, size: int) -> tuple[int, datetime] | None:
    """The smallest stored checkpoint larger than ``size``, and when it was committed, as its
    row records it (a database administrator can change that: it may excuse a moment, never
    more). None when there is none."""
    row = connection.execute(
        select(checkpoints.c.size, checkpoints.c.created)
        .where(checkpoints.c.size > size)
        .order_by(checkpoints.c.size)
        .limit(1)
    ).first()
    if row is None or not isinstance(row.created, datetime):
        return None
    created = row.created if row.created.tzinfo else row.created.replace(tzinfo=UTC)
    return int(row.size), created


def witness_heads(connection: Connection) -> dict[str, int]:
    """The largest checkpoint size each witness key has a stored cosignature on."""
    rows = connection.execute(
        select(cosignatures.c.witness, func.max(cosignatures.c.size)).group_by(
            cosignatures.c.witness
        )
    )
    return {witness: int(size) for witness, size in rows}


def cosigned_checkpoints(connection: Connection, limit: int = 64) -> Iterator[tuple[int, bytes]]:
    """The newest ``limit`` checkpoints that have cosignatures, newest first, as
    :func:`checkpoint_at` gives them (the note with every stored cosignature)."""
    sizes = connection.execute(
        select(cosignatures.c.size).distinct().order_by(cosignatures.c.size.desc()).limit(limit)
    ).scalars()
    for size in list(sizes):
        found = checkpoint_at(connection, int(size))
        if found is not None:
            yield found


def store_cosignatures(
    connection: Connection, size: int, lines: Sequence[tuple[str, bytes]]
) -> int:
    """Store witnesses' cosignature lines, (witness key "<name>+<hex key ID>", line with its
    newline), on the checkpoint of ``size``; one per witness key, a second one ignored. Returns
    how many were new. The caller verified them."""
    if not lines:
        return 0
    have = {
        witness
        for (witness,) in connection.execute(
            select(cosignatures.c.witness).where(cosignatures.c.size == size)
        )
    }
    now = datetime.now(UTC)
    rows = [
        {"size": size, "witness": witness, "line": line, "created": now}
        for witness, line in dict(lines).items()
        if witness not in have
    ]
    if rows:
        connection.execute(insert(cosignatures), rows)
    return len(rows)


def prove(
    connection: Connection,
    seq: int,
    tree_size: int | None = None,
    cache: NodeCache | None = None,
) -> Receipt:
    """A receipt for entry ``seq`` in a stored checkpoint (the newest for None): O(log n) reads."""
    found = checkpoint_at(connection, tree_size)
    row = connection.execute(_ENTRY_AT, {"seq": seq}).first()
    if found is None:
        raise StorageError(f"no checkpoint of size {tree_size} is stored")
    size, note = found
    if row is None or not 1 <= seq <= size:
        raise StorageError(f"entry {seq} is not covered by the checkpoint of size {size}")
    proof = prefetched(connection, lambda node: inclusion_proof(seq - 1, size, node), cache)
    return Receipt(seq, blob(row.hash), blob(row.body), note, size, tuple(proof))


def prove_consistency(
    connection: Connection, first: int, second: int, cache: NodeCache | None = None
) -> list[bytes]:
    """RFC 6962 PROOF(first, D[second]) from stored nodes, O(log n) reads; 0 < first <= second."""
    size = connection.execute(SIZE).scalar_one()
    if not 0 < first <= second <= size:
        raise StorageError(f"no consistency proof from {first} to {second} (ledger size {size})")
    return prefetched(connection, lambda node: consistency_proof(first, second, node), cache)
