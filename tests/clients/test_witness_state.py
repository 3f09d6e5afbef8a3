"""The witness's kept state: what it verifies again, and what it need not."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clients import ForkDetected, OtherLedger, VerificationFailed, Witness
from ledger import (
    Checkpoint,
    Cosigner,
    Signer,
    Verifier,
    WitnessPolicy,
    consistency_proof,
    leaf_hash,
    open_checkpoint,
    root_of,
    sign_checkpoint,
)

ORIGIN = "sinergi.test/ledger"
LEAVES = [leaf_hash(f"entry {i}".encode()) for i in range(16)]


class CountingVerifier(Verifier):
    """A verifier that counts the signatures it checks."""

    def __init__(self, signer: Signer) -> None:
        super().__init__(signer.name, signer.public_key())
        self.checked = 0

    def verify(self, text: bytes, signature: bytes) -> bool:
        self.checked += 1
        return super().verify(text, signature)


def node(level: int, index: int) -> bytes:
    return root_of(LEAVES[index << level : (index + 1) << level])


def signed(signer: Signer, size: int, root: bytes | None = None) -> bytes:
    return sign_checkpoint(Checkpoint(ORIGIN, size, root or root_of(LEAVES[:size])), [signer])


def observe(witness: Witness, verifier: Verifier, note: bytes, kept: int) -> Checkpoint:
    """What a client does with a receipt: verify its note, then let the witness check it."""
    checkpoint = open_checkpoint(note, [verifier])
    proof = consistency_proof(kept, checkpoint.size, node) if kept else []
    witness.observe(checkpoint, note, proof=proof, proof_from=kept)
    return checkpoint


@pytest.fixture
def signer() -> Signer:
    return Signer(ORIGIN, Ed25519PrivateKey.generate())


def test_a_checkpoint_it_kept_is_not_verified_again(tmp_path: Path, signer: Signer) -> None:
    verifier = CountingVerifier(signer)
    witness = Witness(tmp_path / "witness.json", [verifier])
    kept = 0
    for size in (3, 5, 8, 13):
        observe(witness, verifier, signed(signer, size), kept)
        latest = witness.latest(ORIGIN)
        assert latest is not None
        assert latest.size == size
        kept = size
    # One verification per checkpoint, by the caller: the witness trusts what it kept itself.
    assert verifier.checked == 4


def test_a_state_file_written_by_another_process_is_verified(
    tmp_path: Path, signer: Signer
) -> None:
    verifier = CountingVerifier(signer)
    path = tmp_path / "witness.json"
    witness = Witness(path, [verifier])
    observe(witness, verifier, signed(signer, 5), 0)
    other = Witness(path, [verifier])  # another process using the same identity
    observe(other, verifier, signed(signer, 8), 5)
    checked = verifier.checked
    latest = witness.latest(ORIGIN)
    assert latest is not None
    assert latest.size == 8
    assert verifier.checked == checked + 1  # the file changed under it: verified again

    # A state file replaced by someone without the key is refused, loudly.
    forger = Signer(ORIGIN, Ed25519PrivateKey.generate())
    forged = signed(forger, 13)
    path.write_text(
        json.dumps({"version": 1, "checkpoints": {ORIGIN: base64.b64encode(forged).decode()}})
    )
    with pytest.raises(VerificationFailed, match="kept checkpoint"):
        witness.latest(ORIGIN)


def test_a_fork_is_still_caught_after_a_kept_checkpoint(tmp_path: Path, signer: Signer) -> None:
    verifier = CountingVerifier(signer)
    witness = Witness(tmp_path / "witness.json", [verifier])
    observe(witness, verifier, signed(signer, 8), 0)
    rewritten = signed(signer, 8, root_of([leaf_hash(b"forged")] * 8))
    with pytest.raises(ForkDetected, match="two different ledgers"):
        observe(witness, verifier, rewritten, 8)
    latest = witness.latest(ORIGIN)
    assert latest is not None
    assert latest.root == root_of(LEAVES[:8])


def test_a_newest_checkpoint_overtaken_by_the_kept_one_must_be_its_prefix(
    tmp_path: Path, signer: Signer
) -> None:
    verifier = CountingVerifier(signer)
    witness = Witness(tmp_path / "witness.json", [verifier])
    observe(witness, verifier, signed(signer, 13), 0)
    asked: list[tuple[int, int]] = []

    def fetch(first: int, second: int) -> list[bytes]:
        asked.append((first, second))
        return consistency_proof(first, second, node)

    # Asked for the newest when 5 was kept; 13 was kept meanwhile: a prefix, accepted.
    answer = signed(signer, 8)
    witness.observe(open_checkpoint(answer, [verifier]), answer, fetch=fetch, newest_since=5)
    assert asked == [(8, 13)]
    kept = witness.latest(ORIGIN)
    assert kept is not None
    assert kept.size == 13

    # The same size with another history is a fork, not a race.
    forged = signed(signer, 8, root_of([leaf_hash(b"forged")] * 8))
    with pytest.raises(ForkDetected, match="not consistent"):
        witness.observe(open_checkpoint(forged, [verifier]), forged, fetch=fetch, newest_since=5)
    # Older than what was kept when asking: a rollback.
    with pytest.raises(ForkDetected, match="rolled back"):
        witness.observe(open_checkpoint(answer, [verifier]), answer, fetch=fetch, newest_since=13)


# -- with a witness policy, and one ledger per key --------------------------------------------

NEW_ORIGIN = f"{ORIGIN}/20261207-3f9a01c2"


@pytest.fixture
def cosigners() -> list[Cosigner]:
    return [Cosigner(f"w.test/{n}", Ed25519PrivateKey.generate()) for n in ("ia", "police")]


@pytest.fixture
def policy(cosigners: list[Cosigner]) -> WitnessPolicy:
    ia, police = cosigners
    return WitnessPolicy.parse(
        f"witness ia {ia.verifier_key()}\nwitness police {police.verifier_key()}\n"
        "group both all ia police\nquorum both\n".encode()
    )


def cosigned(signer: Signer, size: int, cosigners: list[Cosigner]) -> tuple[Checkpoint, bytes]:
    cp = Checkpoint(ORIGIN, size, root_of(LEAVES[:size]))
    return cp, sign_checkpoint(cp, [signer]) + b"".join(c.cosign(cp.body(), 1) for c in cosigners)


def test_with_a_policy_the_newest_checkpoint_with_its_quorum_is_kept(
    tmp_path: Path, signer: Signer, cosigners: list[Cosigner], policy: WitnessPolicy
) -> None:
    witness = Witness(tmp_path / "witness.json", [signer.verifier()], policy)
    # A new ledger, nothing witnessed yet: the newest verified is kept, to stay pinned.
    observe(witness, signer.verifier(), signed(signer, 5), 0)
    kept = witness.pinned(ORIGIN)
    assert kept is not None
    assert (kept.checkpoint.size, kept.witnessed) == (5, False)
    # A receipt of size 8 whose cosigned checkpoint is of size 3: the cosigned one is kept.
    receipt = open_checkpoint(signed(signer, 8), [signer.verifier()])
    three = cosigned(signer, 3, cosigners)
    proof = consistency_proof(5, 8, node)
    witness.observe(receipt, signed(signer, 8), proof=proof, proof_from=5, cosigned=three)
    kept = witness.pinned(ORIGIN)
    assert kept is not None
    assert (kept.checkpoint, kept.note, kept.witnessed) == (three[0], three[1], True)
    # A newer receipt without a cosigned checkpoint keeps it; a newer cosigned one replaces it.
    observe(witness, signer.verifier(), signed(signer, 13), 3)
    assert witness.latest(ORIGIN) == three[0]
    ten = cosigned(signer, 10, cosigners)
    receipt = open_checkpoint(signed(signer, 13), [signer.verifier()])
    proof = consistency_proof(3, 13, node)
    witness.observe(receipt, signed(signer, 13), proof=proof, proof_from=3, cosigned=ten)
    assert witness.latest(ORIGIN) == ten[0]
    # A state edited to claim a quorum it does not have: the bad cosignature is refused.
    state = json.loads((tmp_path / "witness.json").read_text())
    note = base64.b64decode(state["checkpoints"][ORIGIN])
    state["checkpoints"][ORIGIN] = base64.b64encode(note[:-20] + b"A" * 19 + b"\n").decode()
    (tmp_path / "witness.json").write_text(json.dumps(state))
    with pytest.raises(VerificationFailed, match="kept checkpoint"):
        Witness(tmp_path / "witness.json", [signer.verifier()], policy).pinned(ORIGIN)


def test_another_ledger_under_the_same_key_is_refused_until_trusted(
    tmp_path: Path, signer: Signer
) -> None:
    verifier = signer.verifier()
    witness = Witness(tmp_path / "witness.json", [verifier])
    observe(witness, verifier, signed(signer, 8), 0)
    made_anew = Checkpoint(NEW_ORIGIN, 3, root_of(LEAVES[:3]))
    note = sign_checkpoint(made_anew, [signer])
    with pytest.raises(OtherLedger) as caught:
        witness.observe(made_anew, note)
    assert str(caught.value) == (
        f"ledger {NEW_ORIGIN} is not the ledger {ORIGIN} witnessed before (size 8, root "
        f"{root_of(LEAVES[:8]).hex()}). If the exchange's ledger was replaced on purpose (a "
        f"deleted development database), trust the new one: sinergi ledger trust {NEW_ORIGIN} "
        "--identity DIR --server ADDR; otherwise report it to internal affairs."
    )
    assert caught.value.details == {
        "origin": NEW_ORIGIN,
        "kept_origin": ORIGIN,
        "kept_size": 8,
        "kept_root": root_of(LEAVES[:8]).hex(),
    }
    # A ledger of another key is none of this key's business.
    elsewhere = Signer("elsewhere.test/ledger", Ed25519PrivateKey.generate())
    Witness(tmp_path / "other.json", [verifier, elsewhere.verifier()]).observe(
        Checkpoint("elsewhere.test/ledger", 3, root_of(LEAVES[:3])),
        sign_checkpoint(Checkpoint("elsewhere.test/ledger", 3, root_of(LEAVES[:3])), [elsewhere]),
    )

    replaced = witness.trust(made_anew, note, ORIGIN)
    assert replaced is not None
    assert replaced.checkpoint.size == 8
    assert witness.notes() == {NEW_ORIGIN: note}
    [record] = witness.replaced()
    assert (record.origin, record.size, record.by) == (ORIGIN, 8, NEW_ORIGIN)
    assert record.note == signed(signer, 8)
    kept = witness.pinned(ORIGIN)
    assert kept is not None
    assert kept.checkpoint == made_anew
    # The old ledger is now the other one.
    with pytest.raises(OtherLedger, match=f"ledger {ORIGIN} is not the ledger {NEW_ORIGIN}"):
        observe(witness, verifier, signed(signer, 13), 0)
    # Trusting the kept ledger again is an ordinary observation: nothing replaced.
    assert witness.trust(made_anew, note, ORIGIN) is None


def test_a_version_1_state_is_read_and_written_as_version_2(tmp_path: Path, signer: Signer) -> None:
    path = tmp_path / "witness.json"
    note = signed(signer, 5)
    kept = {ORIGIN: base64.b64encode(note).decode()}
    path.write_text(json.dumps({"version": 1, "checkpoints": kept}))
    witness = Witness(path, [signer.verifier()])
    assert witness.notes() == {ORIGIN: note}
    observe(witness, signer.verifier(), signed(signer, 8), 5)
    assert json.loads(path.read_text())["version"] == 2
    path.write_text(json.dumps({"version": 3, "checkpoints": {}}))
    with pytest.raises(VerificationFailed, match="unknown format"):
        Witness(path, [signer.verifier()]).notes()
