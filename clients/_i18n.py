"""The languages of the command line and the audit report (docs/i18n.md): English, the source
language, and Bahasa Indonesia, for the officers at the command line and the internal-affairs
teams who read the report.

One language per process, chosen when the CLI starts (:func:`choose`, :func:`use`): ``--lang``,
else ``SINERGI_LANG``, else the configuration file's ``lang``, else the locale environment in
gettext's order (``LANGUAGE``, ``LC_ALL``, ``LC_MESSAGES``, ``LANG``), else English. Messages
come from the gettext catalog ``clients/locale/<language>/LC_MESSAGES/sinergi.mo``, compiled at
install from the committed ``.po``; a message it does not translate stays English.

What programs read stays English in every language: ``--json`` output, gRPC status messages,
ledger entries, log lines. A message that goes both to a person and to a program is a
:class:`Text`: English wherever a ``str`` goes, translated by :func:`translated` for a person.

:func:`extract` is the Babel extraction method that ``clients/locale/babel.cfg`` names: it finds
the messages of the CLI's sources as :func:`translate_help` looks them up, so the two cannot
disagree.
"""

from __future__ import annotations

import ast
import gettext
import inspect
import os
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from operator import itemgetter
from pathlib import Path
from typing import IO, Any

DOMAIN = "sinergi"
LOCALE_DIR = Path(__file__).with_name("locale")
ENGLISH = "en"
#: Every language the CLI speaks, English (the source language) first.
LANGUAGES = (ENGLISH, "id")
#: Where gettext finds the language, in its order: the first variable that is set decides.
LOCALE_VARIABLES = ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")
# "in" is Indonesian's withdrawn ISO 639 code, which Java still uses.
_ALIASES = {"in": "id", "c": ENGLISH, "posix": ENGLISH}


@dataclass(frozen=True)
class Choice:
    """The language in force and where it came from: ``flag`` (--lang), ``env``
    (SINERGI_LANG), ``file`` (the configuration file's ``lang``), ``locale`` (the locale
    variable ``variable``) or ``default``. ``asked`` is what a flag, SINERGI_LANG or the file
    asked for when the CLI does not speak it: English is used instead, and the CLI says so."""

    language: str = ENGLISH
    source: str = "default"
    variable: str | None = None
    asked: str | None = None


def language_of(tag: str) -> str | None:
    """The language of a language or locale name the CLI speaks (``id``, ``id_ID.UTF-8``,
    ``id-ID``, ``en_GB``, ``C``), or None."""
    code = tag.strip().split(".")[0].split("@")[0].replace("-", "_").split("_")[0].lower()
    code = _ALIASES.get(code, code)
    return code if code in LANGUAGES else None


def from_locale(environ: Mapping[str, str]) -> Choice:
    """The language of the locale environment, read as gettext reads it: the first variable of
    :data:`LOCALE_VARIABLES` that is set; ``LANGUAGE`` may list several (``fr:id``), the first
    one spoken wins. English, silently, for a locale the CLI does not speak."""
    for variable in LOCALE_VARIABLES:
        value = environ.get(variable)
        if value:
            for tag in value.split(":"):
                language = language_of(tag) if tag else None
                if language is not None:
                    return Choice(language, "locale", variable)
            return Choice(source="locale", variable=variable)
    return Choice()


def choose(
    flag: str | None, file: str | None, environ: Mapping[str, str], *, flag_source: str = "flag"
) -> Choice:
    """The language: ``flag`` (--lang, or SINERGI_LANG with ``flag_source`` "env"), else the
    configuration file's ``file``, else the locale environment."""
    for given, source in ((flag, flag_source), (file, "file")):
        if given:
            language = language_of(given)
            return Choice(language or ENGLISH, source, asked=None if language else given)
    return from_locale(environ)


@dataclass
class _Active:
    choice: Choice
    catalog: gettext.NullTranslations


_active = _Active(Choice(), gettext.NullTranslations())


def current() -> Choice:
    """The language in force, and where it came from."""
    return _active.choice


