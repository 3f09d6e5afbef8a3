"""The log keys a witness trusts, and for which origins (C2SP tlog-witness: "each witness is
configured with a list of supported log public keys").

The ``logs`` file holds ``log <vkey> [<url>]`` lines read by :func:`ledger.parse_logs`, the
tlog-policy rules. A key named ``N`` is trusted for the origin ``N`` and for every origin that
starts with ``N/``: Sinergi gives each ledger it creates its own origin under its deployment's
key name, and each origin is a log of its own in the witness's state.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ledger import LedgerError, Verifier, parse_logs, under_key
from witness._errors import ConfigError

LOGS_FILE = "logs"


@dataclass(frozen=True)
class TrustedLogs:
    """The trusted log keys, each with the URL its line gave (unused by the witness)."""

    keys: tuple[Verifier, ...]

    @classmethod
    def parse(cls, text: bytes, source: str = LOGS_FILE) -> TrustedLogs:
        """:class:`ConfigError` naming the line for a malformed file."""
        try:
            return cls(tuple(verifier for verifier, _ in parse_logs(text, source)))
        except LedgerError as exc:
            raise ConfigError(str(exc)) from None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TrustedLogs:
        path = Path(path)
        try:
            text = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{path}: {exc.strerror}") from None
        return cls.parse(text, str(path))

    def for_origin(self, origin: str) -> list[Verifier]:
        """The keys trusted for ``origin``: those named ``origin`` or a prefix of it followed
        by ``/``. Empty: the origin is unknown (404)."""
        return [key for key in self.keys if under_key(origin, key.name)]

    def vkeys(self) -> list[str]:
        return [key.verifier_key() for key in self.keys]
