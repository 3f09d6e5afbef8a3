"""`sinergi config show`: which server, identity, database, ledger key and witness policy a command
would use, and why (a flag, the environment, the configuration file, or the default)."""

from __future__ import annotations

from typing import Any

import click
from click.core import ParameterSource

from clients._cli._common import emit, handle_errors, json_option, setting_option
from clients._cli._language import Group
from clients._client import DEFAULT_SERVER, LEDGER_KEY_FILE, WITNESS_POLICY_FILE
from clients._config import SETTINGS, load_config
from clients._i18n import NP_, _, current, pgettext
from ledger import DEFAULT_DATABASE

_DEFAULTS = {
    "server": DEFAULT_SERVER,
    "db": DEFAULT_DATABASE,
    "identity": None,
    "ledger_key": None,  # alert commands: beside the identity or its parent
    "witness_policy": None,  # beside the identity or its parent, if there is one
}


@click.group(cls=Group)
def config() -> None:
    """Show the client settings in force."""


@config.command()
@setting_option("--server", "server", default=DEFAULT_SERVER)
@setting_option("--identity", "identity")
@setting_option("--db", "db", default=DEFAULT_DATABASE)
@setting_option("--ledger-key", "ledger_key")
@setting_option("--witness-policy", "witness_policy")
@json_option
@click.pass_context
@handle_errors
def show(
    ctx: click.Context,
    server: str,
    identity: str | None,
    db: str,
    ledger_key: str | None,
    witness_policy: str | None,
    as_json: bool,
) -> None:
    """Print each client setting in force and where it came from: flag, env, file or default.

    Precedence, highest first: a flag, the environment (SINERGI_SERVER, SINERGI_IDENTITY,
    SINERGI_DB, SINERGI_LEDGER_KEY, SINERGI_WITNESS_POLICY, SINERGI_LANG), the configuration
    file (SINERGI_CONFIG, else ~/.config/sinergi/config.toml: keys server, identity, db,
    ledger_key, witness_policy, lang; relative paths are relative to the file), then the
    default. The language (lang) is sinergi's --lang, and its default is the locale (LANG).
    Give the same flags as to another command to see what it would use.

    \b
    Examples:
      sinergi config show
      SINERGI_SERVER=10.0.0.5:50051 sinergi config show --identity certs/dev/police --json
    """
    file = load_config()
    values = {
        "server": server,
        "identity": identity,
        "db": db,
        "ledger_key": ledger_key,
        "witness_policy": witness_policy,
    }
    settings: dict[str, dict[str, Any]] = {}
    for name, given in values.items():
        value = given
        source = ctx.get_parameter_source(name)
        if source is ParameterSource.COMMANDLINE:
            origin = "flag"
        elif source is ParameterSource.ENVIRONMENT:
            origin = f"env {SETTINGS[name][0]}"
        elif name in file.values:
            origin = "file"
        else:
            origin = "default"
            value = _DEFAULTS[name]
        settings[name] = {"value": value, "source": origin.split()[0]}
        if origin.startswith("env"):
            settings[name]["env"] = SETTINGS[name][0]
    settings["lang"] = _language()
    width = max(len(n) for n in settings)
    rows = [
        f"{name.ljust(width)}  {_shown(name, s['value'])}  ({_origin(s, file.path)})"
        for name, s in settings.items()
    ]
    state = "" if file.exists else _(" (absent)")
    emit(
        as_json,
        {
            "ok": True,
            "config_file": {"path": str(file.path), "exists": file.exists},
            "settings": settings,
        },
        "\n".join([_("config file: {path}").format(path=file.path) + state, *rows]),
    )


def _language() -> dict[str, Any]:
    """The language in force as a setting: where it came from, as the other settings say it
    (``--lang`` is the root group's, so this command reads what it chose)."""
    choice = current()
    found: dict[str, Any] = {"value": choice.language, "source": choice.source}
    if choice.source == "env":
        found["env"] = SETTINGS["lang"][0]
    elif choice.source == "locale":
        found["env"] = choice.variable
    return found


def _shown(name: str, value: str | None) -> str:
    if value is not None:
        return value
    if name == "ledger_key":
        return _("{file} beside the identity, or in its parent").format(file=LEDGER_KEY_FILE)
    if name == "witness_policy":
        return _("{file} beside the identity, or in its parent, if any").format(
            file=WITNESS_POLICY_FILE
        )
    return _("(none)")


# Where a setting came from, as the human output says it (--json keeps the English word).
_SOURCES = (NP_("source", "flag"), NP_("source", "default"))


def _origin(setting: dict[str, Any], path: object) -> str:
    source = str(setting["source"])
    if source == "env":
        return _("env {variable}").format(variable=setting["env"])
    if source == "locale":
        return _("locale {variable}").format(variable=setting["env"])
    if source == "file":
        return _("file {path}").format(path=path)
    return pgettext("source", source)
