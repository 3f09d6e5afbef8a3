"""What the `sinergi alert` commands share: reading times and content flags, and printing alerts
as aligned tables or JSON records."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import click
from google.protobuf import json_format, timestamp_pb2
from google.protobuf.message import Message

from clients._alerts import alert_from_json, enum_name
from clients._cap import CapError, alert_from_cap
from clients._cli import _names
from clients._cli._common import spiffe_id
from clients._errors import UsageError
from clients._i18n import L_, N_, _
from clients._signatures import SignedBy
from sinergi.v1 import alert_pb2, exchange_pb2

_DURATION = re.compile(r"(\d+)\s*([mhdw])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
SUMMARY_WIDTH = 60


def parse_moment(text: str, flag: str, *, end_of_day: bool = False) -> datetime:
    """ISO 8601 date or datetime; without an offset it is UTC, so results do not depend on the
    machine's zone. A bare date is its first moment, or with ``end_of_day`` the next day's, so
    that ``--until 2025-03-01`` includes the 1st."""
    value = text.strip()
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            moment = datetime.combine(day + timedelta(days=end_of_day), time(), UTC)
        else:
            moment = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(
            L_(
                "{flag}: {text!r} is not an ISO 8601 date or datetime (2025-03-01, "
                "2025-03-01T08:00Z)",
                flag=flag,
                text=text,
            )
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def parse_expires(text: str) -> datetime:
    """``72h``, ``30d``, ``2w``, ``90m`` from now, or an ISO 8601 datetime in the future."""
    duration = _DURATION.fullmatch(text.strip().lower())
    if duration:
        try:
            moment = datetime.now(UTC).replace(microsecond=0) + timedelta(
                **{_UNITS[duration[2]]: int(duration[1])}
            )
        except OverflowError:
            raise UsageError(
                L_("--expires: {text!r} is too far in the future", text=text)
            ) from None
    else:
        moment = parse_moment(text, "--expires")
    if moment <= datetime.now(UTC):
        raise UsageError(L_("--expires: {text!r} is not in the future", text=text))
    return moment


def read_alert_file(path: str, *, update: bool = False) -> alert_pb2.Alert:
    """The alert in file ``path`` (``-`` for stdin), named in every error: CAP 1.2 XML when its
    content starts with ``<`` (docs/cap.md), whatever its name, else JSON."""
    try:
        with click.open_file(path, "rb") as stream:
            data = stream.read()
    except OSError as exc:
        raise UsageError(
            L_("--file: cannot read {path}: {why}", path=path, why=exc.strerror)
        ) from None
    if data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<"):
        try:
            return alert_from_cap(data, update=update)
        except CapError as exc:
            raise CapError(exc.element, exc.reason, source=f"--file {path}") from None
        except UsageError as exc:
            raise UsageError(L_("--file {path}: {why}", path=path, why=exc.message)) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(L_("--file: {path} is not UTF-8 text", path=path)) from None
    try:
        return alert_from_json(text, update=update)
    except UsageError as exc:
        raise UsageError(L_("--file {path}: {why}", path=path, why=exc.message)) from None


def split_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def tlp(value: alert_pb2.Tlp.ValueType) -> str:
    return "TLP:" + enum_name(alert_pb2.Tlp, "TLP_", value).replace("_", "+")


def when(stamp: timestamp_pb2.Timestamp) -> str:
    if not stamp.seconds and not stamp.nanos:
        return "-"
    return stamp.ToDatetime(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def state(value: alert_pb2.AlertState.ValueType) -> str:
    return enum_name(alert_pb2.AlertState, "ALERT_STATE_", value)


def message_type(value: alert_pb2.MessageType.ValueType) -> str:
    return enum_name(alert_pb2.MessageType, "MESSAGE_TYPE_", value)


def sender_agency(sender: str) -> str:
    """``spiffe://td/agency/police/system/gateway`` -> ``police``; tables have little room."""
    name = spiffe_id(sender)
    return name.agency if name is not None else sender


def shorten(text: str, width: int = SUMMARY_WIDTH) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Columns aligned with two spaces between, as kubectl prints them; no trailing blanks.
    The headers are translated (mark them with N_)."""
    grid = [[_(h) for h in headers], *([str(cell) for cell in row] for row in rows)]
    widths = [max(len(row[i]) for row in grid) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in grid
    )


def record(message: Message) -> dict[str, Any]:
    """The proto JSON form with the .proto field names, so `json_format.ParseDict` reads it back."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def view_record(view: exchange_pb2.AlertView) -> dict[str, Any]:
    out = record(view)
    out["cursor"] = view.cursor  # an int64 is a string in proto JSON; a cursor is a number here
    return out


