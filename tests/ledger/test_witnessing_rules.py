"""The witnessing rules a client applies with a witness policy (ledger/_witnessing.py): a
receipt's cosigned checkpoint and its proof, which checkpoint is kept, and one ledger per key."""

from __future__ import annotations

import base64
import re

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger import (
    OK,
    Action,
    Actor,
    Checkpoint,
    CosignatureVerifier,
    Cosigner,
    Entry,
    QuorumError,
    Receipt,
    Signer,
    VerificationError,
    Verifier,
    Witnessing,
    WitnessPolicy,
    check_cosigned,
    consistency_proof,
    cosignatures,
    cosigned_message,
    inclusion_proof,
    keeps,
    leaf_hash,
    open_checkpoint,
    pinned_elsewhere,
    root_of,
    sign_checkpoint,
)
from tests.ledger.doc_blocks import DOC, check_doc_block, generated_block
from tests.ledger.test_note import doc_example

KEY = "sinergi.test/ledger"
ORIGIN = f"{KEY}/20261207-3f9a01c2"
POLICE = Actor("spiffe://sinergi.dev/agency/police/system/gateway", "ab" * 32)
TIME = "2026-12-07T06:00:00.000000Z"
ENTRIES = [
    Entry(i, TIME, Action.PUBLISH, POLICE, (f"alert:{i}",), "", OK, {}, "00" * 32).encode()
    for i in range(1, 17)
]
LEAVES = [leaf_hash(entry) for entry in ENTRIES]
NOW = 1_800_000_000


def node(level: int, index: int) -> bytes:
    return root_of(LEAVES[index << level : (index + 1) << level])


def checkpoint(size: int, origin: str = ORIGIN) -> Checkpoint:
    return Checkpoint(origin, size, root_of(LEAVES[:size]))


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer(KEY, Ed25519PrivateKey.generate())


@pytest.fixture(scope="module")
def cosigners() -> list[Cosigner]:
    return [Cosigner(f"w.test/{n}", Ed25519PrivateKey.generate()) for n in ("ia", "police")]


@pytest.fixture(scope="module")
def policy(cosigners: list[Cosigner]) -> WitnessPolicy:
    ia, police = cosigners
    return WitnessPolicy.parse(
        f"witness ia {ia.verifier_key()}\nwitness police {police.verifier_key()}\n"
        "group both all ia police\nquorum both\n".encode()
    )


def cosigned(signer: Signer, cp: Checkpoint, by: list[Cosigner]) -> bytes:
    return sign_checkpoint(cp, [signer]) + b"".join(c.cosign(cp.body(), NOW) for c in by)


def test_a_cosigned_checkpoint_older_than_the_receipt_is_witnessed(
    signer: Signer, cosigners: list[Cosigner], policy: WitnessPolicy
) -> None:
    note = cosigned(signer, checkpoint(5), list(reversed(cosigners)))
    found = check_cosigned(
        checkpoint(13), note, consistency_proof(5, 13, node), policy, [signer.verifier()]
    )
    assert found == Witnessing("2 of (ia, police)", checkpoint(5), note, ("ia", "police"))
    assert found.describe() == (
        "witnessed: checkpoint of size 5 cosigned by ia, police (quorum: 2 of (ia, police))"
    )
    # Newer than the receipt (another replica's): the proof runs the other way, smaller first.
    newer = cosigned(signer, checkpoint(13), cosigners)
    later = check_cosigned(
        checkpoint(5), newer, consistency_proof(5, 13, node), policy, [signer.verifier()]
    )
    assert later.cosigned == checkpoint(13)


def test_no_cosigned_checkpoint_is_not_yet_witnessed(signer: Signer, policy: WitnessPolicy) -> None:
    found = check_cosigned(checkpoint(5), b"", (), policy, [signer.verifier()])
    assert not found.witnessed
    assert found.describe() == "not yet witnessed: no checkpoint has its quorum yet"