def use(choice: Choice) -> str | None:
    """Speak ``choice.language`` from now on: in this module's functions and in click's own
    messages (Usage:, Error: ...). Returns a warning for a person when the language asked for
    is not spoken, or its catalog was never compiled (then English), else None."""
    catalog = gettext.NullTranslations()
    warning = None
    if choice.asked is not None:
        spoken = ", ".join(LANGUAGES)
        warning = f"language {choice.asked!r} is not available ({spoken}); using English"
    elif choice.language != ENGLISH:
        try:
            catalog = gettext.translation(DOMAIN, LOCALE_DIR, [choice.language])
        except FileNotFoundError:
            warning = (
                f"the {choice.language!r} catalog is not compiled in {LOCALE_DIR} "
                "(make install compiles it); using English"
            )
            choice = replace(choice, language=ENGLISH)
    _active.choice, _active.catalog = choice, catalog
    # Click translates its own messages with the stdlib's global gettext, whose language comes
    # from the environment only: point its default domain at this catalog and name the
    # language first in LANGUAGE (for this process; session() puts both back).
    gettext.bindtextdomain(DOMAIN, str(LOCALE_DIR))
    gettext.textdomain(DOMAIN)
    os.environ["LANGUAGE"] = choice.language
    return warning


@contextmanager
def session() -> Iterator[None]:
    """Around one run of the CLI: whatever :func:`use` changes is put back afterwards, so that
    a CLI run in-process (tests, another program) leaves the process as it found it."""
    saved = _active.choice, _active.catalog
    domain = gettext.textdomain()
    language = os.environ.get("LANGUAGE")
    try:
        yield
    finally:
        _active.choice, _active.catalog = saved
        gettext.textdomain(domain)
        if language is None:
            os.environ.pop("LANGUAGE", None)
        else:
            os.environ["LANGUAGE"] = language


def _(message: str) -> str:
    """``message`` in the language in force."""
    return _active.catalog.gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    """``singular`` or ``plural`` for ``n``, in the language in force (and its plural rules)."""
    return _active.catalog.ngettext(singular, plural, n)


def pgettext(context: str, message: str) -> str:
    """``message`` in ``context`` (``category``, ``tlp``, ...), in the language in force."""
    return _active.catalog.pgettext(context, message)


def N_(message: str) -> str:  # noqa: N802 - gettext's name for "mark only"
    """Mark ``message`` for the catalog; it is translated where it is shown."""
    return message


def NP_(context: str, message: str) -> str:  # noqa: N802 - as N_, with a context
    """Mark ``message`` in ``context`` for the catalog; :func:`pgettext` translates it."""
    return message


class Text(str):
    """English text that knows its translation. As a ``str`` it is the English, so it goes
    wherever English must (``--json``, an exception's message); :meth:`translated` formats the
    translation of ``template`` with the same arguments, each translated too if it is a Text."""

    template: str
    args: dict[str, object]

    def __new__(cls, template: str, args: Mapping[str, object] | None = None) -> Text:
        text = super().__new__(cls, template.format(**args) if args else template)
        text.template = template
        text.args = dict(args or {})
        return text

    def translated(self) -> str:
        template = _(self.template)
        if not self.args:
            return template
        return template.format(**{k: translated(v) for k, v in self.args.items()})


# Composed help texts by their English: click dedents an option's help when it is declared,
# which makes a plain str of a Text; translate_help finds the Text again by its English.
_COMPOSED: dict[str, Text] = {}


def L_(template: str, **args: object) -> Text:  # noqa: N802 - a marker, like N_
    """``template`` formatted with ``args``, translated only when a person reads it
    (:func:`translated`); as a str, the English."""
    text = Text(template, args)
    if args:
        _COMPOSED[str(text)] = text
    return text


class _Joined(Text):
    items: tuple[object, ...]
    separator: str

    def translated(self) -> str:
        return self.separator.join(str(translated(item)) for item in self.items)


