"""C2SP signed notes and tlog checkpoints with Ed25519 keys (pure).

Implements c2sp.org/signed-note (the format of golang.org/x/mod/sumdb/note) with signature
type 0x01 (Ed25519) and c2sp.org/tlog-checkpoint. A note is::

    <text, ending in a newline>
    <blank line>
    — <key name> <base64(4-byte key ID || signature)>
    ...

Opening a note is strict and loud: a malformed note, a signature by a known key that does not
verify, or a note with no verifying known signature raises :class:`~ledger._errors.NoteError`.
Signatures by unknown keys are ignored, as the spec requires (key rotation, witnesses).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from ledger._errors import NoteError

__all__ = [
    "ED25519_ALG",
    "MAX_SIGNATURES",
    "Checkpoint",
    "Signer",
    "Verifier",
    "generate_signing_key",
    "key_id",
    "load_private_key_pem",
    "load_public_key_pem",
    "open_checkpoint",
    "open_note",
    "parse_vkey",
    "private_key_pem",
    "public_key_pem",
    "sign_checkpoint",
    "sign_note",
]

ED25519_ALG = 0x01
"""Signature type identifier byte of Ed25519 note signatures (C2SP signed-note, Signature types)."""

MAX_SIGNATURES = 100
"""Most signature lines :func:`open_note` accepts (the spec requires at least 16; Go uses 100)."""

_ED25519_PUBLIC_KEY_SIZE = 32
_ED25519_SIGNATURE_SIZE = 64
_KEY_ID_SIZE = 4
_ROOT_SIZE = 32
_MAX_TREE_SIZE = 2**64 - 1
_SIG_PREFIX = "\u2014 "  # em dash, space
_SIG_PREFIX_BYTES = _SIG_PREFIX.encode()

# Unicode White_Space (what Go's unicode.IsSpace reports), forbidden in key names.
_WHITE_SPACE = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
    "\u200a\u2028\u2029\u202f\u205f\u3000"
)
# What the character checks below look for, one search each: a per-character loop in Python
# cost a third of opening a checkpoint, whose signature check is the rest.
_KEY_NAME_REFUSED = re.compile(f"[{re.escape(''.join(sorted(_WHITE_SPACE)))}+\x00-\x1f]")
_NOTE_CONTROL = re.compile("[\x00-\x09\x0b-\x1f]")  # every control character but newline
_LINE_CONTROL = re.compile("[\x00-\x1f]")
_HEX8 = re.compile(r"[0-9a-fA-F]{8}")
_DECIMAL = re.compile(r"0|[1-9][0-9]*")


# --------------------------------------------------------------------------------------------
# Keys and key IDs (C2SP signed-note, Signatures)


def key_id(name: str, public_key: bytes, alg: int = ED25519_ALG) -> bytes:
    """Key ID ``SHA-256(key name || 0x0A || signature type || public key)[:4]`` (C2SP
    signed-note, Signatures), as 4 big-endian bytes."""
    if not 0 <= alg <= 0xFF:
        raise ValueError(f"signature type {alg} is not one byte")
    return hashlib.sha256(name.encode() + b"\n" + bytes([alg]) + public_key).digest()[:4]


def _valid_key_name(name: object) -> bool:
    """C2SP signed-note: non-empty, no Unicode spaces, no plus (U+002B); valid UTF-8 text
    without control characters, since it appears in the note."""
    if not isinstance(name, str) or not name or _KEY_NAME_REFUSED.search(name):
        return False
    try:
        name.encode()
    except UnicodeEncodeError:  # lone surrogates
        return False
    return True


def _raw_public_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class _NamedKey:
    """What every note key has: a name, a raw Ed25519 public key, and the key ID that the name,
    the signature type (:attr:`ALG`) and the key give (C2SP signed-note, Signatures)."""

    __slots__ = ("_key_id", "_name", "_public")
    ALG: ClassVar[int] = ED25519_ALG

    def __init__(self, name: str, public_key: Ed25519PublicKey) -> None:
        if not _valid_key_name(name):
            raise ValueError(f"invalid note key name {name!r}: empty, or has a space or '+'")
        self._name = name
        self._public = _raw_public_key(public_key)
        self._key_id = key_id(name, self._public, self.ALG)

    @classmethod
    def _parse(cls, vkey: str) -> tuple[str, Ed25519PublicKey]:
        """Name and key of a vkey of this class's signature type; NoteError otherwise."""
        name, alg, key = parse_vkey(vkey)
        if alg != cls.ALG:
            raise NoteError(f"unsupported verifier key algorithm 0x{alg:02x}, want 0x{cls.ALG:02x}")
        if len(key) != _ED25519_PUBLIC_KEY_SIZE:
            raise NoteError("malformed verifier key: an Ed25519 key is 32 bytes")
        return name, Ed25519PublicKey.from_public_bytes(key)

    @property
    def name(self) -> str:
        """The key name written in signature lines."""
        return self._name

    @property
    def key_id(self) -> bytes:
        """The 4-byte key ID."""
        return self._key_id

    def verifier_key(self) -> str:
        """The verifier key string ``<name>+<hex key ID>+<base64(type || public key)>``
        (the vkey format of golang.org/x/mod/sumdb/note)."""
        return _vkey(self._name, self._key_id, self._public, self.ALG)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._name!r}, key_id={self._key_id.hex()})"