def test_the_refusals_name_what_is_wrong(
    signer: Signer, cosigners: list[Cosigner], policy: WitnessPolicy
) -> None:
    verifiers = [signer.verifier()]
    ia, _police = cosigners
    with pytest.raises(QuorumError) as lacking:
        check_cosigned(checkpoint(8), cosigned(signer, checkpoint(8), [ia]), (), policy, verifiers)
    assert str(lacking.value) == (
        f"the receipt's cosigned checkpoint {ORIGIN} size 8 lacks its quorum: cosigned by ia; "
        "the policy needs 2 of (ia, police)"
    )
    both = cosigned(signer, checkpoint(5), cosigners)
    proof = consistency_proof(5, 13, node)
    broken = r"^the receipt's cosigned_proof does not connect the cosigned checkpoint of "
    with pytest.raises(VerificationError, match=broken + r"size 5 to the receipt's checkpoint "):
        check_cosigned(checkpoint(13), both, [*proof[:-1], LEAVES[0]], policy, verifiers)
    elsewhere = cosigned(signer, checkpoint(5, "other.test/ledger"), cosigners)
    with pytest.raises(VerificationError, match=r"is of other\.test/ledger, its checkpoint of"):
        check_cosigned(checkpoint(5), elsewhere, (), policy, verifiers)
    stranger = cosigned(Signer(KEY, Ed25519PrivateKey.generate()), checkpoint(5), cosigners)
    with pytest.raises(VerificationError, match="cosigned checkpoint does not verify"):
        check_cosigned(checkpoint(5), stranger, (), policy, verifiers)
    forged = both.replace(both.splitlines(keepends=True)[-1][-10:], b"AAAAAAAAA\n")
    with pytest.raises(VerificationError, match="invalid cosignature by witness key"):
        check_cosigned(checkpoint(5), forged, (), policy, verifiers)


def test_a_receipt_reports_what_its_policy_made_of_it(
    signer: Signer, cosigners: list[Cosigner], policy: WitnessPolicy
) -> None:
    note = sign_checkpoint(checkpoint(13), [signer])
    receipt = Receipt(
        seq=13,
        entry_hash=LEAVES[12],
        entry=ENTRIES[12],
        checkpoint=note,
        tree_size=0,
        inclusion_proof=tuple(inclusion_proof(12, 13, node)),
        cosigned=cosigned(signer, checkpoint(8), cosigners),
        cosigned_proof=tuple(consistency_proof(8, 13, node)),
    )
    verifiers = [signer.verifier()]
    witnessed = receipt.verify(verifiers, action="PUBLISH", obj="alert:13", policy=policy)
    assert witnessed.witnessing is not None
    assert witnessed.witnessing.cosigned == checkpoint(8)
    assert witnessed.witnessing.cosigners == ("ia", "police")
    assert receipt.verify(verifiers).witnessing is None  # no policy, nothing to report
    nobody = WitnessPolicy.parse(b"quorum none\n")
    assert receipt.verify(verifiers, policy=nobody).witnessing is None
    # The cosigned checkpoint is judged after the entry: its errors come after the entry's.
    with pytest.raises(VerificationError, match="records PUBLISH of"):
        receipt.verify(verifiers, obj="alert:12", policy=policy)


@pytest.mark.parametrize(
    ("kept", "witnessed", "shown", "cosigned", "kept_next"),
    [
        (None, False, 8, None, 8),  # trust on first use, even unwitnessed
        (None, False, 8, 5, 5),  # the first with its quorum
        (5, False, 8, None, 8),  # nothing witnessed yet: the newest, to stay pinned
        (8, False, 13, 5, 5),  # the first witnessed replaces an unwitnessed one, even smaller
        (5, True, 13, None, None),  # witnessed kept: an uncosigned one never replaces it
        (5, True, 13, 8, 8),  # a newer witnessed one does
        (8, True, 13, 5, None),  # an older witnessed one does not
        (8, True, 13, 8, None),  # nor the same
    ],
)
def test_the_newest_checkpoint_with_its_quorum_is_kept(
    kept: int | None, witnessed: bool, shown: int, cosigned: int | None, kept_next: int | None
) -> None:
    found = keeps(
        checkpoint(kept) if kept is not None else None,
        witnessed,
        checkpoint(shown),
        checkpoint(cosigned) if cosigned is not None else None,
    )
    assert (found.size if found else None) == kept_next


