"""`sinergi alert`: publish, update, cancel, watch and acknowledge alerts (the reading commands,
show, list, search and acks, are in :mod:`clients._cli._alert_read`)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Final, ParamSpec, TypeVar

import click

from clients._alerts import enum_name, enum_value, new_alert, parse_subjects
from clients._cli import _names
from clients._cli._alert_io import (
    flags_given,
    parse_expires,
    read_alert_file,
    record,
    split_list,
    tlp,
)
from clients._cli._alert_read import acks, list_alerts, search, show
from clients._cli._cap import export
from clients._cli._common import (
    emit,
    handle_errors,
    identity_option,
    json_option,
    ledger_key_option,
    receipt_verified,
    server_option,
    witness_policy_option,
    witnessing_line,
)
from clients._cli._language import Group
from clients._cli._monitor import monitor_options, start_watch_monitor
from clients._cli._proof import proof
from clients._cli._related import delivery_text, related, related_records
from clients._client import ExchangeClient, Published
from clients._errors import UsageError
from clients._i18n import L_, _
from ledger import VerifiedReceipt
from sinergi.v1 import alert_pb2

P = ParamSpec("P")
R = TypeVar("R")


@click.group(cls=Group)
def alert() -> None:
    """Publish, update, cancel, watch, acknowledge, list and search alerts."""


def _content_options(fn: Callable[P, R]) -> Callable[P, R]:
    """The flags that build an alert's content, shared by publish and update.

    They default to None, not to their documented defaults, so that a flag the user gave can be
    told from one left out (--file excludes them; update keeps what is left out)."""
    options = [
        click.option("--summary", default=None, help="One line saying what happened."),
        click.option(
            "--subject",
            "subjects",
            multiple=True,
            help="key=value[,key=value] (repeatable): passport, nik, nationality, name, "
            "birth-date; imei; organisation.",
        ),
        click.option("--details", default=None, help="Free text."),
        click.option("--severity", default=None, help="EXTREME, SEVERE, MODERATE, MINOR, UNKNOWN."),
        click.option("--urgency", default=None, help="IMMEDIATE, EXPECTED, FUTURE, PAST, UNKNOWN."),
        click.option(
            "--certainty", default=None, help="OBSERVED, LIKELY, POSSIBLE, UNLIKELY, UNKNOWN."
        ),
        click.option("--status", default=None, help="ACTUAL, EXERCISE or TEST."),
        click.option(
            "--expires",
            default=None,
            help="When the alert stops being in force: a duration from now (90m, 72h, 30d, 2w) "
            "or an ISO 8601 datetime (UTC unless it has an offset).",
        ),
        click.option("--place", default=None, help='Where, e.g. "Kantor Imigrasi Batam".'),
        click.option("--region", default=None, help="ISO 3166-2 subdivision, e.g. ID-RI."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _receipt_lines(head: str, result: Published) -> str:
    """``head`` (what was done, in words), then the receipt that proves it."""
    receipt = result.receipt
    included = _("ledger entry {seq}, included in signed checkpoint of size {size} {verified}")
    return (
        f"{head}\n  "
        + included.format(
            seq=receipt.seq, size=receipt.checkpoint.size, verified=receipt_verified()
        )
        + _witnessed_line(receipt)
    )


def _witnessed_line(receipt: VerifiedReceipt) -> str:
    """With a witness policy, the line saying which checkpoint the witnesses vouched for."""
    witnessing = receipt.witnessing
    return "" if witnessing is None else f"\n  {witnessing_line(witnessing)}"


def _witnessed_json(receipt: VerifiedReceipt) -> dict[str, Any]:
    """With a witness policy: ``witnessed`` and, when it is, the cosigned checkpoint."""
    witnessing = receipt.witnessing
    if witnessing is None:
        return {}
    found: dict[str, Any] = {"witnessed": witnessing.witnessed, "quorum": witnessing.quorum}
    if witnessing.cosigned is not None:
        found["cosigned_size"] = witnessing.cosigned.size
        found["cosigned_root"] = witnessing.cosigned.root.hex()
        found["cosigners"] = list(witnessing.cosigners)
    return found


def _receipt_json(result: Published, **extra: object) -> dict[str, Any]:
    receipt = result.receipt
    return {
        "ok": True,
        "alert_id": result.alert_id,
        "seq": receipt.seq,
        "entry_hash": receipt.entry.hash.hex(),
        "checkpoint_size": receipt.checkpoint.size,
        "checkpoint_root": receipt.checkpoint.root.hex(),
        **_witnessed_json(receipt),
        **extra,
    }


@alert.command()
@identity_option
@server_option
@ledger_key_option
@witness_policy_option
@click.option(
    "--file", "file", default=None, help="The whole alert as JSON or CAP 1.2 XML ('-' for stdin)."
)
@click.option("--category", default=None, help="e.g. PASSPORT_HOLD, TRAFFICKING_SUSPECT.")
@click.option(
    "--to",
    "recipients",
    default=None,
    help="Recipient agencies, comma-separated, or '*' for every member that receives the category.",
)
@click.option("--tlp", default=None, help="RED, AMBER+STRICT, AMBER (default), GREEN, CLEAR.")
@click.option(
    "--reference", "references", multiple=True, help="Id of an earlier alert (repeatable)."
)
@_content_options
@click.option("--idempotency-key", default=None, help="Reuse to retry safely (default: random).")
@json_option
@handle_errors
def publish(
    identity: str,
    server: str,
    ledger_key: str | None,
    witness_policy: str | None,
    file: str | None,
    category: str | None,
    recipients: str | None,
    tlp: str | None,
    references: tuple[str, ...],
    idempotency_key: str | None,
    as_json: bool,
    **content: Any,  # noqa: ANN401 - the content flags, see _content_options
) -> None:
    """Publish an alert; succeeds only with a verified ledger receipt.

    Build the alert with flags (--category, --to and --summary are required), or give it
    whole with --file: a JSON object with the alert's proto field names and the flags' enum
    names, e.g. {"category": "PASSPORT_HOLD", "handling": "AMBER+STRICT", "recipients":
    ["police"], "summary": "...", "subjects": [{"person": {"passport_number": "C1234567"}}]}.
    Severity, urgency and certainty default to UNKNOWN, status to ACTUAL, TLP to AMBER.
    A file whose content starts with '<' is read as a CAP 1.2 <alert> (docs/cap.md).

    \b
    Examples:
      sinergi alert publish --identity certs/dev/immigration --category PASSPORT_HOLD \\
        --to police,labour --subject passport=C1234567 --summary "Applicant held" --expires 30d
      sinergi alert publish --identity certs/dev/police --category TRAFFICKING_SUSPECT \\
        --to '*' --tlp GREEN --summary "Recruiter active in Batam" --region ID-RI
      sinergi alert publish --identity certs/dev/immigration --file alert.json --json
    """
    envelope = {"category": category, "to": recipients, "tlp": tlp, "reference": references}
    if file is not None:
        given = flags_given({**envelope, **_flag_names(content)})
        if given:
            raise UsageError(
                L_("--file gives the whole alert; drop {flags}", flags=", ".join(given))
            )
        message = read_alert_file(file)
    else:
        if not (category and recipients and content["summary"]):
            needed = {"--category": category, "--to": recipients, "--summary": content["summary"]}
            missing = [flag for flag, value in needed.items() if not value]
            raise UsageError(
                L_(
                    "missing {flags} (or give the whole alert with --file)",
                    flags=", ".join(missing),
                )
            )
        message = new_alert(
            category=category,
            recipients=split_list(recipients),
            summary=content["summary"],
            subjects=parse_subjects(content["subjects"]),
            details=content["details"] or "",
            status=content["status"] or "ACTUAL",
            severity=content["severity"] or "UNKNOWN",
            urgency=content["urgency"] or "UNKNOWN",
            certainty=content["certainty"] or "UNKNOWN",
            handling=tlp or "AMBER",
            expires=parse_expires(content["expires"]) if content["expires"] else None,
            place=content["place"] or "",
            region=content["region"] or "",
            references=references,
        )
    with ExchangeClient(
        identity, server, ledger_key=ledger_key, witness_policy=witness_policy
    ) as client:
        result = client.publish(message, idempotency_key=idempotency_key)
    head = _("published {id}").format(id=result.alert_id)
    emit(as_json, _receipt_json(result), _receipt_lines(head, result))


def _flag_names(content: dict[str, Any]) -> dict[str, object]:
    """Content keyword arguments under their flags' names (``subjects`` is ``--subject``)."""
    return {("subject" if k == "subjects" else k): v for k, v in content.items()}


