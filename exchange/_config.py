"""The server's configuration file (TOML): one flat table whose keys are the `serve` flags.

A key means exactly what the flag of the same name means (relative paths are relative to the
working directory, as on the command line), and a flag given on the command line wins over the
file. Mistakes are reported with the key and its line: tomllib gives no positions, so the line is
found by scanning the text for the key.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from exchange._errors import ConfigError

#: key -> (expected kind, what to call it in a message)
_KINDS: dict[str, str] = {
    "listen": "string",
    "database": "string",
    "pki": "string",
    "identity": "string",
    "ledger_key": "string",
    "extra_ledger_keys": "list of strings",
    "policy": "string",
    "crl": "string",
    "crl_grace_seconds": "number",
    "crl_state": "string",
    "kek_file": "string",
    "witness_policy": "string",
    "trust_domain": "string",
    "metrics_listen": "string",
    "reflection": "boolean",
    "stall_seconds": "number",
    "grace_seconds": "number",
    "health_interval_seconds": "number",
    "max_message_bytes": "integer",
    "rate_limit": "number",
    "rate_burst": "integer",
    "keepalive_seconds": "number",
    "max_connection_age_seconds": "number",
}
KEYS = tuple(_KINDS)
_POSITIVE = (
    "stall_seconds",
    "health_interval_seconds",
    "max_message_bytes",
    "rate_burst",
    "keepalive_seconds",
)


@dataclass(frozen=True)
class ConfigFile:
    path: Path
    values: Mapping[str, object]
    text: str

    def where(self, key: str) -> str:
        """``file:line`` of ``key``, or just the file when it cannot be found."""
        line = line_of(self.text, key)
        return f"{self.path}:{line}" if line else str(self.path)


def line_of(text: str, key: str) -> int | None:
    """The first line that assigns ``key`` (bare or quoted) or opens a table named ``key``."""
    name = re.escape(key)
    pattern = re.compile(
        rf"""^\s*(?:(?:{name}|"{name}"|'{name}')\s*=|\[\[?\s*(?:{name}|"{name}"|'{name}')\s*[\].])"""
    )
    for number, line in enumerate(text.splitlines(), start=1):
        if pattern.match(line):
            return number
    return None


def _kind_of(value: object) -> str:
    for kind, types in (
        ("boolean", bool),
        ("integer", int),
        ("number", float),
        ("string", str),
        ("list", list),
        ("table", dict),
    ):
        if isinstance(value, types):
            return kind
    return type(value).__name__  # dates and times


def _a(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _fits(kind: str, value: object) -> bool:
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "string":
        return isinstance(value, str)
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def load_config(path: Path) -> ConfigFile:
    """Read and validate ``path``; every mistake is a :class:`ConfigError` naming key and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: the configuration file is not UTF-8") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    config = ConfigFile(path, doc, text)
    for key, value in doc.items():
        kind = _KINDS.get(key)
        if kind is None:
            raise ConfigError(
                f"{config.where(key)}: unknown key {key!r} (known: {', '.join(KEYS)})"
            )
        if not _fits(kind, value):
            raise ConfigError(
                f"{config.where(key)}: {key!r} must be {_a(kind)}, not {_a(_kind_of(value))}"
            )
        if key in _POSITIVE and value <= 0:
            raise ConfigError(f"{config.where(key)}: {key!r} must be greater than 0")
        if key in ("grace_seconds", "crl_grace_seconds") and value < 0:
            raise ConfigError(f"{config.where(key)}: {key!r} must not be negative")
    return config
