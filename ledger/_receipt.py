"""Receipts: the proof, handed to the writer of an entry, that the ledger holds it.

A receipt is the entry, its hash, the signed checkpoint of the batch that appended it and the
RFC 6962 inclusion proof of leaf ``seq - 1`` in that checkpoint (docs/ledger-format.md, section
5). One verifier serves every caller: the client library on each write, and the CLI's ``ledger
prove`` on a stored or served entry. With a witness policy it also judges the newest cosigned
checkpoint the receipt carries (:func:`ledger.check_cosigned`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ledger._entry import Entry
from ledger._errors import LedgerError, VerificationError
from ledger._merkle import leaf_hash, verify_inclusion
from ledger._note import Checkpoint, Verifier, open_checkpoint
from ledger._policy import WitnessPolicy
from ledger._witnessing import Witnessing, check_cosigned


@dataclass(frozen=True)
class VerifiedReceipt:
    """A receipt whose checkpoint signature, entry hash and inclusion proof all verified.

    ``witnessing`` is what the witness policy made of it (its cosigned checkpoint and
    cosigners, or not yet witnessed), which the caller must report; None without a policy."""

    seq: int
    entry: Entry
    checkpoint: Checkpoint
    note: bytes  # the checkpoint's signed note, as received
    witnessing: Witnessing | None = None


@dataclass(frozen=True)
class Receipt:
    """Proof that one entry is in the ledger: RFC 6962 inclusion in a signed checkpoint.

    ``tree_size`` is the checkpoint's size when the maker knows it without opening the note (the
    ledger writer); 0 when it does not (a receipt read off the wire). ``cosigned`` is the newest
    checkpoint that had its witnesses' quorum when the receipt was made (b"" for none) and
    ``cosigned_proof`` the consistency proof between it and ``checkpoint``, smaller first."""

    seq: int
    entry_hash: bytes
    entry: bytes
    checkpoint: bytes
    tree_size: int
    inclusion_proof: tuple[bytes, ...]
    cosigned: bytes = b""
    cosigned_proof: tuple[bytes, ...] = ()

    def verify(
        self,
        verifiers: Sequence[Verifier],
        *,
        action: str | None = None,
        obj: str | None = None,
        actor: Callable[[str], bool] | None = None,
        policy: WitnessPolicy | None = None,
    ) -> VerifiedReceipt:
        """Check the checkpoint's signature under ``verifiers``, the entry's canonical form and
        hash, its seq, and its inclusion (RFC 9162 section 2.1.3.2); then that the entry records
        ``action`` of ``obj`` by a principal ``actor`` accepts, for those given; then, with a
        ``policy`` that needs cosignatures, the cosigned checkpoint (:func:`check_cosigned`).
        Raises :class:`VerificationError` naming what is wrong (:class:`QuorumError` for a
        cosigned checkpoint without its quorum)."""
        try:
            cp = open_checkpoint(self.checkpoint, verifiers)
        except LedgerError as exc:
            raise VerificationError(f"the receipt's checkpoint does not verify: {exc}") from None
        if self.tree_size and self.tree_size != cp.size:
            raise VerificationError(
                f"the receipt names a tree of {self.tree_size} entries, its checkpoint {cp.size}"
            )
        if leaf_hash(self.entry) != self.entry_hash:
            raise VerificationError("the receipt's entry does not match its hash", self.seq)
        try:
            entry = Entry.decode(self.entry)
            verify_inclusion(self.seq - 1, cp.size, self.entry_hash, self.inclusion_proof, cp.root)
        except LedgerError as exc:
            raise VerificationError(
                f"entry {self.seq} is not proven in the checkpoint of size {cp.size}: {exc}",
                self.seq,
            ) from None
        if entry.seq != self.seq:
            raise VerificationError(f"the receipt for entry {self.seq} holds entry {entry.seq}")
        if (action is not None and entry.action != action) or (
            obj is not None and obj not in entry.objects
        ):
            raise VerificationError(
                f"the receipt records {entry.action} of {list(entry.objects)}, "
                f"not {action or entry.action} of {obj or list(entry.objects)}",
                self.seq,
            )
        if actor is not None and not actor(entry.actor.id):
            raise VerificationError(f"the receipt attributes the act to {entry.actor.id}", self.seq)
        witnessing = None
        if policy is not None and policy.needs_cosignatures:
            witnessing = check_cosigned(cp, self.cosigned, self.cosigned_proof, policy, verifiers)
        return VerifiedReceipt(self.seq, entry, cp, self.checkpoint, witnessing)
