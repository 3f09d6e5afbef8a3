"""Ed25519 keys on disk: the ledger's checkpoint key and a witness's cosigning key.

The ledger's key (``ledger.key`` 0600, ``ledger.pub``, ``ledger.vkey``) is an Ed25519 key of its
own, never a TLS key (docs/ledger-format.md), so that rotating TLS certificates never touches the
ledger's identity, and vice versa. A witness has its own key too (``witness.key`` 0600,
``witness.vkey`` with signature type 0x04, C2SP tlog-cosignature).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger._cosignature import Cosigner
from ledger._errors import NoteError
from ledger._note import Signer, generate_signing_key, load_private_key_pem, private_key_pem
from ledger._note import public_key_pem as _public_key_pem

KEY_FILE, PUBLIC_FILE, VERIFIER_FILE = "ledger.key", "ledger.pub", "ledger.vkey"
WITNESS_KEY_FILE, WITNESS_VERIFIER_FILE = "witness.key", "witness.vkey"
K = TypeVar("K")


def _create(directory: Path, key_file: str) -> Ed25519PrivateKey | None:
    """A new key written to ``directory / key_file`` (0600); None if that file exists."""
    key = generate_signing_key()
    try:
        fd = os.open(directory / key_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return None
    with open(fd, "wb") as out:
        out.write(private_key_pem(key))
    return key


def write_signing_key(directory: str | os.PathLike[str], name: str) -> bool:
    """Create the ledger's three key files in ``directory``; False (and nothing written) if a
    key exists."""
    directory = Path(directory)
    key = _create(directory, KEY_FILE)
    if key is None:
        return False
    (directory / PUBLIC_FILE).write_bytes(_public_key_pem(key))
    (directory / VERIFIER_FILE).write_text(Signer(name, key).verifier_key() + "\n")
    return True


def write_cosigning_key(directory: str | os.PathLike[str], name: str) -> bool:
    """Create a witness's key files in ``directory``; False (and nothing written) if a key
    exists."""
    directory = Path(directory)
    key = _create(directory, WITNESS_KEY_FILE)
    if key is None:
        return False
    (directory / WITNESS_VERIFIER_FILE).write_text(Cosigner(name, key).verifier_key() + "\n")
    return True


def _load(path: str | os.PathLike[str], make: Callable[[Ed25519PrivateKey], K]) -> K:
    path = Path(path)
    try:
        data = path.read_bytes()
        mode = path.stat().st_mode
    except OSError as exc:
        raise NoteError(f"key {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise NoteError(f"key {path} is readable by others: chmod 600 {path}")
    return make(load_private_key_pem(data))


def load_signer(path: str | os.PathLike[str], name: str) -> Signer:
    """The signer for checkpoints named ``name``; refuses a key file others can read."""
    return _load(path, lambda key: Signer(name, key))


def load_cosigner(path: str | os.PathLike[str], name: str) -> Cosigner:
    """A witness's cosigner named ``name``; refuses a key file others can read."""
    return _load(path, lambda key: Cosigner(name, key))
