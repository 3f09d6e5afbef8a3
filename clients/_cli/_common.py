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
from clients._cli._language import Group
from clients._client import DEFAULT_SERVER, LEDGER_KEY_FILE, WITNESS_POLICY_FILE
from clients._config import SETTINGS, file_setting
from clients._errors import ClientError
from clients._i18n import L_, N_, Text, _, ngettext, translated
from ledger import LedgerError, Witnessing

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
    text: str | Text = "",
    *,
    default: str | None = None,
    **attrs: Any,  # noqa: ANN401 - click.option's keywords
) -> Callable[[FC], FC]:
    """``flag`` for the client setting ``name`` (:data:`clients._config.SETTINGS`): when the flag
    is not given, the setting's environment variable, then the configuration file, then
    ``default``. Its help is ``text`` (marked with N_, or an L_) followed by where else the
    value may come from."""
    env = SETTINGS[name][0]
    described = text if isinstance(text, Text) else Text(text)
    shown = (
        L_("{text} [env {env}; config file: {name}].", text=described, env=env, name=name)
        if text
        else None
    )
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
    "monitor": "clients._cli._monitor:monitor",
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


class LazyGroup(Group):
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


def receipt_verified() -> str:
    """The words that say a receipt verified (in green on a terminal)."""
    return _("(receipt verified)")


def proof_verified() -> str:
    """The words that say a proof verified (in green on a terminal)."""
    return _("(proof verified)")


def hashes_verified(count: int) -> str:
    """The words that say ``count`` hashes of a proof verified (in green on a terminal)."""
    return ngettext("({n} hash verified)", "({n} hashes verified)", count).format(n=count)


def ledger_intact() -> str:
    """The verdict on a ledger that verified, which starts its line (in green on a terminal)."""
    return _("ledger intact")


def witnessing_line(witnessing: Witnessing) -> str:
    """What a witness policy made of a receipt or checkpoint, in one line for a person:
    ``Witnessing.describe()`` in the language in force."""
    if witnessing.cosigned is None:
        return _("not yet witnessed: no checkpoint has its quorum yet")
    return _("witnessed: checkpoint of size {size} cosigned by {who} (quorum: {quorum})").format(
        size=witnessing.cosigned.size,
        who=", ".join(witnessing.cosigners),
        quorum=witnessing.quorum,
    )


def _verified() -> re.Pattern[str]:
    """What emit() paints green, in the language in force: the words above."""
    hashes = (re.escape(hashes_verified(n)).replace("12345", "[0-9]+") for n in (1, 12345))
    words = [re.escape(receipt_verified()), re.escape(proof_verified()), *hashes]
    return re.compile(f"(?:{'|'.join(words)})|^{re.escape(ledger_intact())}")


def colour() -> bool | None:
    """Click's ``color`` argument: None lets click colour a terminal and strip styles in a
    pipe; False when NO_COLOR is set to anything (https://no-color.org)."""
    return False if os.environ.get("NO_COLOR") else None


def emit(as_json: bool, obj: dict[str, Any], human: str) -> None:
    """Print a result: ``human`` text, or ``obj`` as one JSON line with --json."""
    if as_json:
        click.echo(json.dumps(obj, sort_keys=True))
    else:
        painted = _verified().sub(lambda m: click.style(m.group(0), fg="green"), human)
        click.echo(painted, color=colour())
    sys.stdout.flush()


def fail(as_json: bool, message: str, code: int, details: dict[str, Any] | None = None) -> None:
    """Report a failure on stderr (and as the last JSON line with --json), then exit ``code``.
    A :class:`Text` message is translated on stderr and stays English in the JSON."""
    shown = translated(message)
    click.echo(click.style(f"sinergi: {shown}", fg="red", bold=True), err=True, color=colour())
    if as_json:
        error = str(message)
        click.echo(json.dumps({"ok": False, "error": error, **(details or {})}, sort_keys=True))
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
    N_("Identity directory with tls.crt, tls.key and ca.crt"),
    required=True,
    type=click.Path(file_okay=False, path_type=str),
)
server_option = setting_option(
    "--server",
    "server",
    N_("Exchange address"),
    default=DEFAULT_SERVER,
    show_default=DEFAULT_SERVER,
)
ledger_key_option = setting_option(
    "--ledger-key",
    "ledger_key",
    L_(
        "The ledger's verifier key ({file}); default: beside the identity or its parent",
        file=LEDGER_KEY_FILE,
    ),
    type=click.Path(dir_okay=False, path_type=str),
)
witness_policy_option = setting_option(
    "--witness-policy",
    "witness_policy",
    L_(
        "The witness policy (C2SP tlog-policy) whose quorum checkpoints need; default: "
        "{file} beside the identity or its parent, if there is one",
        file=WITNESS_POLICY_FILE,
    ),
    type=click.Path(dir_okay=False, path_type=str),
)
