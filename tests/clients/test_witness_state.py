"""The witness's kept state: what it verifies again, and what it need not."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clients import ForkDetected, VerificationFailed, Witness
from ledger import (
    Checkpoint,
    Signer,
    Verifier,
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
