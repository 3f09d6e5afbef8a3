"""Alert and acknowledgement bodies encrypted at rest, under keys the database never holds.

Envelope encryption: each stored message gets a fresh random 256-bit data key; the body is
AES-256-GCM under it (random 96-bit nonce, the row's identity as associated data, so a body moved
to another row does not decrypt); the data key is wrapped with AES key wrap (RFC 3394) under a
key derived from a key-encryption key (KEK). The row keeps the KEK's id and the wrapped key.

KEKs come from a file (``--kek-file``, ``kek_file`` in the configuration) or the environment
(``SINERGI_KEK``): base64 of 32 random bytes, one per line (or comma-separated), ``#`` comments
allowed. The first KEK wraps new data keys; the others only unwrap, so rotating is adding a new
first line, and old rows stay readable as long as their KEK stays listed.

Search keys become a blind index: HMAC-SHA256 of the normalised identifier under a key derived
from each KEK (the newest for new rows; every listed KEK, and plain SHA-256 for rows written
before encryption, when searching). The ledger is untouched: its digests are over the plaintext
(docs/ledger-format.md, section 1.4).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from exchange._errors import ConfigError, Internal

KEY_BYTES = 32
NONCE_BYTES = 12
ENV = "SINERGI_KEK"
#: The execution option that carries a server's keyring on its engine (see :func:`keyring_of`).
OPTION = "sinergi_keyring"
_log = structlog.get_logger("sinergi.sealing")


def _derive(kek: bytes, purpose: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=b"sinergi/v1/" + purpose
    ).derive(kek)


def key_id(kek: bytes) -> str:
    """A KEK's public name: 16 hex digits of a hash that reveals nothing of the key."""
    return hashlib.sha256(b"sinergi/v1/kek-id\x00" + kek).hexdigest()[:16]


@dataclass(frozen=True)
class Sealed:
    """A body as stored: ``nonce || ciphertext || tag``, and its data key wrapped by ``key_id``."""

    key_id: str
    wrapped_key: bytes
    body: bytes


@dataclass(frozen=True)
class _Kek:
    id: str
    wrap: bytes
    index: bytes


class Keyring:
    """Key-encryption keys by id; the first wraps new data keys and indexes new rows."""

    def __init__(self, keks: Sequence[bytes]) -> None:
        if not keks:
            raise ConfigError("a keyring needs at least one key-encryption key")
        self._keks = [_Kek(key_id(k), _derive(k, b"wrap"), _derive(k, b"index")) for k in keks]
        self._by_id = {k.id: k for k in self._keks}
        if len(self._by_id) != len(self._keks):
            raise ConfigError("a key-encryption key is listed twice")

    @property
    def current_id(self) -> str:
        return self._keks[0].id

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(k.id for k in self._keks)

    @classmethod
    def parse(cls, text: str, source: str) -> Keyring:
        keks = []
        for number, line in enumerate(text.replace(",", "\n").splitlines(), 1):
            item = line.split("#", 1)[0].strip()
            if not item:
                continue
            try:
                kek = base64.b64decode(item, validate=True)
            except (binascii.Error, ValueError):
                raise ConfigError(f"{source}: key {number} is not base64") from None
            if len(kek) != KEY_BYTES:
                raise ConfigError(f"{source}: key {number} is not {KEY_BYTES} bytes")
            keks.append(kek)
        if not keks:
            raise ConfigError(f"{source}: no key-encryption key in it")
        return cls(keks)

    @classmethod
    def load(cls, path: Path) -> Keyring:
        try:
            text = path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"key-encryption key file {path}: cannot read: {exc}") from None
        return cls.parse(text, str(path))

    @classmethod
    def configured(
        cls, path: Path | None, environ: Mapping[str, str] = os.environ
    ) -> Keyring | None:
        """From the file if given, else from ``SINERGI_KEK``; None if neither (no encryption)."""
        if path is not None:
            return cls.load(path)
        if environ.get(ENV, "").strip():
            return cls.parse(environ[ENV], ENV)
        return None

    def seal(self, plaintext: bytes, context: bytes) -> Sealed:
        kek = self._keks[0]
        data_key = secrets.token_bytes(KEY_BYTES)
        nonce = secrets.token_bytes(NONCE_BYTES)
        body = nonce + AESGCM(data_key).encrypt(nonce, plaintext, context)
        return Sealed(kek.id, aes_key_wrap(kek.wrap, data_key), body)

    def open(self, kek_id: str, wrapped_key: bytes, body: bytes, context: bytes) -> bytes:
        """The plaintext, or :class:`Internal` if the key is unknown or the row was altered."""
        kek = self._by_id.get(kek_id)
        if kek is None:
            _log.error("stored data is sealed with a key-encryption key not loaded", kek=kek_id)
            raise Internal("stored data cannot be read")
        try:
            data_key = aes_key_unwrap(kek.wrap, bytes(wrapped_key))
            return AESGCM(data_key).decrypt(body[:NONCE_BYTES], body[NONCE_BYTES:], context)
        except (InvalidUnwrap, InvalidTag, ValueError):
            _log.error("stored data does not decrypt: altered, or moved between rows", kek=kek_id)
            raise Internal("stored data cannot be read") from None

    def index_key(self, identifier: bytes) -> str:
        """The blind index key of a normalised identifier, for a new row."""
        return hmac.new(self._keks[0].index, identifier, hashlib.sha256).hexdigest()

    def index_keys(self, identifier: bytes) -> list[str]:
        """Every key a row about ``identifier`` may be indexed under (one per listed KEK)."""
        return [hmac.new(k.index, identifier, hashlib.sha256).hexdigest() for k in self._keks]


def new_kek() -> str:
    """A fresh key-encryption key, as one line of a KEK file."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def write_kek_file(path: Path, *, rotate: bool = False) -> tuple[bool, str]:
    """Create ``path`` with one new KEK (mode 0600), or with ``rotate`` put a new KEK first and
    keep the old ones for decryption. Returns (written, current key id); an existing file is
    left alone without ``rotate``."""
    if path.exists() and not rotate:
        return False, Keyring.load(path).current_id
    kek = new_kek()
    old = path.read_text(encoding="ascii") if path.exists() else ""
    Keyring.parse(old or kek, str(path))  # an unreadable old file is refused before writing
    text = f"{kek}\n{old}" if old else f"{kek}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".new")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
    return True, Keyring.parse(text, str(path)).current_id
