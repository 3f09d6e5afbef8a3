"""`sinergi alert export`: an alert thread as OASIS CAP 1.2 XML (docs/cap.md), or as the JSON
that `alert publish --file` reads. Reading CAP back is `alert publish --file alert.xml`."""

from __future__ import annotations

import json
from pathlib import Path

import click
import grpc

from clients._cap import to_cap
from clients._cli import _names
from clients._cli._alert_io import message_type, record
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
from clients._errors import Refused, UsageError
from clients._i18n import L_, ngettext
from sinergi.v1 import alert_pb2, exchange_pb2

# What the exchange assigns, left out of the JSON form so that `publish --file` takes it back.
_ASSIGNED = ("id", "sender", "sent", "signature")
_SHORT = {
    "status": "STATUS_",
    "message_type": "MESSAGE_TYPE_",
    "category": "CATEGORY_",
    "severity": "SEVERITY_",
    "urgency": "URGENCY_",
    "certainty": "CERTAINTY_",
    "handling": "TLP_",
}


def json_document(message: alert_pb2.Alert) -> bytes:
    """``message`` as the JSON file format (docs/api.md, Publish): proto field names, the
    flags' enum names, without what the exchange assigns."""
    out = record(message)
    for name in _ASSIGNED:
        out.pop(name, None)
    for name, prefix in _SHORT.items():
        if name in out:
            short = str(out[name]).removeprefix(prefix)
            out[name] = short.replace("_", "+") if name == "handling" else short
    return (json.dumps(out, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _known(client: ExchangeClient, view: exchange_pb2.AlertView) -> list[alert_pb2.Alert]:
    """The thread's messages and those of the alerts they reference outside it, which CAP
    names by sender and sent time. Each is a READ; one this agency may not see stays unknown,
    and the export then says which reference it cannot write."""
    known = list(view.history)
    ids = {m.id for m in known}
    for message in view.history:
        for reference in message.references:
            if reference in ids:
                continue
            try:
                other = client.get_alert(reference)
            except Refused as exc:
                if exc.code != grpc.StatusCode.NOT_FOUND:
                    raise
                continue
            known.extend(other.history)
            ids.update(m.id for m in other.history)
    return known


@click.command(name="export", cls=Command)
@click.argument("alert_id")
@identity_option
@server_option
@ledger_key_option
@witness_policy_option
@click.option(
    "--format",
    "form",
    type=click.Choice(["cap", "json"]),
    default="cap",
    show_default=True,
    help="CAP 1.2 XML, or the JSON that `alert publish --file` reads.",
)
@click.option(
    "--all",
    "whole",
    is_flag=True,
    help="Every message of the thread, oldest first, one file each in the --output directory.",
)
@click.option(
    "--output",
    "-o",
    default=None,
    type=click.Path(path_type=str),
    help="Write to this file (with --all: this directory) instead of stdout.",
)
@json_option
@handle_errors
def export(
    alert_id: str,
    identity: str,
    server: str,
    ledger_key: str | None,
    witness_policy: str | None,
    form: str,
    whole: bool,
    output: str | None,
    as_json: bool,
) -> None:
    """Export an alert message as CAP 1.2 XML (validated against the OASIS schema).

    A CAP document holds one message: ALERT_ID's (any message id of a thread names that
    message), or with --all every message of the thread, the UPDATE and CANCEL messages
    referencing the earlier ones by sender, identifier and sent time. The sender's signature
    goes along, so the recipient of the file can still check it. The thread is read like
    `alert show`, which the ledger records as a READ.

    \b
    Examples:
      sinergi alert export 6f1c...e2 --identity certs/dev/police > alert.xml
      sinergi alert export 6f1c...e2 --identity certs/dev/police --all --output thread/
      sinergi alert export 6f1c...e2 --identity certs/dev/police --format json -o alert.json
    """
    if whole and output is None:
        raise UsageError(L_("--all writes one file per message: give --output DIRECTORY"))
    with ExchangeClient(
        identity, server, ledger_key=ledger_key, witness_policy=witness_policy
    ) as client:
        view = client.get_alert(alert_id)  # every message's signature checked, or an error
        known = _known(client, view) if form == "cap" else []
    if whole:
        messages = list(view.history)
    else:
        messages = [m for m in view.history if m.id == alert_id] or [view.current]
    documents = [to_cap(m, known) if form == "cap" else json_document(m) for m in messages]
    files: list[str | None] = [None] * len(messages)
    if output is not None:
        files = _write(Path(output), messages, documents, form, whole=whole)
    found = {
        "ok": True,
        "alert_id": view.id,
        "format": form,
        "messages": [
            {"id": m.id, "message_type": message_type(m.message_type), "file": file}
            for m, file in zip(messages, files, strict=True)
        ],
    }
    if output is None:
        if as_json:
            emit(True, {**found, "document": documents[0].decode("utf-8")}, "")
        else:
            click.echo(documents[0], nl=False)  # bytes: written as they are
        return
    lines = [
        ngettext(
            "exported {n} message of {id} as {format}",
            "exported {n} messages of {id} as {format}",
            len(messages),
        ).format(n=len(messages), id=view.id, format=form.upper())
    ]
    kinds = [_names.message_type(m.message_type) for m in messages]
    width = max(6, *map(len, kinds))
    lines += [f"  {kind:{width}}  {f}" for kind, f in zip(kinds, files, strict=True)]
    emit(as_json, found, "\n".join(lines))


def _write(
    output: Path, messages: list[alert_pb2.Alert], documents: list[bytes], form: str, *, whole: bool
) -> list[str | None]:
    """Write the documents; with ``whole``, as ``01-alert-<id>.xml`` and so on in ``output``."""
    suffix = ".xml" if form == "cap" else ".json"
    try:
        if not whole:
            output.write_bytes(documents[0])
            return [str(output)]
        output.mkdir(parents=True, exist_ok=True)
        written: list[str | None] = []
        for number, (message, document) in enumerate(zip(messages, documents, strict=True), 1):
            kind = message_type(message.message_type).lower()
            path = output / f"{number:02d}-{kind}-{message.id}{suffix}"
            path.write_bytes(document)
            written.append(str(path))
    except OSError as exc:
        raise UsageError(
            L_("--output: cannot write {path}: {why}", path=exc.filename, why=exc.strerror)
        ) from None
    return written
