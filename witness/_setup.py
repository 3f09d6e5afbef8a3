"""The witness directory: what ``init`` creates and what ``serve`` loads.

``--dir`` holds the TLS identity from the deployment's PKI (``tls.crt``, ``tls.key``,
``ca.crt``), the cosigning key (``witness.key`` 0600 and ``witness.vkey``, C2SP
tlog-cosignature), the trusted log keys (``logs``) and the state (``state.db``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from certs import CertsError, Identity, load_identity
from ledger import (
    WITNESS_KEY_FILE,
    WITNESS_VERIFIER_FILE,
    CosignatureVerifier,
    Cosigner,
    LedgerError,
    Verifier,
    load_cosigner,
    write_cosigning_key,
)
from witness._errors import ConfigError, StateError
from witness._logs import LOGS_FILE, TrustedLogs
from witness._state import STATE_FILE, create_state

_LOGS_HEADER = b"""\
# The ledger keys this witness trusts, one `log <vkey>` line each (C2SP tlog-policy syntax).
# A key named N is trusted for the origin N and for every origin under N/.
"""


@dataclass(frozen=True)
class WitnessSetup:
    """A loaded witness directory, ready to serve."""

    directory: Path
    cosigner: Cosigner
    logs: TrustedLogs
    identity: Identity

    @property
    def state_path(self) -> Path:
        return self.directory / STATE_FILE


@dataclass(frozen=True)
class Initialised:
    directory: Path
    vkey: str
    key_created: bool


def load_key(directory: Path) -> Cosigner:
    """The cosigner of ``witness.key``, named as ``witness.vkey`` says, and checked to match."""
    vkey_path = directory / WITNESS_VERIFIER_FILE
    try:
        vkey = vkey_path.read_text(encoding="utf-8").strip()
        name = CosignatureVerifier.from_vkey(vkey).name
        cosigner = load_cosigner(directory / WITNESS_KEY_FILE, name)
    except OSError as exc:
        raise ConfigError(f"{vkey_path}: {exc.strerror}") from None
    except (LedgerError, ValueError) as exc:
        raise ConfigError(f"{vkey_path}: {exc}") from None
    if cosigner.verifier_key() != vkey:
        raise ConfigError(f"{directory / WITNESS_KEY_FILE} is not the key of {vkey_path}")
    return cosigner


def load_setup(directory: str | os.PathLike[str]) -> WitnessSetup:
    """Load and check everything but the state; :class:`ConfigError` naming the file."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(f"{directory}: no such directory (create it with `sinergi witness init`)")
    cosigner = load_key(directory)
    logs = TrustedLogs.load(directory / LOGS_FILE)
    if not logs.keys:
        raise ConfigError(f"{directory / LOGS_FILE} lists no log key: this witness trusts nothing")
    try:
        identity = load_identity(directory)
    except CertsError as exc:
        raise ConfigError(f"TLS identity: {exc}") from None
    return WitnessSetup(directory, cosigner, logs, identity)


def init_witness(
    directory: str | os.PathLike[str], name: str, *, logs: Sequence[str] = ()
) -> Initialised:
    """Create the cosigning key named ``name`` unless one exists, the ``logs`` file with the
    vkeys ``logs`` (added to an existing file when missing from it), and an empty state.

    :class:`StateError` if a state exists: a witness starts over only when someone removes its
    state on purpose."""
    directory = Path(directory)
    state = directory / STATE_FILE
    if state.exists():
        raise StateError(f"{state} exists: this witness is initialised already")
    try:
        vkeys = [Verifier.from_vkey(vkey).verifier_key() for vkey in logs]
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        created = write_cosigning_key(directory, name)
    except (LedgerError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    except OSError as exc:
        raise ConfigError(f"{directory}: {exc.strerror}") from None
    cosigner = load_key(directory)
    if cosigner.name != name:
        raise ConfigError(
            f"{directory / WITNESS_KEY_FILE} is the key of {cosigner.name!r}, not {name!r}"
        )
    _add_logs(directory / LOGS_FILE, vkeys)
    create_state(state, cosigner.verifier_key(), int(time.time()))
    return Initialised(directory, cosigner.verifier_key(), created)


def _add_logs(path: Path, vkeys: Sequence[str]) -> None:
    """Create the logs file if absent; add the vkeys it does not list yet."""
    try:
        text = path.read_bytes() if path.exists() else _LOGS_HEADER
        if text and not text.endswith(b"\n"):
            text += b"\n"
        have = {key.verifier_key() for key in TrustedLogs.parse(text, str(path)).keys}
        added = b"".join(b"log %s\n" % v.encode() for v in dict.fromkeys(vkeys) if v not in have)
        if added or not path.exists():
            path.write_bytes(text + added)
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