def test_one_ledger_per_key_name() -> None:
    kept = [ORIGIN, "other.test/ledger"]
    assert pinned_elsewhere(kept, ORIGIN, KEY) is None
    assert pinned_elsewhere(kept, f"{KEY}/20261208-00000000", KEY) == ORIGIN
    assert pinned_elsewhere([KEY], ORIGIN, KEY) == KEY  # the old origin, the key's name
    assert pinned_elsewhere(kept, "another.test/ledger", KEY) is None  # not under the key
    assert pinned_elsewhere(kept, f"{KEY}x/1", KEY) is None


# -- docs/ledger-format.md section 3.6: the cosignature example, generated from these numbers

WITNESS_SEED = bytes(range(32, 64))
WITNESS_NAME = "sinergi.example/witness"
COSIGNED_AT = 1_796_627_865


def render_cosignature_example() -> str:
    _signer, cp, note = doc_example()
    witness = Cosigner(WITNESS_NAME, Ed25519PrivateKey.from_private_bytes(WITNESS_SEED))
    public = base64.b64decode(witness.verifier_key().split("+", 2)[2])[1:]
    line = witness.cosign(cp.body(), COSIGNED_AT)
    raw = base64.b64decode(line.decode().rstrip("\n").rsplit(" ", 1)[1])
    out = ["```"]
    out.append(f"witness key name     {WITNESS_NAME}")
    out.append(f"Ed25519 seed         {WITNESS_SEED.hex()}")
    out.append(f"Ed25519 public key   {public.hex()}")
    kid_input = WITNESS_NAME.encode() + b"\n\x04" + public
    out.append(f"key ID input         {kid_input.hex()}")
    out.append(f"key ID               {witness.key_id.hex()}")
    out.append(f"vkey                 {witness.verifier_key()}")
    out.append(f"timestamp            {COSIGNED_AT} ({raw[4:12].hex()})")
    out.append(f"signed message (hex) {cosigned_message(cp.body(), COSIGNED_AT).hex()}")
    out.append(f"Ed25519 signature    {raw[12:].hex()}")
    out.append("```")
    out += ["", "The checkpoint of section 3.5 with this cosignature, byte for byte:", ""]
    out += ["```", (note + line).decode().rstrip("\n"), "```"]
    return "\n".join(out)


def test_doc_cosignature_example_matches_code() -> None:
    check_doc_block("cosignature-example", render_cosignature_example())


def test_doc_cosignature_example_verifies_from_the_markdown() -> None:
    """Take the keys and the cosigned note from the document alone, and check them."""
    doc = DOC.read_text(encoding="utf-8")
    start, stop = generated_block(doc, "checkpoint-example")
    ledger_vkey = re.search(r"^vkey +(\S+)$", doc[start:stop], re.M)
    start, stop = generated_block(doc, "cosignature-example")
    block = doc[start:stop]
    witness_vkey = re.search(r"^vkey +(\S+)$", block, re.M)
    assert ledger_vkey is not None
    assert witness_vkey is not None
    note = re.findall(r"```\n(.*?)```", block, re.S)[-1].encode()
    cp = open_checkpoint(note, [Verifier.from_vkey(ledger_vkey.group(1))])
    [found] = cosignatures(note, [CosignatureVerifier.from_vkey(witness_vkey.group(1))])
    assert (cp.size, found.name, found.timestamp) == (8, WITNESS_NAME, COSIGNED_AT)
    policy = WitnessPolicy.parse(
        f"log {ledger_vkey.group(1)}\nwitness w {witness_vkey.group(1)}\nquorum w\n".encode()
    )
    assert policy.check(note).cosigners.keys() == {"w"}