def joined(items: Iterable[object], separator: str = "; ") -> Text:
    """``items`` joined by ``separator`` (``"; ".join``), each translated when the whole is."""
    listed = tuple(items)
    text = _Joined(separator.join(map(str, listed)))
    text.items, text.separator = listed, separator
    return text


class _Plural(Text):
    singular: str
    plural: str
    number: int

    def translated(self) -> str:
        chosen = ngettext(self.singular, self.plural, self.number)
        return chosen.format(**{k: translated(v) for k, v in self.args.items()})


def LN_(singular: str, plural: str, count: int, **args: object) -> Text:  # noqa: N802 - as L_
    """:func:`L_` with a plural: ``singular`` or ``plural`` for ``count``, by the rules of the
    language it is read in."""
    text = _Plural((singular if count == 1 else plural).format(**args), None)
    text.singular, text.plural, text.number, text.args = singular, plural, count, dict(args)
    return text


def translated(value: Any) -> Any:  # noqa: ANN401 - a Text's argument may be anything
    """``value`` for a person: a :class:`Text` translated, anything else as it is."""
    return value.translated() if isinstance(value, Text) else value


def help_msgid(text: str) -> str:
    """A click help text (a command's docstring, an option's help) as its catalog msgid:
    dedented as click shows it, with click's ``\\b`` (keep this paragraph as it is) written
    out as backslash-b, since a control character has no place in a .po file."""
    return inspect.cleandoc(text).replace("\b", "\\b")


def translate_help(text: str) -> str:
    """A click help text in the language in force (``text`` itself when it is not translated)."""
    composed = text if isinstance(text, Text) else _COMPOSED.get(text)
    if composed is not None:
        return composed.translated()
    msgid = help_msgid(text)
    found = _(msgid)
    return text if found == msgid else found.replace("\\b", "\b")


# What extract() reads, as the Babel keyword of the same arguments: ``_`` takes the message,
# ``ngettext`` the singular and the plural, ``pgettext`` the context and the message.
_KEYWORDS = {
    "_": "_",
    "N_": "_",
    "L_": "_",
    "LN_": "ngettext",
    "ngettext": "ngettext",
    "pgettext": "pgettext",
    "NP_": "pgettext",
}
_DECLARES_COMMAND = {"command", "group"}
Extracted = tuple[int, str | None, tuple[str | None, ...], list[str]]


def extract(
    fileobj: IO[bytes],
    keywords: Collection[str],
    comment_tags: Collection[str],
    options: Mapping[str, Any],
) -> Iterator[Extracted]:
    """Babel's extraction method for the CLI's sources (``clients/locale/babel.cfg``): the
    messages of the calls in ``_KEYWORDS``, the ``help=`` string of any call (click options),
    and the docstring of every function declared a click command or group, as
    :func:`help_msgid` writes them. A help built at run time (an f-string) is not found:
    compose it with L_."""
    found: list[Extracted] = []
    for node in ast.walk(ast.parse(fileobj.read())):
        if isinstance(node, ast.Call):
            keyword = _KEYWORDS.get(_called(node.func))
            if keyword is not None:
                found.append((node.lineno, keyword, tuple(map(_string, node.args)), []))
            for argument in node.keywords:
                text = _string(argument.value)
                if argument.arg == "help" and text is not None:
                    found.append((argument.value.lineno, None, (help_msgid(text),), []))
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _declared(node):
            docstring = ast.get_docstring(node, clean=False)
            if docstring:
                found.append((node.body[0].lineno, None, (help_msgid(docstring),), []))
    return iter(sorted(found, key=itemgetter(0)))


def _called(func: ast.expr) -> str:
    if isinstance(func, ast.Name):
        return func.id
    return func.attr if isinstance(func, ast.Attribute) else ""


def _string(node: ast.expr) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _declared(function: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Whether a decorator makes ``function`` a click command or group whose help is its
    docstring (``@click.command()``, ``@alert.command("x")``, not ``help=...``)."""
    return any(
        isinstance(d, ast.Call)
        and _called(d.func) in _DECLARES_COMMAND
        and not any(k.arg == "help" for k in d.keywords)
        for d in function.decorator_list
    )
