"""Tests of ledger._merkle: RFC 6962 hashing and proofs, RFC 9162 verification."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger._errors import LedgerError, ProofError
from ledger._merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    Frontier,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    range_hash,
    root_at,
    root_of,
    verify_consistency,
    verify_inclusion,
)
from tests.ledger.doc_blocks import DOC, check_doc_block, generated_block

VECTORS = Path(__file__).parent / "vectors"

# Conformance vectors transcribed from github.com/transparency-dev/merkle (testonly/constants.go
# and testdata/), each with the commit it was read at: see vectors/transparency-dev-merkle.json.
TD = json.loads((VECTORS / "transparency-dev-merkle.json").read_text())
TD_LEAVES = [bytes.fromhex(x) for x in TD["constants"]["leaf_inputs_hex"]]
TD_ROOTS = [bytes.fromhex(x) for x in TD["constants"]["root_hashes_hex"]]
TD_NODES = [[bytes.fromhex(x) for x in level] for level in TD["constants"]["node_hashes_hex"]]


def b64(s: str) -> bytes:
    return base64.b64decode(s)


class Tree:
    """A stored tree: leaf hashes, and the node table filled from Frontier.append."""

    def __init__(self, leaves: list[bytes]) -> None:
        self.leaves = leaves
        self.frontier = Frontier()
        self.nodes: dict[tuple[int, int], bytes] = {}
        for h in leaves:
            for level, index, value in self.frontier.append(h):
                assert (level, index) not in self.nodes, "a node was completed twice"
                self.nodes[(level, index)] = value

    def node(self, level: int, index: int) -> bytes:
        return self.nodes[(level, index)]


def tree_of(n: int, seed: bytes = b"") -> Tree:
    return Tree([leaf_hash(seed + i.to_bytes(4, "big")) for i in range(n)])


# ---------------------------------------------------------------------------------------------
# Hashing


def test_hash_definitions() -> None:
    assert HASH_SIZE == 32
    assert hashlib.sha256(b"").digest() == EMPTY_ROOT
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert leaf_hash(b"abc") == hashlib.sha256(b"\x00abc").digest()
    left, right = leaf_hash(b"l"), leaf_hash(b"r")
    assert node_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest()
    # Domain separation: a leaf is never mistaken for a node over the same bytes.
    assert leaf_hash(left + right) != node_hash(left, right)
    assert root_of([]) == EMPTY_ROOT
    assert root_of([left]) == left


@pytest.mark.parametrize("bad", [b"", b"\x00" * 31, b"\x00" * 33])
def test_node_hash_rejects_wrong_lengths(bad: bytes) -> None:
    with pytest.raises(ValueError):
        node_hash(bad, EMPTY_ROOT)
    with pytest.raises(ValueError):
        node_hash(EMPTY_ROOT, bad)
    with pytest.raises(ValueError):
        root_of([EMPTY_ROOT, bad])


# ---------------------------------------------------------------------------------------------
# RFC 6962 section 2.1.3, the 7-leaf worked examples


def rfc6962_example() -> tuple[Tree, dict[str, bytes]]:
    """The tree of RFC 6962 section 2.1.3 with its nodes named a..l as in the RFC figure:

                hash
               /    \\
              k      l
             / \\    / \\
            g   h  i   j
           / \\ / \\ / \\  |
           a b c d e f  d6
    """
    t = Tree([leaf_hash(b"d%d" % i) for i in range(7)])
    n: dict[str, bytes] = dict(zip("abcdef", t.leaves[:6], strict=True))
    n["j"] = t.leaves[6]
    n["g"] = node_hash(n["a"], n["b"])
    n["h"] = node_hash(n["c"], n["d"])
    n["i"] = node_hash(n["e"], n["f"])
    n["k"] = node_hash(n["g"], n["h"])
    n["l"] = node_hash(n["i"], n["j"])
    n["root"] = node_hash(n["k"], n["l"])
    return t, n


def names(proof: list[bytes], named: dict[str, bytes]) -> list[str]:
    by_hash = {v: k for k, v in named.items()}
    return [by_hash[p] for p in proof]


def test_rfc6962_audit_paths() -> None:
    t, n = rfc6962_example()
    assert t.frontier.root() == root_of(t.leaves) == n["root"]
    for index, want in [(0, "bhl"), (3, "cgl"), (4, "fjk"), (6, "ik")]:
        proof = inclusion_proof(index, 7, t.node)
        assert names(proof, n) == list(want)
        verify_inclusion(index, 7, t.leaves[index], proof, n["root"])


def test_rfc6962_consistency_proofs() -> None:
    t, n = rfc6962_example()
    for old, want in [(3, "cdgl"), (4, "l"), (6, "ijk")]:
        # Nodes c and d are named over the 7-leaf tree; the 3- and 6-leaf trees share them.
        proof = consistency_proof(old, 7, t.node)
        assert names(proof, n) == list(want)
        verify_consistency(old, 7, root_of(t.leaves[:old]), n["root"], proof)


# ---------------------------------------------------------------------------------------------
# transparency-dev/merkle conformance vectors


def test_known_roots_and_nodes() -> None:
    t = Tree([leaf_hash(x) for x in TD_LEAVES])
    # Node numbering is the same as constants.go NodeHashes: [level][index].
    want_nodes = {
        (level, index): h for level, row in enumerate(TD_NODES) for index, h in enumerate(row)
    }
    assert t.nodes == want_nodes
    assert root_of([]) == TD_ROOTS[0] == EMPTY_ROOT
    for size in range(1, 9):
        assert root_of(t.leaves[:size]) == TD_ROOTS[size], size
        assert root_at(size, t.node) == TD_ROOTS[size], size
        f = Frontier()
        for h in t.leaves[:size]:
            f.append(h)
        assert f.root() == TD_ROOTS[size]


@pytest.mark.parametrize("item", TD["inclusion"], ids=lambda item: item["file"])
def test_inclusion_vectors(item: dict[str, Any]) -> None:
    v = item["vector"]
    proof = [b64(p) for p in v["proof"] or []]
    args = (v["leafIdx"], v["treeSize"], b64(v["leafHash"]), proof, b64(v["root"]))
    if v["wantErr"]:
        with pytest.raises(ProofError):
            verify_inclusion(*args)
        return
    verify_inclusion(*args)
    # Our generated proof for the same tree is byte-identical.
    t = Tree([leaf_hash(x) for x in TD_LEAVES])
    assert inclusion_proof(v["leafIdx"], v["treeSize"], t.node) == proof
    assert t.leaves[v["leafIdx"]] == b64(v["leafHash"])


@pytest.mark.parametrize("item", TD["consistency"], ids=lambda item: item["file"])
def test_consistency_vectors(item: dict[str, Any]) -> None:
    v = item["vector"]
    proof = [b64(p) for p in v["proof"] or []]
    args = (v["size1"], v["size2"], b64(v["root1"]), b64(v["root2"]), proof)
    if v["wantErr"]:
        with pytest.raises(ProofError):
            verify_consistency(*args)
        return
    verify_consistency(*args)
    t = Tree([leaf_hash(x) for x in TD_LEAVES])
    assert consistency_proof(v["size1"], v["size2"], t.node) == proof


def test_consistency_edge_cases() -> None:
    """transparency-dev/merkle proof/verify_test.go TestVerifyConsistency, with our rules."""
    r1, r2 = TD_ROOTS[1], TD_ROOTS[2]
    verify_consistency(1, 1, r1, r1, [])
    verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    with pytest.raises(ProofError):  # equal sizes, different roots
        verify_consistency(1, 1, r1, r2, [])
    with pytest.raises(ProofError):  # equal sizes, non-empty proof
        verify_consistency(1, 1, r1, r1, [EMPTY_ROOT])
    with pytest.raises(ProofError):  # empty tree whose root is not SHA-256()
        verify_consistency(0, 0, r1, r1, [])
    with pytest.raises(ProofError):  # from the empty tree: meaningless, rejected
        verify_consistency(0, 1, EMPTY_ROOT, r1, [])
    with pytest.raises(ProofError):  # time travel
        verify_consistency(2, 1, r2, r1, [])
    with pytest.raises(ProofError):  # empty proof
        verify_consistency(1, 2, r1, r2, [])


def test_inclusion_edge_cases() -> None:
    """transparency-dev/merkle proof/verify_test.go TestVerifyInclusion(SingleEntry)."""
    h = leaf_hash(b"data")
    verify_inclusion(0, 1, h, [], h)
    for index, size in [(0, 0), (1, 0), (1, 1), (2, 1)]:
        with pytest.raises(ProofError):
            verify_inclusion(index, size, h, [], h)
    with pytest.raises(ProofError):
        verify_inclusion(0, 1, h, [], EMPTY_ROOT)
    for bad in (b"", h[:31], h + b"\x00"):
        with pytest.raises(ProofError):
            verify_inclusion(0, 1, bad, [], h)
        with pytest.raises(ProofError):
            verify_inclusion(0, 1, h, [], bad)
        with pytest.raises(ProofError):
            verify_inclusion(0, 2, h, [bad], h)


@pytest.mark.parametrize(
    "args",
    [(-1, 1), (0, -1), (True, 2), (0, 2**64), (2**64, 2**64 - 1)],
)
def test_verifiers_reject_bad_sizes(args: tuple[int, int]) -> None:
    h = EMPTY_ROOT
    with pytest.raises(ProofError):
        verify_inclusion(args[0], args[1], h, [], h)
    with pytest.raises(ProofError):
        verify_consistency(args[0], args[1], h, h, [h])


def test_verifiers_reject_overlong_and_non_list_proofs() -> None:
    h = EMPTY_ROOT
    with pytest.raises(ProofError):
        verify_inclusion(0, 2**64 - 1, h, [h] * 1000, h)
    with pytest.raises(ProofError):
        verify_consistency(1, 2**64 - 1, h, h, [h] * 1000)
    with pytest.raises(ProofError):
        verify_inclusion(0, 2, h, h, h)  # type: ignore[arg-type]  # a bytes object is not a list of hashes
    with pytest.raises(ProofError):
        verify_consistency(1, 2, h, h, ["not bytes"])  # type: ignore[list-item]
    assert issubclass(ProofError, LedgerError)


# ---------------------------------------------------------------------------------------------
# Argument validation of the generating functions


def test_generation_rejects_bad_arguments() -> None:
    t = tree_of(8)
    for index, size in [(-1, 8), (8, 8), (0, 0), (0, -1)]:
        with pytest.raises(ValueError):
            inclusion_proof(index, size, t.node)
    for old, new in [(0, 8), (0, 0), (5, 4), (-1, 8), (1, 2**64)]:
        with pytest.raises(ValueError):
            consistency_proof(old, new, t.node)
    with pytest.raises(ValueError):
        range_hash(3, 8, t.node)  # not aligned: [3, 8) is not an RFC 6962 subtree
    with pytest.raises(ValueError):
        range_hash(5, 4, t.node)
    with pytest.raises(ValueError):
        root_at(-1, t.node)
    with pytest.raises(TypeError):
        root_at(1.0, t.node)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        inclusion_proof(0, 2, lambda level, index: b"short")
    assert range_hash(4, 4, t.node) == EMPTY_ROOT
    assert root_at(0, t.node) == EMPTY_ROOT


def test_frontier_validation_and_rebuild() -> None:
    t = tree_of(13)
    f = t.frontier
    assert f.size == 13
    assert len(f.hashes) == 3  # 13 = 8 + 4 + 1, largest first
    assert f.hashes == (t.node(3, 0), t.node(2, 2), t.node(0, 12))
    assert Frontier(13, f.hashes) == f
    assert Frontier.from_reader(13, t.node) == f
    assert Frontier(13, f.hashes).root() == root_of(t.leaves)
    assert Frontier().root() == EMPTY_ROOT
    with pytest.raises(ValueError):
        Frontier(13, f.hashes[:2])
    with pytest.raises(ValueError):
        Frontier(1, [b"\x00" * 31])
    with pytest.raises(ValueError):
        Frontier(-1, [])
    with pytest.raises(ValueError):
        f.append(b"\x00" * 33)
    # append reports the nodes it completes, leaf first.
    g = Frontier(7, Frontier.from_reader(7, t.node).hashes)
    done = g.append(t.leaves[7])
    assert done == [
        (0, 7, t.leaves[7]),
        (1, 3, t.node(1, 3)),
        (2, 1, t.node(2, 1)),
        (3, 0, t.node(3, 0)),
    ]
    assert g.hashes == (t.node(3, 0),)


# ---------------------------------------------------------------------------------------------
# Properties over random trees (hypothesis)


def split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def path_shape(m: int, n: int) -> list[str] | None:
    """Side of each sibling of PATH(m, D[n]) from the RFC 6962 recursion, leaf first."""
    if not 0 <= m < n:
        return None
    if n == 1:
        return []
    k = split(n)
    if m < k:
        return [*path_shape(m, k), "R"]  # type: ignore[misc]
    return [*path_shape(m - k, n - k), "L"]  # type: ignore[misc]


def subproof_shape(m: int, n: int, complete: bool = True) -> list[str]:
    """Structure of SUBPROOF(m, D[n], b) from the RFC 6962 recursion."""
    if m == n:
        return [] if complete else ["T"]
    k = split(n)
    if m <= k:
        return [*subproof_shape(m, k, complete), "R"]
    return [*subproof_shape(m - k, n - k, False), "L"]


def consistency_shape(m: int, n: int) -> list[str] | None:
    if not 0 < m < n:
        return None
    return subproof_shape(m, n)


def flip(h: bytes, bit: int) -> bytes:
    b = bytearray(h)
    b[bit // 8 % len(b)] ^= 1 << (bit % 8)
    return bytes(b)


def rejects(fn: Callable[..., None], *args: object) -> bool:
    try:
        fn(*args)
    except ProofError:
        return True
    return False


trees = st.integers(min_value=1, max_value=300).flatmap(
    lambda n: st.tuples(st.just(n), st.binary(max_size=4))
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees)
def test_frontier_and_stored_roots_match_reference(tree: tuple[int, bytes]) -> None:
    n, seed = tree
    t = tree_of(n, seed)
    assert t.frontier.root() == root_of(t.leaves)
    # Every perfect subtree, and nothing else, was reported by append, with the right hash.
    expected = {(level, index) for level in range(n.bit_length()) for index in range(n >> level)}
    assert set(t.nodes) == expected
    for (level, index), h in t.nodes.items():
        assert h == root_of(t.leaves[index << level : (index + 1) << level])
    for size in range(n + 1):
        assert root_at(size, t.node) == root_of(t.leaves[:size])
    assert Frontier.from_reader(n, t.node) == t.frontier


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_inclusion_proofs_verify_and_tampering_is_caught(data: st.DataObject) -> None:
    n = data.draw(st.integers(min_value=1, max_value=300), label="size")
    i = data.draw(st.integers(min_value=0, max_value=n - 1), label="index")
    bit = data.draw(st.integers(min_value=0, max_value=255), label="bit")
    t = tree_of(n, data.draw(st.binary(max_size=4), label="seed"))
    root, leaf = root_of(t.leaves), t.leaves[i]
    proof = inclusion_proof(i, n, t.node)
    assert proof == reference_path(i, t.leaves)
    verify_inclusion(i, n, leaf, proof, root)

    # Wrong index or size: the verifier's computation depends only on the shape of the path,
    # so it must accept exactly when the RFC 6962 recursion gives the same shape (e.g. index 0
    # in trees of 6 and 7 leaves) and reject otherwise.
    shape = path_shape(i, n)
    for i2, n2 in [
        (i - 1, n),
        (i + 1, n),
        (i ^ 2, n),
        (i, n - 1),
        (i, n + 1),
        (i, n // 2),
        (i, n * 2),
    ]:
        if i2 < 0 or n2 < 0:
            assert rejects(verify_inclusion, i2, n2, leaf, proof, root)
            continue
        same = path_shape(i2, n2) == shape
        assert rejects(verify_inclusion, i2, n2, leaf, proof, root) != same

    bad_proofs = [[*proof[:j], flip(p, bit), *proof[j + 1 :]] for j, p in enumerate(proof)]
    bad_proofs += [[*proof, leaf_hash(b"extra")], [leaf_hash(b"extra"), *proof], [*proof, root]]
    if proof:
        bad_proofs += [proof[:-1], proof[1:]]
    for bad in bad_proofs:
        assert rejects(verify_inclusion, i, n, leaf, bad, root)
    assert rejects(verify_inclusion, i, n, flip(leaf, bit), proof, root)
    assert rejects(verify_inclusion, i, n, leaf, proof, flip(root, bit))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_consistency_proofs_verify_and_tampering_is_caught(data: st.DataObject) -> None:
    n = data.draw(st.integers(min_value=1, max_value=300), label="new size")
    m = data.draw(st.integers(min_value=1, max_value=n), label="old size")
    bit = data.draw(st.integers(min_value=0, max_value=255), label="bit")
    t = tree_of(n, data.draw(st.binary(max_size=4), label="seed"))
    old_root, new_root = root_of(t.leaves[:m]), root_of(t.leaves)
    proof = consistency_proof(m, n, t.node)
    assert proof == reference_proof(m, t.leaves)
    assert len(proof) <= math.ceil(math.log2(n)) + 1
    verify_consistency(m, n, old_root, new_root, proof)
    if m == n:
        assert proof == []
        assert rejects(verify_consistency, m, n, old_root, new_root, [old_root])
        assert rejects(verify_consistency, m, n, old_root, flip(new_root, bit), [])
        return

    shape = consistency_shape(m, n)
    for m2, n2 in [
        (m - 1, n),
        (m + 1, n),
        (m ^ 2, n),
        (m, n - 1),
        (m, n + 1),
        (m, n // 2),
        (m, n * 2),
    ]:
        same = consistency_shape(m2, n2) == shape
        assert rejects(verify_consistency, m2, n2, old_root, new_root, proof) != same

    bad_proofs = [[*proof[:j], flip(p, bit), *proof[j + 1 :]] for j, p in enumerate(proof)]
    bad_proofs += [[*proof, leaf_hash(b"extra")], [leaf_hash(b"extra"), *proof]]
    bad_proofs += [[*proof, new_root], [proof[0], *proof], proof[:-1], proof[1:], []]
    for bad in bad_proofs:
        assert rejects(verify_consistency, m, n, old_root, new_root, bad)
    assert rejects(verify_consistency, m, n, new_root, old_root, proof)
    assert rejects(verify_consistency, m, n, flip(old_root, bit), new_root, proof)
    assert rejects(verify_consistency, m, n, old_root, flip(new_root, bit), proof)


def test_exhaustive_small_trees_wrong_index_and_size() -> None:
    """Every (index, size) and (old, new) up to 17 leaves, against every claim with other numbers
    up to 20: the verifiers accept exactly the claims whose RFC 6962 proof shape is the same."""
    t = tree_of(17)
    roots = [root_of(t.leaves[:n]) for n in range(18)]
    accepted_others = 0

    def inclusion_ok(i: int, n: int, leaf: bytes, proof: list[bytes], root: bytes) -> bool:
        return not rejects(verify_inclusion, i, n, leaf, proof, root)

    def consistency_ok(m: int, n: int, r1: bytes, r2: bytes, proof: list[bytes]) -> bool:
        return not rejects(verify_consistency, m, n, r1, r2, proof)

    for n in range(1, 18):
        for i in range(n):
            proof = inclusion_proof(i, n, t.node)
            for n2 in range(21):
                for i2 in range(n2 + 2):
                    ok = inclusion_ok(i2, n2, t.leaves[i], proof, roots[n])
                    assert ok == (path_shape(i2, n2) == path_shape(i, n)), (i, n, i2, n2)
                    accepted_others += ok and (i2, n2) != (i, n)
        for m in range(1, n):
            proof = consistency_proof(m, n, t.node)
            for n2 in range(21):
                for m2 in range(n2 + 2):
                    ok = consistency_ok(m2, n2, roots[m], roots[n], proof)
                    same = consistency_shape(m2, n2) == consistency_shape(m, n)
                    assert ok == same, (m, n, m2, n2)
                    accepted_others += ok and (m2, n2) != (m, n)
    assert accepted_others > 0  # such claims exist: it is the signed root that binds the size


def reference_path(m: int, leaves: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]) exactly as RFC 6962 section 2.1.1 writes it (recursion depth log n)."""
    n = len(leaves)
    if n == 1:
        return []
    k = split(n)
    if m < k:
        return [*reference_path(m, leaves[:k]), root_of(leaves[k:])]
    return [*reference_path(m - k, leaves[k:]), root_of(leaves[:k])]


