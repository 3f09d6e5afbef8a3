"""`sinergi alert related`, and the related alerts `show` and `watch` print: the alert threads
that share a subject identifier with another (correlation), among those your agency may see.

The exchange answers with what your agency may see and records each related alert it shows."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import click

from clients._alerts import enum_name
from clients._cli import _names
from clients._cli._alert_io import record, table, when
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
from clients._client import ExchangeClient
from clients._i18n import N_, _
from sinergi.v1 import exchange_pb2

MAX_PAGE = 200  # the exchange's largest page
HEADERS = (N_("ID"), N_("CATEGORY"), N_("SENDER"), N_("SENT"), N_("STATE"), N_("SHARED"))


def shared_kinds(related: exchange_pb2.RelatedAlert) -> str:
    """The kinds of identifier shared, as the ledger names them: ``passport,imei``."""
    return ",".join(
        enum_name(exchange_pb2.IdentifierKind, "IDENTIFIER_KIND_", k).lower()
        for k in related.shared
    )


def related_row(related: exchange_pb2.RelatedAlert) -> list[str]:
    return [
        related.id,
        _names.category(related.category),
        related.sender_agency,
        when(related.sent),
        _names.state(related.state),
        shared_kinds(related),
    ]


def related_records(related: Sequence[exchange_pb2.RelatedAlert]) -> list[dict[str, Any]]:
    return [record(r) for r in related]


def related_text(
    related: Sequence[exchange_pb2.RelatedAlert], more: bool, thread_id: str, indent: str = ""
) -> str:
    """The related alerts as a table (with a pointer to the rest when ``more``), or "none"."""
    if not related:
        return indent + _("related: none")
    lines = [indent + _("related (they share a subject identifier):")]
    lines += [
        f"{indent}  {line}" for line in table(HEADERS, map(related_row, related)).splitlines()
    ]
    if more:
        lines.append(f"{indent}  " + _("more: sinergi alert related {id}").format(id=thread_id))
    return "\n".join(lines)


def delivery_text(delivery: exchange_pb2.Delivery) -> str:
    """What `watch` prints under a delivery that carries related alerts ("" if none)."""
    if not delivery.related:
        return ""
    alert = delivery.alert
    thread = alert.references[0] if alert.references else alert.id
    return "\n" + related_text(
        delivery.related, bool(delivery.related_next_page_token), thread, indent="    "
    )


@click.command(cls=Command)
@click.argument("alert_id")
@identity_option
@server_option
@ledger_key_option
@witness_policy_option
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help="At most N related alerts, newest first; 0 for all.",
)
@json_option
@handle_errors
def related(
    alert_id: str,
    identity: str,
    server: str,
    ledger_key: str | None,
    witness_policy: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List the alerts that share a subject identifier with ALERT_ID.

    A passport number, NIK, IMEI, a name with a birth date, an organisation's name or
    registration number: only the kinds they share are shown, never the identifier. Only alerts
    your agency may see are listed, and cancelled ones are not; the exchange records each one
    shown to you. `sinergi alert show` opens one.

    \b
    Examples:
      sinergi alert related 6f1c...e2 --identity certs/dev/police
      sinergi alert related 6f1c...e2 --identity certs/dev/labour --limit 0 --json
    """
    page_size = min(limit, MAX_PAGE) if limit else MAX_PAGE
    with ExchangeClient(
        identity, server, ledger_key=ledger_key, witness_policy=witness_policy
    ) as client:
        found = list(
            itertools.islice(client.related_alerts(alert_id, page_size=page_size), limit or None)
        )
    emit(
        as_json,
        {"ok": True, "alert_id": alert_id, "count": len(found), "related": related_records(found)},
        table(HEADERS, map(related_row, found))
        if found
        else _("no related alerts of {id}").format(id=alert_id),
    )