def subjects_text(subjects: Iterable[alert_pb2.Subject]) -> str:
    """Subjects as the --subject flag writes them."""
    out = []
    for subject in subjects:
        kind = subject.WhichOneof("kind")
        if kind == "device":
            out.append(f"imei={subject.device.imei}")
        elif kind == "organisation":
            out.append(f"organisation={subject.organisation.name}")
        elif kind == "person":
            p = subject.person
            pairs = [
                ("passport", p.passport_number),
                ("nik", p.nik),
                ("name", p.name),
                ("birth-date", p.birth_date),
                ("nationality", p.nationality),
            ]
            out.append(",".join(f"{k}={v}" for k, v in pairs if v))
    return "; ".join(out) or "-"


LIST_HEADERS = (
    N_("CURSOR"),
    N_("ID"),
    N_("STATE"),
    N_("CATEGORY"),
    N_("TLP"),
    N_("SENDER"),
    N_("SENT"),
    N_("SUMMARY"),
)


def list_row(view: exchange_pb2.AlertView) -> list[str]:
    current = view.current  # the content in force; the thread is named by the original's id
    return [
        str(view.cursor),
        view.id,
        _names.state(view.state),
        _names.category(current.category),
        tlp(current.handling),
        sender_agency(current.sender),
        when(current.sent),
        shorten(current.summary),
    ]


def views_output(views: Sequence[exchange_pb2.AlertView], empty: str) -> str:
    return table(LIST_HEADERS, map(list_row, views)) if views else empty


def signed_record(signed: SignedBy) -> dict[str, Any]:
    """What the verified sender signature says (docs/decisions/0014)."""
    return {
        "sender": str(signed.sender),
        "certificate": signed.fingerprint,
        "signed_at": signed.signed_at.isoformat() if signed.signed_at else None,
        "redacted": signed.redacted,
    }


def _signed_text(signed: SignedBy) -> str:
    if signed.redacted:
        return _("by {sender}; statement removed under retention, cannot be checked").format(
            sender=signed.sender
        )
    assert signed.signed_at is not None
    at = signed.signed_at.strftime("%Y-%m-%d %H:%M:%SZ")
    return _("verified: {sender} at {at}, certificate {certificate}").format(
        sender=signed.sender, at=at, certificate=signed.fingerprint[:16]
    )


def show_text(view: exchange_pb2.AlertView, signed: SignedBy) -> str:
    """One thread: state, the content in force, then its history oldest first."""
    a = view.current
    fields = [
        (_("id"), view.id),
        (_("state"), _names.state(view.state)),
        (_("cursor"), str(view.cursor)),
        (_("category"), _names.category(a.category)),
        (_("handling"), _names.tlp_meaning(a.handling)),
        (_("sender"), a.sender),
        (_("recipients"), ",".join(a.recipients) or "-"),
        (_("status"), _names.shown("status", a.status)),
        (_("severity"), _names.shown("severity", a.severity)),
        (_("urgency"), _names.shown("urgency", a.urgency)),
        (_("certainty"), _names.shown("certainty", a.certainty)),
        (_("expires"), when(a.expires)),
        (_("place"), " ".join(filter(None, (a.place.description, a.place.region))) or "-"),
        (_("subjects"), subjects_text(a.subjects)),
        (_("summary"), a.summary),
        (_("signature"), _signed_text(signed)),
    ]
    if a.details:
        fields.append((_("details"), " ".join(a.details.split())))
    width = max(len(label) for label, _value in fields)
    lines = [f"{k.ljust(width)}  {v}" for k, v in fields]
    history = table(
        (N_("TYPE"), N_("ID"), N_("SENT"), N_("SENDER"), N_("SUMMARY")),
        (
            [_names.message_type(m.message_type), m.id, when(m.sent), m.sender, shorten(m.summary)]
            for m in view.history
        ),
    )
    lines += ["", _("history:"), *("  " + line for line in history.splitlines())]
    return "\n".join(lines)


def flags_given(values: dict[str, object]) -> list[str]:
    """The flags among ``values`` a user set (None and () mean not given)."""
    return [f"--{name.replace('_', '-')}" for name, v in values.items() if v not in (None, ())]
