"""`sinergi alert`: publish, watch and acknowledge alerts."""

from __future__ import annotations

import click
from google.protobuf import json_format

from clients._alerts import enum_name, enum_value, new_alert, parse_subjects
from clients._cli._common import (
    emit,
    handle_errors,
    identity_option,
    json_option,
    ledger_key_option,
    server_option,
)
from clients._client import ExchangeClient
from sinergi.v1 import alert_pb2


@click.group()
def alert() -> None:
    """Publish, watch and acknowledge alerts."""


@alert.command()
@identity_option
@server_option
@ledger_key_option
@click.option(
    "--category", required=True, help="e.g. PASSPORT_HOLD, TRAFFICKING_SUSPECT, IMEI_FRAUD."
)
@click.option("--to", "recipients", required=True, help="Recipient agencies, comma-separated.")
@click.option("--summary", required=True, help="One line saying what happened.")
@click.option(
    "--subject",
    "subjects",
    multiple=True,
    help="key=value[,key=value]: passport, nik, nationality, name, birth-date; imei; organisation.",
)
@click.option("--details", default="", help="Free text.")
@click.option(
    "--tlp", default="AMBER", show_default=True, help="RED, AMBER+STRICT, AMBER, GREEN, CLEAR."
)
@click.option("--severity", default="UNKNOWN", show_default=True)
@click.option("--urgency", default="UNKNOWN", show_default=True)
@click.option("--certainty", default="UNKNOWN", show_default=True)
@click.option("--status", default="ACTUAL", show_default=True, help="ACTUAL, EXERCISE or TEST.")
@click.option("--idempotency-key", default=None, help="Reuse to retry safely (default: random).")
@json_option
@handle_errors
def publish(
    identity: str,
    server: str,
    ledger_key: str | None,
    category: str,
    recipients: str,
    summary: str,
    subjects: tuple[str, ...],
    details: str,
    tlp: str,
    severity: str,
    urgency: str,
    certainty: str,
    status: str,
    idempotency_key: str | None,
    as_json: bool,
) -> None:
    """Publish an alert; succeeds only with a verified ledger receipt.

    \b
    Example:
      sinergi alert publish --identity certs/dev/immigration --category PASSPORT_HOLD \\
        --to police,labour --subject passport=C1234567 --summary "Applicant held"
    """
    message = new_alert(
        category=category,
        recipients=[r.strip() for r in recipients.split(",") if r.strip()],
        summary=summary,
        subjects=parse_subjects(subjects),
        details=details,
        status=status,
        severity=severity,
        urgency=urgency,
        certainty=certainty,
        handling=tlp,
    )
    with ExchangeClient(identity, server, ledger_key=ledger_key) as client:
        result = client.publish(message, idempotency_key=idempotency_key)
    receipt = result.receipt
    emit(
        as_json,
        {
            "ok": True,
            "alert_id": result.alert_id,
            "seq": receipt.seq,
            "entry_hash": receipt.entry.hash.hex(),
            "checkpoint_size": receipt.checkpoint.size,
            "checkpoint_root": receipt.checkpoint.root.hex(),
        },
        f"published {result.alert_id}\n"
        f"  ledger entry {receipt.seq}, included in signed checkpoint of size "
        f"{receipt.checkpoint.size} (receipt verified)",
    )


@alert.command()
@identity_option
@server_option
@ledger_key_option
@click.option("--after", default=0, show_default=True, help="Resume after this cursor.")
@click.option("--category", "categories", multiple=True, help="Only these categories (repeatable).")
@click.option("--count", type=click.IntRange(min=1), default=None, help="Stop after N alerts.")
@json_option
@handle_errors
def watch(
    identity: str,
    server: str,
    ledger_key: str | None,
    after: int,
    categories: tuple[str, ...],
    count: int | None,
    as_json: bool,
) -> None:
    """Stream alerts addressed to your agency: the backlog, then live ones.

    \b
    Example:
      sinergi alert watch --identity certs/dev/police --after 41
    """
    wanted = [enum_value(alert_pb2.Category, "CATEGORY_", c, "category") for c in categories]
    seen = 0
    with ExchangeClient(identity, server, ledger_key=ledger_key) as client:
        for delivery in client.subscribe(after=after, categories=wanted):
            a = delivery.alert
            record = json_format.MessageToDict(a, preserving_proto_field_name=True)
            category = enum_name(alert_pb2.Category, "CATEGORY_", a.category)
            emit(
                as_json,
                {"cursor": delivery.cursor, "alert": record},
                f"[{delivery.cursor}] {a.id} {category}"
                f" TLP:{enum_name(alert_pb2.Tlp, 'TLP_', a.handling).replace('_', '+')}"
                f" from {a.sender}\n    {a.summary}",
            )
            seen += 1
            if count is not None and seen >= count:
                return


@alert.command()
@click.argument("alert_id")
@identity_option
@server_option
@ledger_key_option
@click.option(
    "--response",
    required=True,
    help="RECEIVED, ACCEPTED, ACTION_TAKEN (with --case-ref) or NOT_RELEVANT.",
)
@click.option("--case-ref", default="", help="Your case reference (required with ACTION_TAKEN).")
@click.option("--note", default="", help="A short note for the originator.")
@json_option
@handle_errors
def ack(
    alert_id: str,
    identity: str,
    server: str,
    ledger_key: str | None,
    response: str,
    case_ref: str,
    note: str,
    as_json: bool,
) -> None:
    """Acknowledge an alert addressed to your agency.

    \b
    Example:
      sinergi alert ack 6f1c...e2 --identity certs/dev/police --response ACCEPTED
    """
    value = enum_value(alert_pb2.Response, "RESPONSE_", response, "response")
    with ExchangeClient(identity, server, ledger_key=ledger_key) as client:
        result = client.acknowledge(alert_id, value, case_reference=case_ref, note=note)
    emit(
        as_json,
        {
            "ok": True,
            "alert_id": alert_id,
            "response": enum_name(alert_pb2.Response, "RESPONSE_", value),
            "seq": result.receipt.seq,
            "checkpoint_size": result.receipt.checkpoint.size,
        },
        f"acknowledged {alert_id}: {enum_name(alert_pb2.Response, 'RESPONSE_', value)}\n"
        f"  ledger entry {result.receipt.seq} (receipt verified)",
    )
