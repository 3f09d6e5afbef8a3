"""Building alerts in Python: names instead of enum numbers, and checks before the network."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from google.protobuf import json_format

from clients._errors import UsageError
from sinergi.v1 import alert_pb2

if TYPE_CHECKING:  # a stub-only generic; at run time the wrapper is not subscriptable
    from google.protobuf.internal.enum_type_wrapper import _EnumTypeWrapper

V = TypeVar("V", bound=int)
ALL_MEMBERS = "*"  # as the only recipient: every member agency whose policy receives the category
ASSIGNED = frozenset({"id", "sender", "sent", "signature"})  # set by the exchange, not clients
SUBJECT_KEYS = ("passport", "nik", "imei", "name", "nationality", "birth-date", "organisation")


def enum_value(enum: _EnumTypeWrapper[V], prefix: str, name: str, what: str) -> V:
    """``PASSPORT_HOLD`` -> ``CATEGORY_PASSPORT_HOLD`` number.

    Raises :class:`UsageError` listing the choices for a name ``enum`` does not have."""
    key = prefix + name.strip().upper().replace("-", "_").replace("+", "_")
    try:
        return enum.Value(key)
    except ValueError:
        choices = [n.removeprefix(prefix) for n in enum.keys() if not n.endswith("UNSPECIFIED")]  # noqa: SIM118
        raise UsageError(f"unknown {what} {name!r}; choose from {', '.join(choices)}") from None


def enum_name(enum: _EnumTypeWrapper[V], prefix: str, value: V) -> str:
    """``CATEGORY_PASSPORT_HOLD``'s number -> ``PASSPORT_HOLD``.

    Raises none of the typed errors: a number ``enum`` does not have is protobuf's ValueError,
    since it comes from code, not from a user."""
    return enum.Name(value).removeprefix(prefix)


def parse_subjects(items: Sequence[str]) -> list[alert_pb2.Subject]:
    """``passport=C1234567,nationality=ID`` per subject; keys as in :data:`SUBJECT_KEYS`.

    Raises :class:`UsageError` naming the item for an unknown key, a key without a value, or
    keys that cannot go together (an IMEI with a name)."""
    subjects = []
    for item in items:
        fields: dict[str, str] = {}
        for part in item.split(","):
            key, sep, value = part.partition("=")
            key = key.strip().lower()
            if not sep or key not in SUBJECT_KEYS or not value.strip():
                raise UsageError(
                    f"subject {item!r}: use key=value pairs with keys {', '.join(SUBJECT_KEYS)}"
                )
            fields[key] = value.strip()
        if "imei" in fields:
            subjects.append(alert_pb2.Subject(device=alert_pb2.Device(imei=fields.pop("imei"))))
        elif "organisation" in fields:
            subjects.append(
                alert_pb2.Subject(
                    organisation=alert_pb2.Organisation(name=fields.pop("organisation"))
                )
            )
        else:
            subjects.append(
                alert_pb2.Subject(
                    person=alert_pb2.Person(
                        passport_number=fields.pop("passport", "").upper(),
                        nik=fields.pop("nik", ""),
                        nationality=fields.pop("nationality", "").upper(),
                        name=fields.pop("name", ""),
                        birth_date=fields.pop("birth-date", ""),
                    )
                )
            )
        if fields:
            raise UsageError(f"subject {item!r}: {', '.join(fields)} cannot go with that subject")
    return subjects


def new_alert(
    *,
    category: str,
    recipients: Sequence[str],
    summary: str,
    subjects: Sequence[alert_pb2.Subject] = (),
    details: str = "",
    status: str = "ACTUAL",
    severity: str = "UNKNOWN",
    urgency: str = "UNKNOWN",
    certainty: str = "UNKNOWN",
    handling: str = "AMBER",
    expires: datetime | None = None,
    place: str = "",
    region: str = "",
    references: Sequence[str] = (),
) -> alert_pb2.Alert:
    """An ALERT message with CAP's UNKNOWN where the sender does not say, TLP:AMBER by default.

    ``recipients`` names agencies, or is ``["*"]`` for every member that may receive the category
    (not with TLP:RED, which goes to named agencies only).

    Raises :class:`UsageError` for an empty summary, an unknown enum name, or recipients the
    exchange would refuse (none; ``*`` with others, or with TLP:RED), before anything reaches
    the network."""
    message = content_alert(
        summary=summary,
        subjects=subjects,
        details=details,
        status=status,
        severity=severity,
        urgency=urgency,
        certainty=certainty,
        expires=expires,
        place=place,
        region=region,
    )
    message.message_type = alert_pb2.MESSAGE_TYPE_ALERT
    message.category = enum_value(alert_pb2.Category, "CATEGORY_", category, "category")
    message.handling = enum_value(alert_pb2.Tlp, "TLP_", handling, "TLP marking")
    _check_recipients(recipients, message.handling)
    message.recipients.extend(recipients)
    message.references.extend(references)
    return message


def content_alert(
    *,
    summary: str,
    subjects: Sequence[alert_pb2.Subject] = (),
    details: str = "",
    status: str = "ACTUAL",
    severity: str = "UNKNOWN",
    urgency: str = "UNKNOWN",
    certainty: str = "UNKNOWN",
    expires: datetime | None = None,
    place: str = "",
    region: str = "",
) -> alert_pb2.Alert:
    """The content of an alert without its envelope: what :meth:`ExchangeClient.update` sends.

    Category, handling and recipients stay empty, since an update keeps the original's.

    Raises :class:`UsageError` for an empty summary or an unknown enum name."""
    if not summary.strip():
        raise UsageError("a summary is required")
    message = alert_pb2.Alert(
        status=enum_value(alert_pb2.Status, "STATUS_", status, "status"),
        severity=enum_value(alert_pb2.Severity, "SEVERITY_", severity, "severity"),
        urgency=enum_value(alert_pb2.Urgency, "URGENCY_", urgency, "urgency"),
        certainty=enum_value(alert_pb2.Certainty, "CERTAINTY_", certainty, "certainty"),
        subjects=list(subjects),
        summary=summary,
        details=details,
    )
    if place or region:
        message.place.CopyFrom(alert_pb2.Place(description=place, region=region.strip().upper()))
    if expires is not None:
        message.expires.FromDatetime(_utc(expires))
    return message


def alert_from_json(text: str, *, update: bool = False) -> alert_pb2.Alert:
    """An alert from a JSON object as people write it (``sinergi alert publish --file``).

    Keys are the proto's field names (or their JSON camelCase names); enum values are the short
    names the flags take (``"category": "PASSPORT_HOLD"``, ``"handling": "AMBER+STRICT"``).
    Left out, status, severity, urgency and certainty take :func:`new_alert`'s defaults, and so,
    unless ``update`` (the content of an update keeps the original's envelope), do the message
    type (ALERT) and handling (AMBER). A bad key or value is a :class:`UsageError` naming it,
    before anything reaches the network."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise UsageError("the alert must be a JSON object")
    fields = {f.name: f for f in alert_pb2.Alert.DESCRIPTOR.fields}
    fields.update({f.json_name: f for f in alert_pb2.Alert.DESCRIPTOR.fields})
    converted: dict[str, Any] = {}
    for key, value in doc.items():
        field = fields.get(key)
        if field is None:
            known = ", ".join(
                f.name for f in alert_pb2.Alert.DESCRIPTOR.fields if f.name not in ASSIGNED
            )
            raise UsageError(f"key {key!r} is not an alert field (fields: {known})")
        if field.name in ASSIGNED:
            raise UsageError(f"key {key!r}: the exchange assigns it; leave it out")
        enum = _ENUMS.get(field.name)
        if enum is not None:
            if not isinstance(value, str):
                raise UsageError(f"key {key!r}: give a name such as {enum[2]!r}, not {value!r}")
            short = value.strip().upper().removeprefix(enum[1])
            try:
                converted[field.name] = enum[0].Name(enum_value(enum[0], enum[1], short, key))
            except UsageError as exc:
                raise UsageError(f"key {key!r}: {exc.message}") from None
        else:
            converted[field.name] = value
    message = alert_pb2.Alert()
    try:
        json_format.ParseDict(converted, message)
    except json_format.ParseError as exc:
        raise UsageError(f"bad alert: {_parse_error(exc)}") from None
    if message.place.region:
        message.place.region = message.place.region.upper()
    defaults = {
        "status": "ACTUAL",
        "severity": "UNKNOWN",
        "urgency": "UNKNOWN",
        "certainty": "UNKNOWN",
    }
    if not update:
        defaults |= {"message_type": "ALERT", "handling": "AMBER"}
    for name, default in defaults.items():
        if not getattr(message, name):
            wrapper, prefix, _ = _ENUMS[name]
            setattr(message, name, enum_value(wrapper, prefix, default, name))
    if not update:
        _check_recipients(message.recipients, message.handling)
    return message


# The alert's enum fields: the enum, the prefix its value names carry, an example short name.
_ENUMS: dict[str, tuple[_EnumTypeWrapper[Any], str, str]] = {
    "status": (alert_pb2.Status, "STATUS_", "ACTUAL"),
    "message_type": (alert_pb2.MessageType, "MESSAGE_TYPE_", "ALERT"),
    "category": (alert_pb2.Category, "CATEGORY_", "PASSPORT_HOLD"),
    "severity": (alert_pb2.Severity, "SEVERITY_", "SEVERE"),
    "urgency": (alert_pb2.Urgency, "URGENCY_", "IMMEDIATE"),
    "certainty": (alert_pb2.Certainty, "CERTAINTY_", "LIKELY"),
    "handling": (alert_pb2.Tlp, "TLP_", "AMBER+STRICT"),
}


def _check_recipients(recipients: Sequence[str], handling: alert_pb2.Tlp.ValueType) -> None:
    if not recipients:
        raise UsageError("name at least one recipient agency")
    if ALL_MEMBERS in recipients and len(recipients) > 1:
        raise UsageError(f"recipients: {ALL_MEMBERS!r} means every member; name no others with it")
    if handling == alert_pb2.TLP_RED and ALL_MEMBERS in recipients:
        raise UsageError("TLP:RED goes to named agencies only, not to every member ('*')")


def _parse_error(exc: json_format.ParseError) -> str:
    """json_format's message on one line, without type names that mean nothing to the user."""
    text = str(exc).replace('Message type "sinergi.v1.', 'message "').replace("sinergi.v1.", "")
    return " ".join(text.split())


def _utc(moment: datetime) -> datetime:
    """Naive datetimes are taken as UTC, so a timestamp never depends on the machine's zone."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
