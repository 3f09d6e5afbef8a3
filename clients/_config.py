"""The client's configuration file: settings an operator would otherwise repeat on every command.

Precedence, highest first: a flag, the environment (``SINERGI_SERVER``, ``SINERGI_IDENTITY``,
``SINERGI_DB``, ``SINERGI_LEDGER_KEY``, ``SINERGI_WITNESS_POLICY``, ``SINERGI_LANG``), the file
(``SINERGI_CONFIG``, else ``$XDG_CONFIG_HOME/sinergi/config.toml``,
``~/.config/sinergi/config.toml``), the default (for ``lang``: the locale, docs/i18n.md).
"""

from __future__ import annotations

import functools
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from clients._errors import UsageError

CONFIG_ENV = "SINERGI_CONFIG"
# Each setting: its environment variable, and whether it is a path (relative to the file's folder).
SETTINGS: dict[str, tuple[str, bool]] = {
    "server": ("SINERGI_SERVER", False),
    "identity": ("SINERGI_IDENTITY", True),
    "db": ("SINERGI_DB", False),
    "ledger_key": ("SINERGI_LEDGER_KEY", True),
    "witness_policy": ("SINERGI_WITNESS_POLICY", True),
    "lang": ("SINERGI_LANG", False),  # the language of the CLI's output (clients._i18n)
}


@dataclass(frozen=True)
class ConfigFile:
    """The file the settings came from (``exists`` False when there is none) and its values."""

    path: Path
    exists: bool
    values: dict[str, str]


def config_path() -> Path:
    """Where the configuration file is looked for: ``SINERGI_CONFIG``, else the XDG location."""
    explicit = os.environ.get(CONFIG_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "sinergi" / "config.toml"


def load_config(path: Path | None = None) -> ConfigFile:
    """Read the configuration file; a missing default file is no error, a missing file named by
    ``SINERGI_CONFIG``, bad TOML or an unknown key is a :class:`UsageError` naming the file."""
    explicit = path is not None or bool(os.environ.get(CONFIG_ENV))
    path = path or config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if explicit:
            raise UsageError(f"config file {path} does not exist ({CONFIG_ENV})") from None
        return ConfigFile(path, exists=False, values={})
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"config file {path}: cannot read it: {exc}") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config file {path}: not valid TOML: {exc}") from None
    values: dict[str, str] = {}
    for key, value in document.items():
        name = key.replace("-", "_")
        if name not in SETTINGS:
            known = ", ".join(SETTINGS)
            raise UsageError(f"config file {path}: unknown key {key!r} (keys: {known})")
        if not isinstance(value, str) or not value:
            raise UsageError(f"config file {path}: {key} must be a non-empty string")
        is_path = SETTINGS[name][1]
        values[name] = str(path.parent / Path(value).expanduser()) if is_path else value
    return ConfigFile(path, exists=True, values=values)


@functools.cache
def _cached(_where: Path) -> ConfigFile:
    return load_config()


def file_setting(name: str) -> str | None:
    """The file's value of setting ``name``, or None; the file is read once per process."""
    return _cached(config_path()).values.get(name)