def reference_proof(m: int, leaves: list[bytes], complete: bool = True) -> list[bytes]:
    """SUBPROOF(m, D[n], b) exactly as RFC 6962 section 2.1.2 writes it."""
    n = len(leaves)
    if m == n:
        return [] if complete else [root_of(leaves)]
    k = split(n)
    if m <= k:
        return [*reference_proof(m, leaves[:k], complete), root_of(leaves[k:])]
    return [*reference_proof(m - k, leaves[k:], False), root_of(leaves[:k])]


# ---------------------------------------------------------------------------------------------
# O(log n) node reads


class CountingReader:
    """A synthetic store of a huge tree: node(level, index) = SHA-256("level:index")."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.calls = 0

    def __call__(self, level: int, index: int) -> bytes:
        assert level >= 0
        assert (index + 1) << level <= self.size, "read past the stored tree"
        self.calls += 1
        return hashlib.sha256(f"{level}:{index}".encode()).digest()


@pytest.mark.parametrize("n", [1_000_000, 2**20, 2**20 + 1, 2**40 + 12345])
def test_proofs_read_log_n_nodes(n: int) -> None:
    bound = 2 * math.ceil(math.log2(n)) + 2
    indices = {0, 1, n // 2, n - 2, n - 1, 3 * n // 4 + 1, 2**19 - 1}
    indices |= {(i * 7919 * 104729) % n for i in range(200)}
    for i in sorted(x for x in indices if 0 <= x < n):
        r = CountingReader(n)
        proof = inclusion_proof(i, n, r)
        assert r.calls <= bound, (i, r.calls)
        assert len(proof) <= math.ceil(math.log2(n))
    for m in sorted({1, 2, 3, n // 3, n // 2, n - 1, n, 999_999 % n + 1, 2**19 + 7}):
        r = CountingReader(n)
        proof = consistency_proof(m, n, r)
        assert r.calls <= bound, (m, r.calls)
        assert len(proof) <= math.ceil(math.log2(n)) + 1
        r = CountingReader(n)
        root_at(m, r)
        assert r.calls == bin(m).count("1")


def test_large_tree_proofs_verify() -> None:
    """Proofs over a 100,003-leaf store (a consistent lazy node table) verify, with O(log n)
    reads each."""
    n = 100_003

    @functools.cache
    def node(level: int, index: int) -> bytes:
        if level == 0:
            return leaf_hash(index.to_bytes(8, "big"))
        return node_hash(node(level - 1, 2 * index), node(level - 1, 2 * index + 1))

    calls = 0

    def reader(level: int, index: int) -> bytes:
        nonlocal calls
        calls += 1
        assert (index + 1) << level <= n
        return node(level, index)

    bound = 2 * math.ceil(math.log2(n)) + 2
    root = root_at(n, reader)
    for i in (0, 1, 65_535, 65_536, 99_999, n - 1):
        calls = 0
        proof = inclusion_proof(i, n, reader)
        assert calls <= bound
        verify_inclusion(i, n, node(0, i), proof, root)
    for m in (1, 3, 65_536, 65_537, 99_999, n):
        calls = 0
        proof = consistency_proof(m, n, reader)
        assert calls <= bound
        verify_consistency(m, n, root_at(m, reader), root, proof)


# ---------------------------------------------------------------------------------------------
# docs/ledger-format.md section 2 is generated from these numbers and must not drift

DOC_INCLUSION = [(5, 8), (6, 7)]
DOC_CONSISTENCY = [(6, 8), (3, 7)]


def render_merkle_vectors() -> str:
    t = Tree([leaf_hash(x) for x in TD_LEAVES])
    out = ["Leaves (the inputs are those of transparency-dev/merkle `testonly.LeafInputs`):", ""]
    out += ["| i | entry bytes (hex) | leaf hash = node(0, i) |", "|---|---|---|"]
    for i, x in enumerate(TD_LEAVES):
        out.append(f"| {i} | `{x.hex() or '(empty)'}` | `{t.leaves[i].hex()}` |")
    out += ["", "Interior nodes of the 8-leaf tree:", ""]
    out += ["| node(level, index) | leaves | hash |", "|---|---|---|"]
    for level in range(1, 4):
        for index in range(8 >> level):
            lo, hi = index << level, (index + 1) << level
            out.append(
                f"| node({level}, {index}) | [{lo}, {hi}) | `{t.node(level, index).hex()}` |"
            )
    out += ["", "Roots MTH(D[n]) of the first n leaves:", ""]
    out += ["| n | root |", "|---|---|"]
    for n in range(9):
        out.append(f"| {n} | `{root_at(n, t.node).hex()}` |")
    for i, n in DOC_INCLUSION:
        out += [
            "",
            f"Inclusion proof of leaf {i} in the tree of size {n} (the path is listed "
            "from the leaf up):",
            "",
            "```",
        ]
        out.append(f"index     {i}")
        out.append(f"size      {n}")
        out.append(f"leaf      {t.leaves[i].hex()}")
        out += [f"proof[{j}]  {p.hex()}" for j, p in enumerate(inclusion_proof(i, n, t.node))]
        out.append(f"root      {root_at(n, t.node).hex()}")
        out.append("```")
    for m, n in DOC_CONSISTENCY:
        out += ["", f"Consistency proof from size {m} to size {n} (from the bottom up):", ""]
        out.append("```")
        out.append(f"old size  {m}")
        out.append(f"new size  {n}")
        out.append(f"old root  {root_at(m, t.node).hex()}")
        out.append(f"new root  {root_at(n, t.node).hex()}")
        out += [f"proof[{j}]  {p.hex()}" for j, p in enumerate(consistency_proof(m, n, t.node))]
        out.append("```")
    return "\n".join(out)


def test_doc_merkle_vectors_match_code() -> None:
    check_doc_block("merkle-vectors", render_merkle_vectors())


def test_doc_vectors_verify_from_the_markdown() -> None:
    """Parse the hex back out of the document and verify it, as an outside verifier would."""
    doc = DOC.read_text(encoding="utf-8")
    start, stop = generated_block(doc, "merkle-vectors")
    block = doc[start:stop]
    rows = re.findall(r"^\| (\d) \| `([0-9a-f]*|\(empty\))` \| `([0-9a-f]{64})` \|$", block, re.M)
    assert len(rows) == 8
    leaves = []
    for _, data, h in rows:
        raw = b"" if data == "(empty)" else bytes.fromhex(data)
        assert hashlib.sha256(b"\x00" + raw).hexdigest() == h
        leaves.append(bytes.fromhex(h))
    roots = dict(re.findall(r"^\| (\d) \| `([0-9a-f]{64})` \|$", block, re.M))
    assert [roots[str(n)] for n in range(9)] == [x.hex() for x in TD_ROOTS]
    fences = re.findall(r"```\n(.*?)```", block, re.S)
    assert len(fences) == len(DOC_INCLUSION) + len(DOC_CONSISTENCY)
    for fence in fences:
        proof = [
            bytes.fromhex(line.split()[1])
            for line in fence.splitlines()
            if line.startswith("proof[")
        ]
        if fence.startswith("index "):
            i, n = int(field(fence, "index")), int(field(fence, "size"))
            assert bytes.fromhex(field(fence, "leaf")) == leaves[i]
            verify_inclusion(i, n, leaves[i], proof, bytes.fromhex(field(fence, "root")))
        else:
            m, n = int(field(fence, "old size")), int(field(fence, "new size"))
            old_root, new_root = field(fence, "old root"), field(fence, "new root")
            assert (old_root, new_root) == (roots[str(m)], roots[str(n)])
            verify_consistency(m, n, bytes.fromhex(old_root), bytes.fromhex(new_root), proof)


def field(fence: str, key: str) -> str:
    for line in fence.splitlines():
        if line.startswith(key + " "):
            return line[len(key) :].strip()
    raise KeyError(key)
