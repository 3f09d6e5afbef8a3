"""RFC 6962 Merkle tree hashing, proof generation and RFC 9162 proof verification (pure).

Every hash is 32 bytes of SHA-256. The tree over ``n`` leaf hashes is the one of RFC 6962
section 2.1: its shape is fixed by ``n`` alone, and leaves and interior nodes are hashed with
distinct prefixes (0x00, 0x01) for second-preimage resistance.

Storage is abstracted as a :data:`NodeReader`: ``node(level, index)`` is the hash of the
*perfect* subtree of height ``level`` covering leaves ``[index * 2**level, (index + 1) * 2**level)``
(level 0 holds the leaf hashes). Proof generation reads O(log n) such nodes and never recurses
deeper than O(log n).

Argument errors in the generating functions (negative sizes, an index outside the tree, a hash
that is not 32 bytes) raise :class:`ValueError`: they are bugs of the caller. The verifying
functions treat every input as untrusted and raise :class:`~ledger._errors.ProofError` for
anything that does not verify, malformed input included; they never return a boolean.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from ledger._errors import ProofError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MAX_TREE_SIZE",
    "Frontier",
    "NodeReader",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "range_hash",
    "root_at",
    "root_of",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
"""Size in bytes of every hash of the tree (SHA-256)."""

MAX_TREE_SIZE = 2**64 - 1
"""Largest tree size accepted (an unsigned 64-bit integer, as in C2SP checkpoints)."""

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"
# A proof for a tree of at most 2**64 - 1 leaves has at most 64 (inclusion) or 65 (consistency)
# hashes; longer ones are rejected before any hashing.
_MAX_PROOF_LEN = 65

EMPTY_ROOT: bytes = hashlib.sha256(b"").digest()
"""MTH({}) = SHA-256() (RFC 6962 section 2.1), the root of the empty tree."""

NodeReader = Callable[[int, int], bytes]
"""``node(level, index)``: hash of the perfect subtree of height ``level`` whose leaves are
``[index * 2**level, (index + 1) * 2**level)``; level 0 is the leaf hashes."""


# --------------------------------------------------------------------------------------------
# Hashing (RFC 6962 section 2.1)


def leaf_hash(data: bytes) -> bytes:
    """Leaf hash ``SHA-256(0x00 || data)`` (RFC 6962 section 2.1, MTH of one entry)."""
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Interior node hash ``SHA-256(0x01 || left || right)`` (RFC 6962 section 2.1)."""
    _check_hash(left, "left")
    _check_hash(right, "right")
    return _hash_children(left, right)


