"""`sinergi alert show | list | search | acks`: reading alert threads and their acknowledgements.

The exchange answers with what your agency may see and records every read (READ, SEARCH)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import click

from clients._alerts import enum_value
from clients._cli._alert_io import (
    parse_moment,
    record,
    show_text,
    signed_record,
    split_list,
    table,
    view_record,
    views_output,
    when,
)
from clients._cli._common import (
    emit,
    handle_errors,
    identity_option,
    json_option,
    ledger_key_option,
    server_option,
    witness_policy_option,
)
from clients._cli._language import Command
from clients._cli._names import response
from clients._cli._related import related_text
from clients._client import ExchangeClient
from clients._i18n import N_, _
from sinergi.v1 import alert_pb2, exchange_pb2

P = ParamSpec("P")
R = TypeVar("R")
MAX_PAGE = 200  # the exchange's largest page


def _limit_option(fn: Callable[P, R]) -> Callable[P, R]:
    return click.option(
        "--limit",
        type=click.IntRange(min=0),
        default=50,
        show_default=True,
        help="At most N alerts, newest first; 0 for all.",
    )(fn)


def _page_size(limit: int) -> int:
    return min(limit, MAX_PAGE) if limit else MAX_PAGE


def _emit_views(views: list[exchange_pb2.AlertView], as_json: bool) -> None:
    emit(
        as_json,
        {"ok": True, "count": len(views), "alerts": [view_record(v) for v in views]},
        views_output(views, _("no alerts found")),
    )


@click.command(cls=Command)
@click.argument("alert_id")
@identity_option
@server_option
@ledger_key_option
@witness_policy_option
@json_option
@handle_errors
def show(
    alert_id: str,
    identity: str,
    server: str,
    ledger_key: str | None,
    witness_policy: str | None,
    as_json: bool,
) -> None:
    """Show an alert thread: its state, the content in force, its history, and the newest
    alerts your agency may see that share a subject identifier with it (`alert related` lists
    them all; the exchange records each one shown).

    Any message id of the thread names it. An alert your agency may not see is NOT_FOUND.

    \b
    Example:
      sinergi alert show 6f1c...e2 --identity certs/dev/police
    """
    with ExchangeClient(
        identity, server, ledger_key=ledger_key, witness_policy=witness_policy
    ) as client:
        view = client.get_alert(alert_id)  # every message's signature checked, or an error
        signed = client.verify_sender(view.current, view.history[0] if view.history else None)
    record = {"ok": True, **view_record(view), "signed_by": signed_record(signed)}
    more = bool(view.related_next_page_token)
    related = related_text(view.related, more, view.id)
    emit(as_json, record, show_text(view, signed) + "\n\n" + related)


@click.command(name="list", cls=Command)
@identity_option
@server_option
@ledger_key_option
@witness_policy_option
@click.option("--category", "categories", multiple=True, help="Only these (repeatable, or A,B).")
@click.option("--sender", default="", help="Only alerts sent by this agency.")
@click.option("--since", default=None, help="Sent at or after: ISO 8601 date or datetime (UTC).")
@click.option("--until", default=None, help="Sent before; a bare date includes that day.")
@click.option(
    "--state",
    "states",
    multiple=True,
    help="ACTIVE, UPDATED, CANCELLED or EXPIRED (repeatable, or A,B).",
)
@_limit_option
@json_option
@handle_errors
def list_alerts(
    identity: str,
    server: str,
    ledger_key: str | None,
    witness_policy: str | None,
    categories: tuple[str, ...],
    sender: str,
    since: str | None,
    until: str | None,
    states: tuple[str, ...],
    limit: int,
    as_json: bool,
) -> None:
    """List the alert threads your agency may see, newest first.

    \b
    Examples:
      sinergi alert list --identity certs/dev/police --category PASSPORT_HOLD --state ACTIVE
      sinergi alert list --identity certs/dev/police --sender immigration --since 2025-03-01 --json
    """
    wanted = [
        enum_value(alert_pb2.Category, "CATEGORY_", c, "category")
        for item in categories
        for c in split_list(item)
    ]
    in_states = [
        enum_value(alert_pb2.AlertState, "ALERT_STATE_", s, "state")
        for item in states
        for s in split_list(item)
    ]
    after = parse_moment(since, "--since") if since else None
    before = parse_moment(until, "--until", end_of_day=True) if until else None
    with ExchangeClient(
        identity, server, ledger_key=ledger_key, witness_policy=witness_policy
    ) as client:
        found = client.list_alerts(
            categories=wanted,
            sender_agency=sender.strip(),
            sent_after=after,
            sent_before=before,
            states=in_states,
            page_size=_page_size(limit),
        )
        views = list(itertools.islice(found, limit or None))
    _emit_views(views, as_json)


@click.command(cls=Command)
@identity_option
@server_option
@ledger_key_option
@witness_policy_option
@click.option("--passport", default=None, help="Passport number.")
@click.option("--nik", default=None, help="NIK (16 digits).")
@click.option("--imei", default=None, help="IMEI (15 digits).")
@click.option("--name", default=None, help="A person's name (with --birth-date).")
@click.option("--birth-date", default=None, help="YYYY-MM-DD (with --name).")
@_limit_option
@json_option
@handle_errors
def search(
    identity: str,
    server: str,
    ledger_key: str | None,
    witness_policy: str | None,
    passport: str | None,
    nik: str | None,
    imei: str | None,
    name: str | None,
    birth_date: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Find alert threads by passport, NIK, IMEI, or name and birth date.

    Give exactly one identifier: --passport, --nik, --imei, or --name with --birth-date. The
    ledger records that you searched and a salted digest of the query, never the query.

    \b
    Examples:
      sinergi alert search --identity certs/dev/police --passport C1234567
      sinergi alert search --identity certs/dev/labour --name "Siti Aminah" --birth-date 1990-01-31
    """
    with ExchangeClient(
        identity, server, ledger_key=ledger_key, witness_policy=witness_policy
    ) as client:
        found = client.search_alerts(
            passport=passport,
            nik=nik,
            imei=imei,
            name=name,
            birth_date=birth_date,
            page_size=_page_size(limit),
        )
        views = list(itertools.islice(found, limit or None))
    _emit_views(views, as_json)


@click.command(cls=Command)
@click.argument("alert_id")
@identity_option
@server_option
@ledger_key_option
@witness_policy_option
@json_option
@handle_errors
def acks(
    alert_id: str,
    identity: str,
    server: str,
    ledger_key: str | None,
    witness_policy: str | None,
    as_json: bool,
) -> None:
    """List the acknowledgements of an alert.

    All of them if your agency sent the alert (hit reporting), else your agency's own.

    \b
    Example:
      sinergi alert acks 6f1c...e2 --identity certs/dev/immigration
    """
    with ExchangeClient(
        identity, server, ledger_key=ledger_key, witness_policy=witness_policy
    ) as client:
        found = client.acknowledgements(alert_id)
    rows = (
        [
            a.agency,
            a.principal,
            response(a.response),
            a.case_reference or "-",
            when(a.time),
            " ".join(a.note.split()) or "-",
        ]
        for a in found
    )
    headers = (
        N_("AGENCY"),
        N_("PRINCIPAL"),
        N_("RESPONSE"),
        N_("CASE REF"),
        N_("TIME"),
        N_("NOTE"),
    )
    emit(
        as_json,
        {
            "ok": True,
            "alert_id": alert_id,
            "count": len(found),
            "acknowledgements": [record(a) for a in found],
        },
        table(headers, rows) if found else _("no acknowledgements of {id}").format(id=alert_id),
    )
