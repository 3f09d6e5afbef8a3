"""How the command line speaks the language chosen (docs/i18n.md): ``--lang``, and the click
classes of every client command, whose help is translated when it is shown.

Click keeps a command's help (its docstring) and an option's help as declared, at import,
before any language is known, and formats them only when help is shown. :class:`Command` and
:class:`Group` put the translations in place for exactly that moment: the help of every command
that is one of them (every ``@group.command()`` of a :class:`Group`, or ``cls=Command``) follows
the language, and the server's commands, which are not, stay English.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import click
from click.core import ParameterSource

from clients._config import file_setting
from clients._errors import ClientError
from clients._i18n import L_, N_, Choice, choose, session, translate_help, use

#: The variable that stands for --lang, as SINERGI_SERVER stands for --server.
LANG_ENV = "SINERGI_LANG"
# Click's words that it translates through a variable, where extraction cannot see them.
_CLICK_WORDS = (N_("required"),)


@contextmanager
def _translated(command: click.Command, ctx: click.Context | None) -> Iterator[None]:
    """``command``'s help and (with ``ctx``) its parameters' helps translated, for the moment
    they are formatted; put back afterwards."""
    params = command.get_params(ctx) if ctx is not None else []
    saved: list[tuple[click.Command | click.Parameter, str | None]] = [
        (command, command.help),
        *((p, p.help) for p in params),
    ]
    try:
        for holder, text in saved:
            if text:
                holder.help = translate_help(text)
        yield
    finally:
        for holder, text in saved:
            holder.help = text


class _TranslatedHelp(click.Command):
    """Help (the page, and the line a group lists) in the language in force."""

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with _translated(self, ctx):
            super().format_help(ctx, formatter)

    def get_short_help_str(self, limit: int = 45) -> str:
        with _translated(self, None):
            return super().get_short_help_str(limit)


class Command(_TranslatedHelp):
    """A client command whose help follows the language in force."""


class Group(_TranslatedHelp, click.Group):
    """A group of client commands: its help, and that of the commands declared with
    ``@group.command()`` and ``@group.group()``, follows the language in force. The group that
    runs (the root, through :meth:`main`) chooses the language first."""

    command_class = Command
    group_class = type  # subgroups declared on a Group are Groups

    def main(self, *args: Any, **kwargs: Any) -> Any:  # noqa: ANN401 - click's main
        """Run with the language of SINERGI_LANG, the configuration file or the locale in
        force before anything is parsed (``--help`` may come before ``--lang``); ``--lang``,
        once parsed, overrides it."""
        with session():
            file = None
            with suppress(ClientError):  # a broken file is reported by the commands that read it
                file = file_setting("lang")
            _apply(choose(os.environ.get(LANG_ENV), file, os.environ, flag_source="env"))
            return super().main(*args, **kwargs)


def _apply(choice: Choice) -> None:
    warning = use(choice)
    if warning is not None:
        click.echo(f"sinergi: warning: {warning}", err=True)


def _chosen(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """--lang on the command line overrides what :meth:`Group.main` chose."""
    assert param.name is not None
    if value and ctx.get_parameter_source(param.name) is ParameterSource.COMMANDLINE:
        _apply(choose(value, None, os.environ))


def lang_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--lang`` for the root group; eager, so that a later ``--help`` is already translated."""
    return click.option(
        "--lang",
        envvar=LANG_ENV,
        metavar="LANG",
        is_eager=True,
        expose_value=False,
        callback=_chosen,
        help=L_(
            "Language of messages, help and the audit report: en (English, the default) or id "
            "(Bahasa Indonesia) [env {env}; config file: lang; else the locale: LANGUAGE, "
            "LC_ALL, LC_MESSAGES, LANG].",
            env=LANG_ENV,
        ),
    )(fn)