# An update's content leaves the envelope empty: what the exchange assigns, and what the
# update keeps from the thread's original.
_ENVELOPE: Final = (
    "id",
    "sender",
    "sent",
    "signature",
    "message_type",
    "references",
    "category",
    "handling",
    "recipients",
)


def _updated_content(current: alert_pb2.Alert, content: dict[str, Any]) -> alert_pb2.Alert:
    """The content in force with the flags the user gave applied; the envelope left empty."""
    message = alert_pb2.Alert()
    message.CopyFrom(current)
    for name in _ENVELOPE:
        message.ClearField(name)
    if content["summary"] is not None:
        if not content["summary"].strip():
            raise UsageError(L_("--summary cannot be empty"))
        message.summary = content["summary"]
    if content["subjects"]:
        message.ClearField("subjects")
        message.subjects.extend(parse_subjects(content["subjects"]))
    if content["details"] is not None:
        message.details = content["details"]
    enums = {
        "status": (alert_pb2.Status, "STATUS_"),
        "severity": (alert_pb2.Severity, "SEVERITY_"),
        "urgency": (alert_pb2.Urgency, "URGENCY_"),
        "certainty": (alert_pb2.Certainty, "CERTAINTY_"),
    }
    for name, (enum, prefix) in enums.items():
        if content[name] is not None:
            setattr(message, name, enum_value(enum, prefix, content[name], name))
    if content["expires"] is not None:
        message.expires.FromDatetime(parse_expires(content["expires"]))
    if content["place"] is not None:
        message.place.description = content["place"]
    if content["region"] is not None:
        message.place.region = content["region"].strip().upper()
    return message


