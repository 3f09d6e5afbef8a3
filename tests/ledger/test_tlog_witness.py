"""Tests of ledger._tlog_witness: the add-checkpoint body and a witness's decision (C2SP
tlog-witness), over real trees."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger import (
    EMPTY_ROOT,
    MAX_PROOF_LINES,
    AddCheckpoint,
    Checkpoint,
    Frontier,
    Signer,
    WitnessRefusal,
    consistency_proof,
    decide,
    leaf_hash,
    origin_hash,
    root_at,
    sign_checkpoint,
)

ORIGIN = "sinergi.test/ledger"
LOG = Signer(ORIGIN, Ed25519PrivateKey.generate())
OTHER = Signer(ORIGIN, Ed25519PrivateKey.generate())  # same name, another key

SPEC_BODY = (
    "old 20852014\n"
    "PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=\n"
    "jrJZDmY8Y7SyJE0MWLpLozkIVMSMZcD5kvuKxPC3swk=\n"
    "5+pKlUdi2LeF/BcMHBn+Ku6yhPGNCswZZD1X/6QgPd8=\n"
    "/6WVhPs2CwSsb5rYBH5cjHV/wSmA79abXAwhXw3Kj/0=\n"
    "\n"
    "example.com/behind-the-sofa\n"
    "20852163\n"
    "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    "\n"
    "\u2014 example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/"
    "Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
    "\u2014 example.com/behind-the-sofa opLqBQsREYCgu6xQkYQwJr9fo45a62DN9EdmHXnZdXNqlcVGlCum2Wks+"
    "49/V6267UEjw6QUXTS5Rovnzv++qbSzm9Q=\n"
).encode()


class Tree:
    """A real RFC 6962 tree of ``size`` leaves, kept node by node."""

    def __init__(self, size: int, salt: bytes = b"") -> None:
        self.nodes: dict[tuple[int, int], bytes] = {}
        frontier = Frontier()
        for i in range(size):
            for level, index, h in frontier.append(leaf_hash(salt + b"entry %d" % i)):
                self.nodes[level, index] = h

    def node(self, level: int, index: int) -> bytes:
        return self.nodes[level, index]

    def root(self, size: int) -> bytes:
        return root_at(size, self.node)

    def proof(self, old: int, new: int) -> tuple[bytes, ...]:
        return tuple(consistency_proof(old, new, self.node))

    def note(self, size: int, signer: Signer = LOG) -> bytes:
        return sign_checkpoint(self.checkpoint(size), [signer])

    def checkpoint(self, size: int) -> Checkpoint:
        return Checkpoint(ORIGIN, size, self.root(size))


TREE = Tree(40)
FORK = Tree(40, salt=b"fork ")


def request(old: int, size: int, tree: Tree = TREE, proof: tuple[bytes, ...] | None = None):
    if proof is None:
        proof = tree.proof(old, size) if old else ()
    return AddCheckpoint(old, proof, tree.note(size))


def refusal(latest: Checkpoint | None, req: AddCheckpoint) -> WitnessRefusal:
    with pytest.raises(WitnessRefusal) as caught:
        decide(latest, req, [LOG.verifier()])
    return caught.value


def test_encode_parse_round_trip() -> None:
    req = request(13, 29)
    assert len(req.proof) > 1
    body = req.encode()
    assert body.startswith(b"old 13\n" + base64.b64encode(req.proof[0]) + b"\n")
    assert AddCheckpoint.parse(body) == req
    first = AddCheckpoint(0, (), TREE.note(1))
    assert first.encode() == b"old 0\n\n" + TREE.note(1)
    assert AddCheckpoint.parse(first.encode()) == first
    assert first.origin() == ORIGIN


def test_the_spec_example_body_parses() -> None:
    req = AddCheckpoint.parse(SPEC_BODY)
    assert req.old_size == 20852014
    assert len(req.proof) == 4
    assert all(len(node) == 32 for node in req.proof)
    assert req.note.startswith(b"example.com/behind-the-sofa\n20852163\n")
    assert req.origin() == "example.com/behind-the-sofa"
    assert req.encode() == SPEC_BODY


def test_origin_hash_is_lowercase_hex_sha256() -> None:
    assert origin_hash("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert len(origin_hash(ORIGIN)) == 64


NODE = base64.b64encode(bytes(32))
MALFORMED = {
    "no old line": b"\n" + TREE.note(1),
    "old without space": b"old13\n\n" + TREE.note(1),
    "leading zero": b"old 013\n\n" + TREE.note(1),
    "a sign": b"old +13\n\n" + TREE.note(1),
    "above 2**64 - 1": b"old 18446744073709551616\n\n" + TREE.note(1),
    "64 proof lines": b"old 1\n" + (NODE + b"\n") * 64 + b"\n" + TREE.note(2),
    "non-canonical base64": b"old 1\n" + NODE[:-2] + b"B=\n\n" + TREE.note(2),
    "not base64": b"old 1\n" + b"*" * 44 + b"\n\n" + TREE.note(2),
    "a 31-byte hash": b"old 1\n" + base64.b64encode(bytes(31)) + b"\n\n" + TREE.note(2),
    "a 33-byte hash": b"old 1\n" + base64.b64encode(bytes(33)) + b"\n\n" + TREE.note(2),
    "no empty line": b"old 1\n" + NODE + b"\n",
    "nothing after the old line": b"old 1\n",
    "CRLF": b"old 1\r\n\r\n" + TREE.note(2),
}


@pytest.mark.parametrize("what", MALFORMED)
def test_malformed_bodies_are_400(what: str) -> None:
    with pytest.raises(WitnessRefusal) as caught:
        AddCheckpoint.parse(MALFORMED[what])
    assert caught.value.status == 400


def test_63_proof_lines_are_the_most() -> None:
    body = b"old 1\n" + (NODE + b"\n") * MAX_PROOF_LINES + b"\n" + TREE.note(2)
    assert len(AddCheckpoint.parse(body).proof) == 63


@pytest.mark.parametrize("note", [b"", b"just text\n", b"sinergi.test/ledger\n1\nAA==\n\n"])
def test_a_body_without_a_checkpoint_has_no_origin(note: bytes) -> None:
    req = AddCheckpoint.parse(b"old 0\n\n" + note)
    with pytest.raises(WitnessRefusal) as caught:
        req.origin()
    assert caught.value.status == 400


def test_first_checkpoint_from_old_zero() -> None:
    assert decide(None, request(0, 5), [LOG.verifier()]) == TREE.checkpoint(5)
    assert decide(None, request(0, 0), [LOG.verifier()]) == TREE.checkpoint(0)
    with_proof = AddCheckpoint(0, TREE.proof(1, 5), TREE.note(5))
    assert refusal(None, with_proof).status == 422
    # A recorded empty tree is the same as none.
    assert decide(TREE.checkpoint(0), request(0, 5), [LOG.verifier()]) == TREE.checkpoint(5)
    assert refusal(TREE.checkpoint(0), with_proof).status == 422


def test_403_for_an_unknown_key_or_a_bad_known_signature() -> None:
    assert refusal(None, AddCheckpoint(0, (), TREE.note(5, OTHER))).status == 403
    text, line = TREE.note(5).split(b"\n\n")
    name, b64 = line.decode().removesuffix("\n").rsplit(" ", 1)
    raw = bytearray(base64.b64decode(b64))
    raw[-1] ^= 1
    bad = text + b"\n\n" + f"{name} {base64.b64encode(bytes(raw)).decode()}\n".encode()
    assert refusal(None, AddCheckpoint(0, (), bad)).status == 403
    both = TREE.note(5) + sign_checkpoint(FORK.checkpoint(5), [LOG]).split(b"\n\n")[1]
    assert refusal(None, AddCheckpoint(0, (), both)).status == 403  # the second line lies
    assert refusal(None, AddCheckpoint(0, (), TREE.checkpoint(5).body())).status == 403


def test_400_when_old_is_larger_than_the_checkpoint() -> None:
    refused = refusal(TREE.checkpoint(10), AddCheckpoint(10, (), TREE.note(7)))
    assert refused.status == 400
    assert "old size 10 is larger than the checkpoint's 7" in str(refused)


def test_409_with_the_latest_size_when_old_differs() -> None:
    for old in (0, 5, 11):
        refused = refusal(TREE.checkpoint(10), request(old, 20))
        assert (refused.status, refused.size) == (409, 10)
    refused = refusal(None, request(3, 20))
    assert (refused.status, refused.size) == (409, 0)


def test_422_for_size_0_with_another_root() -> None:
    note = sign_checkpoint(Checkpoint(ORIGIN, 0, bytes(32)), [LOG])
    assert refusal(None, AddCheckpoint(0, (), note)).status == 422
    assert TREE.root(0) == EMPTY_ROOT


def test_422_for_an_inconsistent_proof() -> None:
    latest = TREE.checkpoint(10)
    assert refusal(latest, request(10, 20, FORK, proof=FORK.proof(10, 20))).status == 422
    assert refusal(latest, request(10, 20, proof=TREE.proof(11, 20))).status == 422
    assert refusal(latest, request(10, 20, proof=())).status == 422
    assert refusal(latest, request(10, 20, proof=TREE.proof(10, 20)[:-1])).status == 422


def test_422_for_the_same_size_with_another_root_a_fork() -> None:
    refused = refusal(TREE.checkpoint(10), request(10, 10, FORK, proof=()))
    assert refused.status == 422
    assert "forked" in str(refused)


def test_the_same_checkpoint_again_is_cosigned_again() -> None:
    assert decide(TREE.checkpoint(10), request(10, 10), [LOG.verifier()]) == TREE.checkpoint(10)
    with_proof = AddCheckpoint(10, TREE.proof(9, 10), TREE.note(10))
    assert refusal(TREE.checkpoint(10), with_proof).status == 422


@pytest.mark.parametrize(("old", "new"), [(1, 2), (10, 20), (16, 17), (7, 40), (39, 40)])
def test_a_consistent_growth_is_accepted(old: int, new: int) -> None:
    cosigned = decide(TREE.checkpoint(old), request(old, new), [LOG.verifier()])
    assert cosigned == TREE.checkpoint(new)


def test_extension_lines_are_kept() -> None:
    extended = Checkpoint(ORIGIN, 5, TREE.root(5), ("extension: x",))
    note = sign_checkpoint(extended, [LOG])
    assert decide(None, AddCheckpoint(0, (), note), [LOG.verifier()]) == extended
