"""The witness protocol's messages and a witness's decision, without I/O (C2SP tlog-witness).

``POST <prefix>/add-checkpoint`` carries ``old <size>``, up to 63 base64 consistency-proof lines,
an empty line, then the signed checkpoint. The witness cosigns only a checkpoint signed by a log
key it trusts, whose ``old`` size is the size it cosigned last for that origin, and which is
consistent with that checkpoint (RFC 9162 section 2.1.4); it answers 404, 403, 400, 409 (with its
size) or 422 otherwise (tlog-witness, "add-checkpoint"). The check and the update of the
witness's record must be one atomic step; :func:`decide` is the check.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ledger._errors import LedgerError, NoteError, WitnessRefusal
from ledger._merkle import EMPTY_ROOT, HASH_SIZE, MAX_TREE_SIZE, verify_consistency
from ledger._note import Checkpoint, Verifier, _split_note, open_checkpoint

ADD_CHECKPOINT = "add-checkpoint"
#: The Content-Type of a 409 answer, whose body is the witness's latest size and a newline.
SIZE_CONTENT_TYPE = "text/x.tlog.size"
MAX_PROOF_LINES = 63
_OLD = re.compile(rb"old (0|[1-9][0-9]{0,19})\n")


def origin_hash(origin: str) -> str:
    """The path segment naming a log on the monitoring prefix: hex SHA-256 of its origin."""
    return hashlib.sha256(origin.encode()).hexdigest()


@dataclass(frozen=True)
class AddCheckpoint:
    """An add-checkpoint request body."""

    old_size: int
    proof: tuple[bytes, ...]
    note: bytes

    def encode(self) -> bytes:
        lines = [b"old %d\n" % self.old_size]
        lines += [base64.b64encode(node) + b"\n" for node in self.proof]
        return b"".join(lines) + b"\n" + self.note

    @classmethod
    def parse(cls, body: bytes) -> AddCheckpoint:
        """Parse strictly; :class:`WitnessRefusal` 400 naming what is malformed."""
        old = _OLD.match(body)
        if old is None:
            raise WitnessRefusal(400, "the body does not start with an `old <size>` line")
        rest = body[old.end() :]
        proof: list[bytes] = []
        while not rest.startswith(b"\n"):
            line, newline, rest = rest.partition(b"\n")
            if not newline or len(proof) == MAX_PROOF_LINES:
                raise WitnessRefusal(400, "no empty line after at most 63 proof lines")
            try:
                node = base64.b64decode(line, validate=True)
            except binascii.Error:
                node = b""
            if len(node) != HASH_SIZE or base64.b64encode(node) != line:
                raise WitnessRefusal(400, f"proof line {len(proof) + 1} is not a base64 hash")
            proof.append(node)
        old_size = int(old.group(1))
        if old_size > MAX_TREE_SIZE:
            raise WitnessRefusal(400, f"old size {old_size} does not fit in 64 bits")
        return cls(old_size, tuple(proof), rest[1:])

    def origin(self) -> str:
        """The origin the note's text claims, before any signature is checked: what a witness
        needs to find the log keys it trusts for it, or to answer 404 (tlog-witness,
        add-checkpoint). :class:`WitnessRefusal` 400 if the note is not a checkpoint."""
        try:
            text, _ = _split_note(self.note)
            return Checkpoint.parse(text).origin
        except NoteError as exc:
            raise WitnessRefusal(400, f"the body does not end in a checkpoint: {exc}") from None


def decide(
    latest: Checkpoint | None, request: AddCheckpoint, logs: Sequence[Verifier]
) -> Checkpoint:
    """The checkpoint to record and cosign, given ``latest``, the checkpoint the witness cosigned
    last for the request's origin (None: never), and the log keys it trusts for that origin; or
    :class:`WitnessRefusal` with the protocol's status. The caller answers 404 for an origin it
    does not know, before asking."""
    try:
        shown = open_checkpoint(request.note, list(logs))
    except LedgerError as exc:
        raise WitnessRefusal(403, f"no valid signature by a trusted log key: {exc}") from None
    if latest is not None and latest.origin != shown.origin:
        raise ValueError(f"latest is a checkpoint of {latest.origin!r}, not {shown.origin!r}")
    if request.old_size > shown.size:
        raise WitnessRefusal(
            400, f"old size {request.old_size} is larger than the checkpoint's {shown.size}"
        )
    have = latest.size if latest is not None else 0
    if request.old_size != have:
        raise WitnessRefusal(
            409, f"old size {request.old_size}, but the latest cosigned size is {have}", have
        )
    if shown.size == 0 and shown.root != EMPTY_ROOT:
        raise WitnessRefusal(422, "a checkpoint of size 0 must have the empty tree's root")
    if latest is None or have == 0:
        if request.proof:
            raise WitnessRefusal(422, "a proof from size 0 must be empty")
        return shown
    if shown.size == have:
        if shown.root != latest.root:
            raise WitnessRefusal(422, f"size {have} was cosigned with another root: the log forked")
        if request.proof:  # RFC 9162 2.1.4.2: between equal sizes the proof is empty
            raise WitnessRefusal(422, "a proof between equal sizes must be empty")
        return shown
    try:
        verify_consistency(have, shown.size, latest.root, shown.root, list(request.proof))
    except LedgerError as exc:
        raise WitnessRefusal(422, f"not consistent with the cosigned size {have}: {exc}") from None
    return shown