@alert.command()
@click.argument("alert_id")
@identity_option
@server_option
@ledger_key_option
@witness_policy_option
@click.option(
    "--file", "file", default=None, help="The whole new content as JSON or CAP XML ('-': stdin)."
)
@_content_options
@click.option("--idempotency-key", default=None, help="Reuse to retry safely (default: random).")
@json_option
@handle_errors
def update(
    alert_id: str,
    identity: str,
    server: str,
    ledger_key: str | None,
    witness_policy: str | None,
    file: str | None,
    idempotency_key: str | None,
    as_json: bool,
    **content: Any,  # noqa: ANN401 - the content flags, see _content_options
) -> None:
    """Update an alert your agency sent, with a CAP UPDATE message.

    The update keeps the alert's category, TLP and recipients. With flags, what you leave out
    keeps its current value (the current content is read first, which the ledger records as a
    READ); --subject replaces every subject. With --file, the file is the whole new content.

    \b
    Examples:
      sinergi alert update 6f1c...e2 --identity certs/dev/immigration \\
        --summary "Applicant held; passport cancelled" --severity SEVERE
      sinergi alert update 6f1c...e2 --identity certs/dev/immigration --file content.json --json
    """
    given = flags_given(_flag_names(content))
    if file is not None and given:
        raise UsageError(L_("--file gives the whole content; drop {flags}", flags=", ".join(given)))
    if file is None and not given:
        raise UsageError(L_("nothing to update: give --summary, --subject, ... or --file"))
    message = read_alert_file(file, update=True) if file is not None else None
    with ExchangeClient(
        identity, server, ledger_key=ledger_key, witness_policy=witness_policy
    ) as client:
        if message is None:
            message = _updated_content(client.get_alert(alert_id).current, content)
        result = client.update(alert_id, message, idempotency_key=idempotency_key)
    emit(
        as_json,
        _receipt_json(result, target_id=alert_id),
        _receipt_lines(
            _("updated {target} with {id}").format(target=alert_id, id=result.alert_id), result
        ),
    )


@alert.command()
@click.argument("alert_id")
@identity_option
@server_option
@ledger_key_option
@witness_policy_option
@click.option("--reason", required=True, help="Why; becomes the CANCEL message's summary.")
@click.option("--idempotency-key", default=None, help="Reuse to retry safely (default: random).")
@json_option
@handle_errors
def cancel(
    alert_id: str,
    identity: str,
    server: str,
    ledger_key: str | None,
    witness_policy: str | None,
    reason: str,
    idempotency_key: str | None,
    as_json: bool,
) -> None:
    """Cancel an alert your agency sent.

    A CAP CANCEL message goes to the same recipients; the reason is its summary.

    \b
    Example:
      sinergi alert cancel 6f1c...e2 --identity certs/dev/immigration \\
        --reason "Passport issued after review"
    """
    with ExchangeClient(
        identity, server, ledger_key=ledger_key, witness_policy=witness_policy
    ) as client:
        result = client.cancel(alert_id, reason, idempotency_key=idempotency_key)
    emit(
        as_json,
        _receipt_json(result, target_id=alert_id),
        _receipt_lines(
            _("cancelled {target} with {id}").format(target=alert_id, id=result.alert_id), result
        ),
    )