class _PrivateKey(_NamedKey):
    """A named key that signs: the private half kept."""

    __slots__ = ("_key",)

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        if not isinstance(private_key, Ed25519PrivateKey):
            raise TypeError(f"a {type(self).__name__} needs an Ed25519 private key")
        super().__init__(name, private_key.public_key())
        self._key = private_key

    def public_key(self) -> Ed25519PublicKey:
        """The public half of the signing key."""
        return self._key.public_key()


class _PublicKey(_NamedKey):
    """A named key that verifies, through libsodium (see :class:`Verifier`)."""

    __slots__ = ("_key", "_sodium")

    def __init__(self, name: str, public_key: Ed25519PublicKey) -> None:
        if not isinstance(public_key, Ed25519PublicKey):
            raise TypeError(f"a {type(self).__name__} needs an Ed25519 public key")
        super().__init__(name, public_key)
        self._key = public_key
        self._sodium = VerifyKey(self._public)

    def public_key(self) -> Ed25519PublicKey:
        """The Ed25519 public key."""
        return self._key


class Signer(_PrivateKey):
    """An Ed25519 note signer: a key name and a private key (C2SP signed-note, Ed25519)."""

    __slots__ = ()

    def verifier(self) -> Verifier:
        """A :class:`Verifier` for this signer's key."""
        return Verifier(self._name, self.public_key())

    def sign(self, text: bytes) -> bytes:
        """Sign ``text`` and return one signature line, UTF-8:
        ``— <name> <base64(key ID || Ed25519 signature)>\\n`` (C2SP signed-note, Format)."""
        sig = self._key.sign(text)
        b64 = base64.b64encode(self._key_id + sig).decode("ascii")
        return f"{_SIG_PREFIX}{self._name} {b64}\n".encode()


class Verifier(_PublicKey):
    """An Ed25519 note verifier: a key name and a public key (C2SP signed-note, Ed25519).

    Signatures are checked by libsodium (PyNaCl), not OpenSSL: about a third of the time per
    checkpoint (docs/performance.md, benchmark 4). libsodium's check is the stricter of the two
    (RFC 8032 section 5.1.7 plus: no small-order key or R, canonical encodings only), so it
    accepts nothing OpenSSL refuses, and every signature that OpenSSL (our signer) makes."""

    __slots__ = ()

    @classmethod
    def from_vkey(cls, vkey: str) -> Verifier:
        """Parse a verifier key ``<name>+<8 hex digits>+<base64(0x01 || 32-byte key)>``.

        Raises NoteError if it is malformed, names another algorithm, or if the key ID does
        not match the name and key."""
        return cls(*cls._parse(vkey))

    def __reduce__(self) -> tuple[Callable[[str], Verifier], tuple[str]]:
        """Pickled as its vkey: verification hands verifiers to worker processes."""
        return (Verifier.from_vkey, (self.verifier_key(),))

    def verify(self, text: bytes, signature: bytes) -> bool:
        """Whether ``signature`` (the raw 64 bytes, without key ID) is a valid Ed25519
        signature of ``text`` (RFC 8032). The low-level check: :func:`open_note` raises."""
        if len(signature) != _ED25519_SIGNATURE_SIZE:
            return False
        try:
            self._sodium.verify(text, signature)
        except BadSignatureError:
            return False
        return True


