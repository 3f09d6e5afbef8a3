"""The ledger's signing key on disk: ``ledger.key`` (0600), ``ledger.pub`` and ``ledger.vkey``.

The signing key is an Ed25519 key of its own, never a TLS key (docs/ledger-format.md), so that
rotating TLS certificates never touches the ledger's identity, and vice versa.
"""

from __future__ import annotations

import os
from pathlib import Path

from ledger._errors import NoteError
from ledger._note import Signer, generate_signing_key, load_private_key_pem, private_key_pem
from ledger._note import public_key_pem as _public_key_pem

KEY_FILE, PUBLIC_FILE, VERIFIER_FILE = "ledger.key", "ledger.pub", "ledger.vkey"


def write_signing_key(directory: str | os.PathLike[str], name: str) -> bool:
    """Create the three key files in ``directory``; False (and nothing written) if a key exists."""
    directory = Path(directory)
    key_path = directory / KEY_FILE
    key = generate_signing_key()
    try:
        fd = os.open(key_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return False
    with open(fd, "wb") as out:
        out.write(private_key_pem(key))
    (directory / PUBLIC_FILE).write_bytes(_public_key_pem(key))
    (directory / VERIFIER_FILE).write_text(Signer(name, key).verifier_key() + "\n")
    return True


def load_signer(path: str | os.PathLike[str], name: str) -> Signer:
    """The signer for checkpoints named ``name``; refuses a key file others can read."""
    path = Path(path)
    try:
        data = path.read_bytes()
        mode = path.stat().st_mode
    except OSError as exc:
        raise NoteError(f"ledger key {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise NoteError(f"ledger key {path} is readable by others: chmod 600 {path}")
    return Signer(name, load_private_key_pem(data))
