"""A message's proof of record: a self-contained bundle a recipient or a court checks offline.

The bundle holds the message exactly as the exchange stored it (with the sender's signature), its
ledger entry, the entry's RFC 6962 inclusion proof (RFC 9162 section 2.1.3) and the checkpoint it
leads to, cosigned by the witnesses (C2SP tlog-cosignature). Checking it needs the ledger's public
key, the witness policy and the agencies' CA certificates: never the exchange.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError

from certs import TrustAnchors
from clients._errors import VerificationFailed
from clients._signatures import SignedBy, verify_alert
from clients._witness import QuorumFailed
from ledger import (
    MESSAGE_ACTIONS,
    Checkpoint,
    EncodingError,
    Entry,
    LedgerError,
    QuorumError,
    Verifier,
    WitnessPolicy,
    leaf_hash,
    meta,
    open_checkpoint,
    verify_inclusion,
)
from sinergi.v1 import alert_pb2, ledger_pb2

FORMAT = "sinergi-alert-proof/v1"


@dataclass(frozen=True)
class ProofChecked:
    """What a proof showed: the message, who signed it, its entry and the checkpoint (and, with
    a witness policy, who cosigned it)."""

    alert: alert_pb2.Alert
    signed: SignedBy
    entry: Entry
    checkpoint: Checkpoint
    cosigners: tuple[str, ...]


@dataclass(frozen=True)
class AlertProof:
    message: bytes
    seq: int
    entry: bytes
    note: bytes
    proof: tuple[bytes, ...]

    @property
    def alert(self) -> alert_pb2.Alert:
        try:
            return alert_pb2.Alert.FromString(self.message)
        except DecodeError as exc:
            raise VerificationFailed(f"proof: the message is not an alert ({exc})") from None

    @classmethod
    def from_reply(cls, reply: ledger_pb2.AlertProof) -> AlertProof:
        return cls(reply.message, reply.seq, reply.entry, reply.checkpoint.note, tuple(reply.proof))

    def to_json(self) -> dict[str, Any]:
        """The bundle: the checked fields in base64 (and the note as text), and, for a reader,
        what they say (checked against them by :meth:`from_json`)."""
        alert = self.alert
        return {
            "format": FORMAT,
            "alert_id": alert.id,
            "message_type": alert_pb2.MessageType.Name(alert.message_type),
            "sender": alert.sender,
            "seq": self.seq,
            "message": base64.b64encode(self.message).decode(),
            "entry": base64.b64encode(self.entry).decode(),
            "inclusion_proof": [h.hex() for h in self.proof],
            "checkpoint": self.note.decode("utf-8"),
        }

    @classmethod
    def from_json(cls, data: Any) -> AlertProof:  # noqa: ANN401 - parsed JSON
        """Read a bundle; :class:`VerificationFailed` naming what is malformed."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise VerificationFailed(f"not a proof bundle: its format is not {FORMAT!r}")
        try:
            proof = cls(
                base64.b64decode(data["message"], validate=True),
                int(data["seq"]),
                base64.b64decode(data["entry"], validate=True),
                str(data["checkpoint"]).encode("utf-8"),
                tuple(bytes.fromhex(h) for h in data["inclusion_proof"]),
            )
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise VerificationFailed(f"proof bundle is malformed: {exc!r}") from None
        alert = proof.alert
        said = (data.get("alert_id"), data.get("sender"), data.get("message_type"))
        if said != (alert.id, alert.sender, alert_pb2.MessageType.Name(alert.message_type)):
            raise VerificationFailed(
                "proof bundle: its alert_id, sender or message_type differ from the message"
            )
        return proof

    @classmethod
    def loads(cls, text: str | bytes) -> AlertProof:
        try:
            return cls.from_json(json.loads(text))
        except ValueError as exc:
            raise VerificationFailed(f"proof bundle is not JSON: {exc}") from None

    def verify(
        self,
        verifiers: Sequence[Verifier],
        anchors: TrustAnchors,
        trust_domain: str,
        policy: WitnessPolicy | None = None,
    ) -> ProofChecked:
        """Check everything the bundle claims; :class:`VerificationFailed` (or its
        :class:`SignatureFailed`, :class:`QuorumFailed`) saying the first thing that does not
        hold. An UPDATE's or CANCEL's addressing is copied from its thread's original, which
        the bundle does not hold: its signature and content are checked, not that copy."""
        alert = self.alert
        try:
            entry = Entry.decode(self.entry)
        except EncodingError as exc:
            raise VerificationFailed(f"proof: the entry is not canonical: {exc}") from None
        if entry.seq != self.seq or entry.action not in MESSAGE_ACTIONS:
            raise VerificationFailed(
                f"proof: the entry is {entry.action.value} at {entry.seq}, not the message "
                f"entry at {self.seq}"
            )
        if entry.digest != hashlib.sha256(self.message).hexdigest():
            raise VerificationFailed("proof: the entry's digest is not the message's SHA-256")
        if not entry.objects or entry.objects[0] != f"alert:{alert.id}":
            raise VerificationFailed(f"proof: the entry records {entry.objects}, not {alert.id}")
        wanted = hashlib.sha256(alert.signature.signature).hexdigest()
        if entry.meta.get(meta.SIGNATURE) != wanted:
            raise VerificationFailed("proof: the entry records another sender signature")
        if entry.meta.get(meta.TO) != sorted(alert.recipients):
            raise VerificationFailed("proof: the entry's recipients are not the message's")
        signed = verify_alert(alert, anchors, trust_domain)
        checkpoint, cosigners = self._checkpoint(verifiers, policy)
        try:
            verify_inclusion(
                self.seq - 1, checkpoint.size, leaf_hash(self.entry), self.proof, checkpoint.root
            )
        except LedgerError as exc:
            raise VerificationFailed(
                f"proof: entry {self.seq} is not in the checkpoint of size {checkpoint.size}: {exc}"
            ) from None
        return ProofChecked(alert, signed, entry, checkpoint, cosigners)

    def _checkpoint(
        self, verifiers: Sequence[Verifier], policy: WitnessPolicy | None
    ) -> tuple[Checkpoint, tuple[str, ...]]:
        try:
            if policy is None:
                return open_checkpoint(self.note, list(verifiers)), ()
            cosigned = policy.check(self.note, verifiers)
        except QuorumError as exc:
            raise QuorumFailed(f"proof: {exc}") from None
        except LedgerError as exc:
            raise VerificationFailed(f"proof: the checkpoint does not verify: {exc}") from None
        return cosigned.checkpoint, tuple(sorted(cosigned.cosigners))