def _vkey(name: str, kid: bytes, public: bytes, alg: int = ED25519_ALG) -> str:
    b64 = base64.b64encode(bytes([alg]) + public).decode("ascii")
    return f"{name}+{kid.hex()}+{b64}"


def parse_vkey(vkey: str) -> tuple[str, int, bytes]:
    """Split a verifier key ``<name>+<8 hex digits>+<base64(type || key material)>`` (C2SP
    signed-note, Verifier keys) into (name, signature type, key material), checking the name and
    that the key ID matches them. Raises NoteError; the caller checks the type and key size."""
    if not isinstance(vkey, str):
        raise NoteError("a verifier key is a string")
    parts = vkey.split("+", 2)
    if len(parts) != 3:
        raise NoteError("malformed verifier key: want <name>+<key id>+<key>")
    name, hex_id, key64 = parts
    if not _valid_key_name(name) or not _HEX8.fullmatch(hex_id):
        raise NoteError("malformed verifier key: bad name or key id")
    raw = _b64decode_strict(key64)
    if raw is None or not raw:
        raise NoteError("malformed verifier key: key is not base64")
    alg, key = raw[0], raw[1:]
    if bytes.fromhex(hex_id) != key_id(name, key, alg):
        raise NoteError("verifier key id does not match its name and key")
    return name, alg, key