def _hash_children(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def root_of(leaves: Sequence[bytes]) -> bytes:
    """MTH over already leaf-hashed entries (RFC 6962 section 2.1), the O(n) reference.

    Computed level by level: adjacent pairs are hashed together and an unpaired last node is
    carried up unchanged, which yields exactly the RFC 6962 shape (left subtree of size k, the
    largest power of two smaller than n).
    """
    level = list(leaves)
    for h in level:
        if not isinstance(h, bytes) or len(h) != HASH_SIZE:
            _check_hash(h, "a leaf hash")
    if not level:
        return EMPTY_ROOT
    while len(level) > 1:
        nxt = [_hash_children(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


# --------------------------------------------------------------------------------------------
# The compact range [0, size): what an appender keeps of the tree


class Frontier:
    """The compact range [0, size): the roots of the perfect subtrees of the binary decomposition
    of ``size``, largest (leftmost) first; RFC 6962 section 2.1 MTH is their right fold."""

    __slots__ = ("_hashes", "_size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        _check_size(size, "size")
        hs = list(hashes)
        if len(hs) != size.bit_count():
            raise ValueError(
                f"a frontier of size {size} has {size.bit_count()} hashes, got {len(hs)}"
            )
        for i, h in enumerate(hs):
            _check_hash(h, f"hashes[{i}]")
        self._size = size
        self._hashes = hs

    @classmethod
    def from_reader(cls, size: int, node: NodeReader) -> Frontier:
        """Rebuild the frontier of a stored tree of ``size`` leaves: popcount(size) node reads."""
        _check_size(size, "size")
        return cls(size, [node(level, index) for level, index in _decomposition(0, size)])

    @property
    def size(self) -> int:
        """Number of leaves appended so far."""
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        """The perfect subtree roots, largest subtree first."""
        return tuple(self._hashes)

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Append one leaf hash; return every perfect node this completes as
        ``(level, index, hash)``, the leaf itself (level 0) first, so the caller can store them."""
        _check_hash(leaf, "leaf")
        if self._size >= MAX_TREE_SIZE:
            raise ValueError("tree is full")
        position = self._size
        completed = [(0, position, leaf)]
        h = leaf
        level = 0
        # Each set low bit of the old size is a perfect left sibling waiting for this subtree.
        while (position >> level) & 1:
            h = _hash_children(self._hashes.pop(), h)
            level += 1
            completed.append((level, position >> level, h))
        self._hashes.append(h)
        self._size = position + 1
        return completed

    def root(self) -> bytes:
        """MTH of the current tree (RFC 6962 section 2.1); :data:`EMPTY_ROOT` when empty."""
        if not self._hashes:
            return EMPTY_ROOT
        r = self._hashes[-1]
        for h in reversed(self._hashes[:-1]):
            r = _hash_children(h, r)
        return r

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Frontier):
            return NotImplemented
        return self._size == other._size and self._hashes == other._hashes

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"Frontier(size={self._size}, hashes=[{', '.join(h.hex() for h in self._hashes)}])"


# --------------------------------------------------------------------------------------------
# Reading subtree hashes from storage


def _decomposition(begin: int, end: int) -> list[tuple[int, int]]:
    """The perfect subtrees ``(level, index)`` making up [begin, end), largest first.

    Requires ``begin`` to be a multiple of the largest power of two <= end - begin (the ranges
    that occur in RFC 6962 proofs and roots all are)."""
    out = []
    pos = begin
    count = end - begin
    for level in range(count.bit_length() - 1, -1, -1):
        if (count >> level) & 1:
            out.append((level, pos >> level))
            pos += 1 << level
    return out


def range_hash(begin: int, end: int, node: NodeReader) -> bytes:
    """MTH(D[begin:end]) (RFC 6962 section 2.1) from popcount(end - begin) node reads.

    ``begin`` must be aligned as the subtrees of RFC 6962 proofs are: a multiple of the largest
    power of two not above ``end - begin``. ``begin == end`` gives :data:`EMPTY_ROOT`."""
    _check_size(begin, "begin")
    _check_size(end, "end")
    if end < begin:
        raise ValueError(f"range [{begin}, {end}) is reversed")
    count = end - begin
    if count == 0:
        return EMPTY_ROOT
    if begin % (1 << (count.bit_length() - 1)):
        raise ValueError(f"range [{begin}, {end}) is not aligned as an RFC 6962 subtree")
    hashes = [_read(node, level, index) for level, index in _decomposition(begin, end)]
    r = hashes[-1]
    for h in reversed(hashes[:-1]):
        r = _hash_children(h, r)
    return r


def root_at(size: int, node: NodeReader) -> bytes:
    """MTH(D[size]) (RFC 6962 section 2.1) of the first ``size`` stored leaves, O(log n) reads."""
    return range_hash(0, size, node)


def _read(node: NodeReader, level: int, index: int) -> bytes:
    h = node(level, index)
    if not isinstance(h, bytes) or len(h) != HASH_SIZE:
        raise ValueError(f"node reader returned a malformed hash for ({level}, {index})")
    return h


def _split(n: int) -> int:
    """k, the largest power of two smaller than n (n > 1), as in RFC 6962 section 2.1."""
    return 1 << ((n - 1).bit_length() - 1)


# --------------------------------------------------------------------------------------------
# Proof generation (RFC 6962 section 2.1.1 and 2.1.2)


def inclusion_proof(index: int, size: int, node: NodeReader) -> list[bytes]:
    """Audit path PATH(index, D[size]) (RFC 6962 section 2.1.1), nearest the leaf first.

    Walks the RFC recursion top-down without recursing: every sibling is a perfect subtree
    (one read) except at most one right sibling, which costs popcount reads."""
    _check_size(size, "size")
    _check_size(index, "index")
    if index >= size:
        raise ValueError(f"index {index} is outside a tree of size {size}")
    lo, hi = 0, size
    top_down: list[bytes] = []
    while hi - lo > 1:
        k = _split(hi - lo)
        if index - lo < k:  # PATH(m, D[n]) = PATH(m, D[0:k]) : MTH(D[k:n])
            top_down.append(range_hash(lo + k, hi, node))
            hi = lo + k
        else:  # PATH(m, D[n]) = PATH(m - k, D[k:n]) : MTH(D[0:k])
            top_down.append(_read(node, k.bit_length() - 1, lo // k))
            lo += k
    top_down.reverse()
    return top_down


def consistency_proof(old_size: int, new_size: int, node: NodeReader) -> list[bytes]:
    """PROOF(old_size, D[new_size]) = SUBPROOF(m, D[n], true) (RFC 6962 section 2.1.2).

    Requires 0 < old_size <= new_size; equal sizes give the empty proof."""
    _check_size(old_size, "old_size")
    _check_size(new_size, "new_size")
    if not 0 < old_size <= new_size:
        raise ValueError(f"no consistency proof from size {old_size} to size {new_size}")
    lo, hi, m = 0, new_size, old_size
    complete = True  # the b flag of SUBPROOF: still on the left border of the old tree
    top_down: list[bytes] = []
    while True:
        n = hi - lo
        if m == n:
            # SUBPROOF(m, D[m], true) = {}; SUBPROOF(m, D[m], false) = {MTH(D[m])}.
            # Reached only after a left step, so D[lo:hi] is perfect: one read.
            if not complete:
                top_down.append(range_hash(lo, hi, node))
            break
        k = _split(n)
        if m <= k:  # SUBPROOF(m, D[0:k], b) : MTH(D[k:n])
            top_down.append(range_hash(lo + k, hi, node))
            hi = lo + k
        else:  # SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k])
            top_down.append(_read(node, k.bit_length() - 1, lo // k))
            lo += k
            m -= k
            complete = False
    top_down.reverse()
    return top_down


# --------------------------------------------------------------------------------------------
# Proof verification (RFC 9162 sections 2.1.3.2 and 2.1.4.2)


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Verify an inclusion proof (RFC 9162 section 2.1.3.2); raise ProofError unless it holds."""
    _proof_size(index, "index")
    _proof_size(size, "size")
    if index >= size:
        raise ProofError(f"leaf index {index} is not below tree size {size}")
    _proof_hash(leaf, "leaf hash")
    _proof_hash(root, "root hash")
    path = _proof_hashes(proof)

    fn, sn = index, size - 1
    r = leaf
    for p in path:
        if sn == 0:
            raise ProofError("inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = _hash_children(p, r)
            while not fn & 1 and fn != 0:  # then, if LSB(fn) is not set, shift until it is
                fn >>= 1
                sn >>= 1
        else:
            r = _hash_children(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is too short")
    if r != root:
        raise ProofError("inclusion proof does not lead to the root hash")


def verify_consistency(
    old_size: int,
    new_size: int,
    old_root: bytes,
    new_root: bytes,
    proof: Sequence[bytes],
) -> None:
    """Verify a consistency proof (RFC 9162 section 2.1.4.2); raise ProofError unless it holds.

    Rules beyond the RFC, as in transparency-dev/merkle ``proof.VerifyConsistency``:

    * ``old_size == new_size``: the proof must be empty and the roots equal (and, for size 0,
      both equal to :data:`EMPTY_ROOT`);
    * ``0 == old_size < new_size`` is rejected: every tree extends the empty tree, so such a
      "proof" proves nothing, and accepting it would let a caller believe it had checked a
      history it never saw. A client with no earlier checkpoint must trust the first one
      explicitly instead of calling this function.
    """
    _proof_size(old_size, "old_size")
    _proof_size(new_size, "new_size")
    _proof_hash(old_root, "old root hash")
    _proof_hash(new_root, "new root hash")
    path = _proof_hashes(proof)
    if new_size < old_size:
        raise ProofError(f"new size {new_size} is smaller than old size {old_size}")
    if old_size == new_size:
        if path:
            raise ProofError("consistency proof between equal sizes must be empty")
        if old_root != new_root:
            raise ProofError("equal tree sizes with different root hashes")
        if old_size == 0 and old_root != EMPTY_ROOT:
            raise ProofError("the root of the empty tree must be SHA-256()")
        return
    if old_size == 0:
        raise ProofError("a consistency proof from the empty tree is meaningless")
    if not path:
        raise ProofError("consistency proof is empty")
    fr, sr = _consistency_roots(old_size, new_size, old_root, path)
    if fr != old_root:
        raise ProofError("consistency proof does not lead to the old root hash")
    if sr != new_root:
        raise ProofError("consistency proof does not lead to the new root hash")


def _consistency_roots(
    first: int, second: int, first_hash: bytes, path: list[bytes]
) -> tuple[bytes, bytes]:
    """Steps 2 to 6 of RFC 9162 section 2.1.4.2 for 0 < first < second and a non-empty path:
    the (old, new) roots the path leads to. Raises ProofError if its length is wrong."""
    if first & (first - 1) == 0:  # 2. first is an exact power of 2: prepend first_hash
        path = [first_hash, *path]
    fn, sn = first - 1, second - 1  # 3.
    while fn & 1:  # 4.
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]  # 5.
    for c in path[1:]:  # 6.
        if sn == 0:
            raise ProofError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = _hash_children(c, fr)
            sr = _hash_children(c, sr)
            while not fn & 1 and fn != 0:  # then, if LSB(fn) is not set, shift until it is
                fn >>= 1
                sn >>= 1
        else:
            sr = _hash_children(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:  # 7. (the root comparisons are the caller's)
        raise ProofError("consistency proof is too short")
    return fr, sr


# --------------------------------------------------------------------------------------------
# Argument checks


def _check_size(value: object, what: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} must be an int")
    if not 0 <= value <= MAX_TREE_SIZE:
        raise ValueError(f"{what} {value} is outside [0, 2**64 - 1]")


def _check_hash(value: object, what: str) -> None:
    if not isinstance(value, bytes):
        raise TypeError(f"{what} must be bytes")
    if len(value) != HASH_SIZE:
        raise ValueError(f"{what} is {len(value)} bytes, not {HASH_SIZE}")


def _proof_size(value: object, what: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_TREE_SIZE:
        raise ProofError(f"{what} is not an integer in [0, 2**64 - 1]: {value!r}")


def _proof_hash(value: object, what: str) -> None:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise ProofError(f"{what} is not a {HASH_SIZE}-byte hash")


def _proof_hashes(proof: Sequence[object]) -> list[bytes]:
    if isinstance(proof, bytes | bytearray | str):
        raise ProofError("a proof is a sequence of hashes, not one byte string")
    if len(proof) > _MAX_PROOF_LEN:
        raise ProofError(f"proof has {len(proof)} hashes, more than any tree needs")
    path: list[bytes] = []
    for i, p in enumerate(proof):
        if not isinstance(p, bytes) or len(p) != HASH_SIZE:
            raise ProofError(f"proof[{i}] is not a {HASH_SIZE}-byte hash")
        path.append(p)
    return path
