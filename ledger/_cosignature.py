"""Witness cosignatures on checkpoints: C2SP tlog-cosignature, Ed25519 (``cosignature/v1``).

A witness that has checked a checkpoint's consistency with everything it saw before adds a note
signature line of its own: ``— <witness name> base64(key ID || timestamp || signature)``, with
key ID ``SHA-256(name || 0x0A || 0x04 || public key)[:4]``, an 8-byte big-endian POSIX
timestamp, and an Ed25519 signature over::

    cosignature/v1
    time <timestamp>
    <the checkpoint body, final newline included>

It states: as of that time, this is the largest consistent tree the witness has seen for the
origin (tlog-cosignature, "Ed25519 signed message"). Verifiers of the log's own signature ignore
these lines (unknown keys), so a cosigned checkpoint is still a valid checkpoint.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from nacl.exceptions import BadSignatureError

from ledger._errors import NoteError
from ledger._note import (
    _SIG_PREFIX,
    _parse_signature_line,
    _PrivateKey,
    _PublicKey,
    _split_note,
)

COSIGNATURE_ALG = 0x04
"""Signature type byte of Ed25519 cosignatures (C2SP tlog-cosignature; signed-note, types)."""

_HEADER = b"cosignature/v1\n"
_TIMESTAMP_SIZE = 8
_SIGNATURE_SIZE = 64
_MAX_TIMESTAMP = 2**63 - 1


def cosigned_message(body: bytes, timestamp: int) -> bytes:
    """What a cosigner signs: the header line, the time line, then the checkpoint body."""
    if not 0 <= timestamp <= _MAX_TIMESTAMP:
        raise NoteError(f"cosignature timestamp {timestamp} is not in [0, 2**63 - 1]")
    return _HEADER + b"time %d\n" % timestamp + body


class Cosigner(_PrivateKey):
    """A witness's cosigning key: a key name and an Ed25519 private key of its own."""

    __slots__ = ()
    ALG = COSIGNATURE_ALG

    def verifier(self) -> CosignatureVerifier:
        return CosignatureVerifier(self._name, self._key.public_key())

    def cosign(self, body: bytes, timestamp: int) -> bytes:
        """The signature line cosigning the checkpoint ``body`` at ``timestamp``, UTF-8."""
        signature = self._key.sign(cosigned_message(body, timestamp))
        raw = self._key_id + timestamp.to_bytes(_TIMESTAMP_SIZE, "big") + signature
        return f"{_SIG_PREFIX}{self._name} {base64.b64encode(raw).decode('ascii')}\n".encode()


class CosignatureVerifier(_PublicKey):
    """A witness's public cosigning key, by name and key ID; its vkey has type 0x04."""

    __slots__ = ()
    ALG = COSIGNATURE_ALG

    @classmethod
    def from_vkey(cls, vkey: str) -> CosignatureVerifier:
        """Parse ``<name>+<key ID>+<base64(0x04 || 32-byte key)>``; NoteError if it is malformed
        or is not an Ed25519 cosignature key."""
        return cls(*cls._parse(vkey))

    def timestamp(self, body: bytes, signature: bytes) -> int | None:
        """The timestamp of ``signature`` (the bytes after the key ID) if it is this key's valid
        cosignature of ``body``, else None."""
        if len(signature) != _TIMESTAMP_SIZE + _SIGNATURE_SIZE:
            return None
        timestamp = int.from_bytes(signature[:_TIMESTAMP_SIZE], "big")
        if timestamp > _MAX_TIMESTAMP:
            return None
        try:
            self._sodium.verify(cosigned_message(body, timestamp), signature[_TIMESTAMP_SIZE:])
        except BadSignatureError:
            return None
        return timestamp


@dataclass(frozen=True)
class Cosignature:
    """A verified cosignature: which witness key, and the time it states."""

    name: str
    key_id: bytes
    timestamp: int


def cosignatures(note: bytes, witnesses: Sequence[CosignatureVerifier]) -> list[Cosignature]:
    """The verified cosignatures of ``note`` by ``witnesses``, in order of appearance.

    Lines by other keys (the log's own signature, unknown witnesses) are ignored; a line by a
    known witness key that does not verify raises NoteError, as a bad signature by a known key
    does in any signed note (C2SP signed-note, Verifying)."""
    body, lines = _split_note(note)
    known = {(w.name, w.key_id): w for w in witnesses}
    found: dict[tuple[str, bytes], Cosignature] = {}
    for line in lines:
        name, kid, signature = _parse_signature_line(line)
        witness = known.get((name, kid))
        if witness is None:
            continue
        timestamp = witness.timestamp(body, signature)
        if timestamp is None:
            raise NoteError(f"invalid cosignature by witness key {name}+{kid.hex()}")
        found.setdefault((name, kid), Cosignature(name, kid, timestamp))
    return list(found.values())


def add_signatures(note: bytes, lines: Iterable[bytes]) -> bytes:
    """``note`` with the signature ``lines`` appended, each once (a line already among its
    signatures, or given twice, is kept once). The note text and its own signatures are
    unchanged; NoteError if a line is malformed or the result is not a valid note (C2SP
    signed-note: UTF-8, no control characters, at most :data:`MAX_SIGNATURES` signatures)."""
    _, signatures = _split_note(note)  # a well-formed note only
    present = set(signatures)
    added = []
    for line in lines:
        if not line.endswith(b"\n") or b"\n" in line[:-1]:
            raise NoteError("a signature line is one line ending in a newline")
        if line[:-1] not in present:
            present.add(line[:-1])
            added.append(line)
    result = note + b"".join(added)
    _split_note(result)  # the added lines' characters, and the count of signatures
    for line in added:
        _parse_signature_line(line[:-1])
    return result
