"""What every `sinergi` command shares: options, output (human or --json) and exit codes.

Exit codes: 0 ok, 1 refused or verification failed, 2 usage (bad flags, missing files), 3 the
exchange is unreachable. With --json the last line on stdout is one JSON object; streams print one
object per line.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar

import click
from click.decorators import FC

from certs import CertsError, SpiffeId
from clients._client import DEFAULT_SERVER, LEDGER_KEY_FILE, WITNESS_POLICY_FILE
from clients._config import SETTINGS, file_setting
from clients._errors import ClientError
from ledger import LedgerError

P = ParamSpec("P")
R = TypeVar("R")

#: The development PKI (`sinergi pki dev`), and so the commands' examples and defaults.
DEV_PKI = "certs/dev"


class ConfigFileError(click.ClickException):
    """A broken configuration file, met while click fills in defaults: exit 2, one line."""

    exit_code = 2

    def show(self, file: Any = None) -> None:  # noqa: ANN401 - click's signature
        click.echo(f"sinergi: {self.format_message()}", err=True)


def from_file(name: str, default: str | None = None) -> Callable[[], str | None]:
    """An option's default: the configuration file's value, else ``default``. Click calls it
    only when neither the flag nor the environment gave a value, which is the precedence."""

    def value() -> str | None:
        try:
            return file_setting(name) or default
        except ClientError as exc:
            raise ConfigFileError(exc.message) from None

    return value


def setting_option(
    flag: str,
    name: str,
    text: str = "",
    *,
    default: str | None = None,
    **attrs: Any,  # noqa: ANN401 - click.option's keywords
) -> Callable[[FC], FC]:
    """``flag`` for the client setting ``name`` (:data:`clients._config.SETTINGS`): when the flag
    is not given, the setting's environment variable, then the configuration file, then
    ``default``. Its help is ``text`` followed by where else the value may come from."""
    env = SETTINGS[name][0]
    shown = f"{text} [env {env}; config file: {name}]." if text else None
    return click.option(flag, envvar=env, default=from_file(name, default), help=shown, **attrs)


@functools.lru_cache(maxsize=4096)  # a ledger names few principals, each many times
def spiffe_id(principal: str) -> SpiffeId | None:
    """``principal`` (of a ledger entry, of a message) as a SPIFFE ID, or None for anything else,
    such as an unknown peer: how the commands read principals (their syntax is certs')."""
    try:
        return SpiffeId.parse(principal)
    except CertsError:
        return None


#: What the CLI loads by name, only when it is used (docs/decisions/0005 and 0015): the server's
#: commands and the one server function an auditor command needs (``clients`` never imports
#: ``exchange``), the witness's commands and the development witnesses (nor ``witness``), and
#: the auditor commands that read a database through ``ledger.store``, so that the agency
#: commands load neither the server nor SQLAlchemy.
BY_NAME = {
    "serve": "exchange._cli:serve",
    "db": "exchange._cli:db",
    "ledger": "clients._cli._ledger:ledger",
    "audit": "clients._cli._audit:audit",
    "stored_message": "exchange:stored_message",
    "witness": "clients._cli._witness:witness",
    "witness_init": "witness._cli:init",
    "witness_serve": "witness._cli:serve",
    "dev_witnesses": "witness:create_dev_witnesses",
    "witness_error": "witness:WitnessError",
}


def by_name(name: str) -> Any:  # noqa: ANN401 - a command or a function, checked by the caller
    """The object ``BY_NAME[name]`` names, imported now."""
    module, _, attr = BY_NAME[name].partition(":")
    return getattr(importlib.import_module(module), attr)


class LazyGroup(click.Group):
    """A group whose commands ``lazy`` are imported when used (click docs, "Lazily Loading
    Subcommands"): names in :data:`BY_NAME`, or a mapping of command names to such names."""

    def __init__(
        self,
        *args: Any,  # noqa: ANN401 - click.Group's
        lazy: Sequence[str] | Mapping[str, str] = (),
        **kwargs: Any,  # noqa: ANN401
    ) -> None:
        super().__init__(*args, **kwargs)
        self._lazy = dict(lazy) if isinstance(lazy, Mapping) else {name: name for name in lazy}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self._lazy])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self._lazy:
            command = by_name(self._lazy[cmd_name])
            assert isinstance(command, click.Command)
            return command
        return super().get_command(ctx, cmd_name)


# Words that say a check passed, shown in green on a terminal.
_VERIFIED = re.compile(r"\((?:receipt|proof|[0-9]+ hash(?:es)?) verified\)|^ledger intact")


def colour() -> bool | None:
    """Click's ``color`` argument: None lets click colour a terminal and strip styles in a
    pipe; False when NO_COLOR is set to anything (https://no-color.org)."""
    return False if os.environ.get("NO_COLOR") else None


def emit(as_json: bool, obj: dict[str, Any], human: str) -> None:
    """Print a result: ``human`` text, or ``obj`` as one JSON line with --json."""
    if as_json:
        click.echo(json.dumps(obj, sort_keys=True))
    else:
        painted = _VERIFIED.sub(lambda m: click.style(m.group(0), fg="green"), human)
        click.echo(painted, color=colour())
    sys.stdout.flush()


def fail(as_json: bool, message: str, code: int, details: dict[str, Any] | None = None) -> None:
    """Report a failure on stderr (and as the last JSON line with --json), then exit ``code``."""
    click.echo(click.style(f"sinergi: {message}", fg="red", bold=True), err=True, color=colour())
    if as_json:
        click.echo(json.dumps({"ok": False, "error": message, **(details or {})}, sort_keys=True))
    sys.exit(code)


def handle_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn library errors into a one-line reason and the documented exit code, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        as_json = bool(kwargs.get("as_json", False))
        try:
            return fn(*args, **kwargs)
        except ClientError as exc:
            details: dict[str, Any] = {}
            if exc.violations:
                details["violations"] = [{"field": f, "description": d} for f, d in exc.violations]
                for field, description in exc.violations:
                    click.echo(f"  {field}: {description}", err=True)
            code = getattr(exc, "code", None)
            if code is not None:
                details["code"] = code.name
            details.update(exc.details)
            fail(as_json, exc.message, exc.exit_code, details)
        except (CertsError, LedgerError, OSError) as exc:
            fail(as_json, str(exc), 2)
        raise AssertionError("unreachable")  # fail() exits

    return wrapper


json_option = click.option(
    "--json", "as_json", is_flag=True, help="Machine-readable output: one JSON object per line."
)
identity_option = setting_option(
    "--identity",
    "identity",
    "Identity directory with tls.crt, tls.key and ca.crt",
    required=True,
    type=click.Path(file_okay=False, path_type=str),
)
server_option = setting_option(
    "--server", "server", "Exchange address", default=DEFAULT_SERVER, show_default=DEFAULT_SERVER
)
ledger_key_option = setting_option(
    "--ledger-key",
    "ledger_key",
    f"The ledger's verifier key ({LEDGER_KEY_FILE}); default: beside the identity or its parent",
    type=click.Path(dir_okay=False, path_type=str),
)
witness_policy_option = setting_option(
    "--witness-policy",
    "witness_policy",
    "The witness policy (C2SP tlog-policy) whose quorum checkpoints need; default: "
    f"{WITNESS_POLICY_FILE} beside the identity or its parent, if there is one",
    type=click.Path(dir_okay=False, path_type=str),
)