@alert.command()
@identity_option
@server_option
@ledger_key_option
@witness_policy_option
@click.option(
    "--after",
    "--from-cursor",
    "after",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Resume after this cursor (the number in brackets).",
)
@click.option("--category", "categories", multiple=True, help="Only these categories (repeatable).")
@click.option("--count", type=click.IntRange(min=1), default=None, help="Stop after N messages.")
@click.option(
    "--related/--no-related",
    "with_related",
    default=True,
    show_default=True,
    help="Show under each message the alerts your agency may see that share a subject "
    "identifier with its thread (a read: the identity needs the read grant).",
)
@click.option(
    "--monitor",
    "monitoring",
    is_flag=True,
    help="Also run the suppression monitor (see `sinergi monitor`): record what arrives, and "
    "raise an alarm for an entry addressed to your agency that does not.",
)
@click.option(
    "--monitor-interval",
    type=click.FloatRange(min=0.1),
    default=60.0,
    show_default=True,
    help="Seconds between the monitor's checks.",
)
@monitor_options
@json_option
@handle_errors
def watch(
    identity: str,
    server: str,
    ledger_key: str | None,
    witness_policy: str | None,
    after: int,
    categories: tuple[str, ...],
    count: int | None,
    with_related: bool,
    monitoring: bool,
    monitor_interval: float,
    state: Path | None,
    grace: float,
    metrics_file: Path | None,
    as_json: bool,
) -> None:
    """Stream the messages for your agency: the backlog, then live ones.

    Alerts, and the UPDATE and CANCEL messages of their threads, in order, each with its
    cursor and the newest alerts your agency may see that share a subject identifier with its
    thread (recorded in the ledger with the delivery); on a dropped connection (or when the
    exchange drops a reader that fell behind) it reconnects and resumes from the last cursor by
    itself. With --json, one object per line.

    \b
    Example:
      sinergi alert watch --identity certs/dev/police --from-cursor 41
    """
    wanted = [enum_value(alert_pb2.Category, "CATEGORY_", c, "category") for c in categories]
    seen = 0
    with (
        ExchangeClient(
            identity, server, ledger_key=ledger_key, witness_policy=witness_policy
        ) as client,
        ExitStack() as stack,
    ):
        deliveries = client.subscribe(after=after, categories=wanted, related=with_related)
        if monitoring:
            watcher, stop = start_watch_monitor(
                client,
                state,
                grace=grace,
                interval=monitor_interval,
                metrics_file=metrics_file,
                as_json=as_json,
            )
            stack.callback(stop.set)
            deliveries = watcher.watching(deliveries)
        for delivery in deliveries:
            a = delivery.alert
            category = _names.category(a.category)
            if a.message_type in (alert_pb2.MESSAGE_TYPE_UPDATE, alert_pb2.MESSAGE_TYPE_CANCEL):
                original = a.references[0] if a.references else "?"
                head = _("[{cursor}] {kind} of {original} ({id})").format(
                    cursor=delivery.cursor,
                    kind=_names.message_type(a.message_type),
                    original=original,
                    id=a.id,
                )
            else:
                head = f"[{delivery.cursor}] {a.id}"
            line = {"cursor": delivery.cursor, "alert": record(a)}
            if with_related:
                line["related"] = related_records(delivery.related)
            emit(
                as_json,
                line,
                _("{head} {category} {tlp} from {sender}").format(
                    head=head, category=category, tlp=tlp(a.handling), sender=a.sender
                )
                + f"\n    {a.summary}"
                + delivery_text(delivery),
            )
            seen += 1
            if count is not None and seen >= count:
                return


@alert.command()
@click.argument("alert_id")
@identity_option
@server_option
@ledger_key_option
@witness_policy_option
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
    witness_policy: str | None,
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
    with ExchangeClient(
        identity, server, ledger_key=ledger_key, witness_policy=witness_policy
    ) as client:
        result = client.acknowledge(alert_id, value, case_reference=case_ref, note=note)
    emit(
        as_json,
        {
            "ok": True,
            "alert_id": alert_id,
            "response": enum_name(alert_pb2.Response, "RESPONSE_", value),
            "seq": result.receipt.seq,
            "checkpoint_size": result.receipt.checkpoint.size,
            **_witnessed_json(result.receipt),
        },
        _("acknowledged {id}: {response}\n  ledger entry {seq} {verified}").format(
            id=alert_id,
            response=_names.response(value),
            seq=result.receipt.seq,
            verified=receipt_verified(),
        )
        + _witnessed_line(result.receipt),
    )


for _command in (show, list_alerts, search, acks, export, proof):
    alert.add_command(_command)
alert.add_command(related)