def _b64decode_strict(s: str) -> bytes | None:
    """Standard base64 (RFC 4648 section 4) in its canonical form only, or None."""
    try:
        raw = base64.b64decode(s.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None
    if base64.b64encode(raw).decode("ascii") != s:  # padding bits must be zero
        return None
    return raw


# --------------------------------------------------------------------------------------------
# Notes (C2SP signed-note, Format and Signatures)


def _check_note_chars(text: str) -> None:
    """C2SP signed-note: no ASCII control characters (below U+0020) other than newline."""
    found = _NOTE_CONTROL.search(text)
    if found is not None:
        raise NoteError(f"note contains control character U+{ord(found[0]):04X}")


def sign_note(text: bytes, signers: Sequence[Signer]) -> bytes:
    """Sign ``text`` with each signer: ``text || "\\n" || signature lines`` (C2SP signed-note,
    Format). The text must be UTF-8 ending in a newline, without other control characters."""
    if not signers:
        raise ValueError("a signed note needs at least one signer")
    seen: set[tuple[str, bytes]] = set()
    for s in signers:
        if (s.name, s.key_id) in seen:
            raise ValueError(f"signer {s.name}+{s.key_id.hex()} given twice")
        seen.add((s.name, s.key_id))
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as e:
        raise NoteError("note text is not UTF-8") from e
    if not decoded.endswith("\n"):
        raise NoteError("note text must end in a newline")
    _check_note_chars(decoded)
    return text + b"\n" + b"".join(s.sign(text) for s in signers)


def open_note(note: bytes, verifiers: Sequence[Verifier]) -> tuple[bytes, list[str]]:
    """Open a signed note (C2SP signed-note): return its text and the names of the known keys
    whose signatures verified, in order of appearance (one entry per key; two keys of one name
    after a rotation give that name twice).

    Signatures by unknown keys (no verifier with the same name *and* key ID) are ignored.
    Raises NoteError if the note is malformed (not UTF-8, a control character other than
    newline, no blank line before the signatures, a bad signature line, more than
    :data:`MAX_SIGNATURES` signatures), if any signature by a known key fails to verify, or if
    no known key signed it."""
    text, lines = _split_note(note)
    known = _index_verifiers(verifiers)
    verified: list[str] = []
    verified_keys: set[tuple[str, bytes]] = set()
    for line in lines:
        name, kid, sig = _parse_signature_line(line)
        candidates = known.get((name, kid))
        if candidates is None:
            continue  # unknown key: ignored, as the spec requires
        if len(candidates) > 1:
            raise NoteError(f"ambiguous verifiers for key {name}+{kid.hex()}")
        if not candidates[0].verify(text, sig):
            raise NoteError(f"invalid signature by known key {name}+{kid.hex()}")
        if (name, kid) not in verified_keys:
            verified_keys.add((name, kid))
            verified.append(name)
    if not verified:
        raise NoteError("note has no verifying signature by a known key")
    return text, verified


def _split_note(note: bytes) -> tuple[bytes, list[bytes]]:
    """Check the characters of a note and split it into its text and signature lines."""
    if not isinstance(note, bytes):
        raise NoteError("a note is bytes")
    try:
        decoded = note.decode("utf-8")
    except UnicodeDecodeError as e:
        raise NoteError("note is not UTF-8") from e
    _check_note_chars(decoded)
    # The text is separated from the signatures by the last empty line.
    split = note.rfind(b"\n\n")
    if split < 0:
        raise NoteError("note has no blank line before its signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block or not block.endswith(b"\n"):
        raise NoteError("note has no signature lines, or they do not end in a newline")
    lines = block[:-1].split(b"\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"note has more than {MAX_SIGNATURES} signatures")
    return text, lines


def _index_verifiers(verifiers: Sequence[Verifier]) -> dict[tuple[str, bytes], list[Verifier]]:
    """Verifiers by (name, key ID); distinct keys sharing both are kept apart (ambiguous)."""
    known: dict[tuple[str, bytes], list[Verifier]] = {}
    for v in verifiers:
        same = known.setdefault((v.name, v.key_id), [])
        if all(o._public != v._public for o in same):  # the raw keys, kept by each
            same.append(v)
    return known


def _parse_signature_line(line: bytes) -> tuple[str, bytes, bytes]:
    """``— <name> <base64(key ID || signature)>`` -> (name, key ID, signature)."""
    if not line.startswith(_SIG_PREFIX_BYTES):
        raise NoteError("signature line does not start with an em dash and a space")
    rest = line[len(_SIG_PREFIX_BYTES) :].decode("utf-8")
    name, sep, b64 = rest.partition(" ")
    if not sep or not _valid_key_name(name):
        raise NoteError("signature line has no valid key name")
    raw = _b64decode_strict(b64)
    if raw is None or len(raw) <= _KEY_ID_SIZE:
        raise NoteError("signature line has no valid base64 signature")
    return name, raw[:_KEY_ID_SIZE], raw[_KEY_ID_SIZE:]


# --------------------------------------------------------------------------------------------
# Checkpoints (C2SP tlog-checkpoint)


@dataclass(frozen=True)
class Checkpoint:
    """A transparency log checkpoint (C2SP tlog-checkpoint, Note text): the log's origin, its
    tree size and the RFC 6962 root hash at that size, plus optional extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.origin, str) or not self.origin:
            raise NoteError("checkpoint origin must be a non-empty string")
        _check_line(self.origin, "origin")
        if (
            not isinstance(self.size, int)
            or isinstance(self.size, bool)
            or not 0 <= self.size <= _MAX_TREE_SIZE
        ):
            raise NoteError(f"checkpoint size {self.size!r} is not in [0, 2**64 - 1]")
        if not isinstance(self.root, bytes) or len(self.root) != _ROOT_SIZE:
            raise NoteError(f"checkpoint root must be {_ROOT_SIZE} bytes")
        if not isinstance(self.extensions, tuple):
            raise NoteError("checkpoint extensions must be a tuple of strings")
        for ext in self.extensions:
            if not isinstance(ext, str) or not ext:
                raise NoteError("checkpoint extension lines must be non-empty strings")
            _check_line(ext, "extension line")

    def body(self) -> bytes:
        """The note text: ``origin\\nsize\\nbase64(root)\\n`` then each extension line and a
        newline (C2SP tlog-checkpoint, Note text), UTF-8."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode("ascii")]
        lines.extend(self.extensions)
        return "".join(line + "\n" for line in lines).encode()

    @classmethod
    def parse(cls, text: bytes) -> Checkpoint:
        """Parse a checkpoint body strictly (C2SP tlog-checkpoint): at least three non-empty
        lines each ending in a newline; a decimal size without leading zeros that fits 64 bits;
        a canonical base64 root of exactly 32 bytes. Raises NoteError otherwise."""
        if not isinstance(text, bytes):
            raise NoteError("a checkpoint body is bytes")
        try:
            decoded = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise NoteError("checkpoint is not UTF-8") from e
        if not decoded.endswith("\n"):
            raise NoteError("checkpoint must end in a newline")
        lines = decoded[:-1].split("\n")
        if len(lines) < 3:
            raise NoteError("checkpoint has fewer than three lines")
        if not all(lines):
            raise NoteError("checkpoint has an empty line")
        origin, size_s, root_s, *extensions = lines
        if not _DECIMAL.fullmatch(size_s):
            raise NoteError(f"checkpoint size {size_s!r} is not a decimal without leading zeros")
        size = int(size_s)
        if size > _MAX_TREE_SIZE:
            raise NoteError("checkpoint size does not fit in 64 bits")
        root = _b64decode_strict(root_s)
        if root is None or len(root) != _ROOT_SIZE:
            raise NoteError(f"checkpoint root is not the base64 of {_ROOT_SIZE} bytes")
        return cls(origin, size, root, tuple(extensions))


def _check_line(value: str, what: str) -> None:
    if _LINE_CONTROL.search(value):
        raise NoteError(f"checkpoint {what} contains a newline or control character")
    try:
        value.encode()
    except UnicodeEncodeError as e:
        raise NoteError(f"checkpoint {what} is not valid Unicode") from e


def sign_checkpoint(cp: Checkpoint, signers: Sequence[Signer]) -> bytes:
    """The signed note of a checkpoint (C2SP tlog-checkpoint, Signatures)."""
    return sign_note(cp.body(), signers)


def open_checkpoint(
    note: bytes, verifiers: Sequence[Verifier], *, origin: str | None = None
) -> Checkpoint:
    """Open a signed checkpoint (C2SP tlog-checkpoint): :func:`open_note`, then
    :meth:`Checkpoint.parse`; with ``origin``, also NoteError unless the checkpoint is for it."""
    text, _ = open_note(note, verifiers)
    cp = Checkpoint.parse(text)
    if origin is not None and cp.origin != origin:
        raise NoteError(f"checkpoint is for origin {cp.origin!r}, not {origin!r}")
    return cp


# --------------------------------------------------------------------------------------------
# Key files (PKCS #8 and SubjectPublicKeyInfo PEM)


def generate_signing_key() -> Ed25519PrivateKey:
    """A new random Ed25519 checkpoint signing key."""
    return Ed25519PrivateKey.generate()


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    """The private key as unencrypted PKCS #8 PEM (protect the file, not the bytes)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_key_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """The public key (of a private or public key) as SubjectPublicKeyInfo PEM."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_private_key_pem(data: bytes) -> Ed25519PrivateKey:
    """Load an unencrypted PEM private key; NoteError unless it is an Ed25519 key."""
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise NoteError(f"not an unencrypted PEM private key: {e}") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise NoteError(f"checkpoint signing key must be Ed25519, not {type(key).__name__}")
    return key


def load_public_key_pem(data: bytes) -> Ed25519PublicKey:
    """Load a PEM public key; NoteError unless it is an Ed25519 key."""
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as e:
        raise NoteError(f"not a PEM public key: {e}") from e
    if not isinstance(key, Ed25519PublicKey):
        raise NoteError(f"checkpoint verifying key must be Ed25519, not {type(key).__name__}")
    return key
