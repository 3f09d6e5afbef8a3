"""Building alerts in Python: names instead of enum numbers, and checks before the network."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeVar

from clients._errors import UsageError
from sinergi.v1 import alert_pb2

if TYPE_CHECKING:  # a stub-only generic; at run time the wrapper is not subscriptable
    from google.protobuf.internal.enum_type_wrapper import _EnumTypeWrapper

V = TypeVar("V", bound=int)
SUBJECT_KEYS = ("passport", "nik", "imei", "name", "nationality", "birth-date", "organisation")


def enum_value(enum: _EnumTypeWrapper[V], prefix: str, name: str, what: str) -> V:
    """``PASSPORT_HOLD`` -> ``CATEGORY_PASSPORT_HOLD`` number; a clear error listing the choices."""
    key = prefix + name.strip().upper().replace("-", "_").replace("+", "_")
    try:
        return enum.Value(key)
    except ValueError:
        choices = [n.removeprefix(prefix) for n in enum.keys() if not n.endswith("UNSPECIFIED")]  # noqa: SIM118
        raise UsageError(f"unknown {what} {name!r}; choose from {', '.join(choices)}") from None


def enum_name(enum: _EnumTypeWrapper[V], prefix: str, value: V) -> str:
    return enum.Name(value).removeprefix(prefix)


def parse_subjects(items: Sequence[str]) -> list[alert_pb2.Subject]:
    """``passport=C1234567,nationality=ID`` per subject; keys as in :data:`SUBJECT_KEYS`."""
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
) -> alert_pb2.Alert:
    """An ALERT message with CAP's UNKNOWN where the sender does not say, TLP:AMBER by default."""
    if not recipients:
        raise UsageError("name at least one recipient agency")
    if not summary.strip():
        raise UsageError("a summary is required")
    return alert_pb2.Alert(
        message_type=alert_pb2.MESSAGE_TYPE_ALERT,
        status=enum_value(alert_pb2.Status, "STATUS_", status, "status"),
        category=enum_value(alert_pb2.Category, "CATEGORY_", category, "category"),
        severity=enum_value(alert_pb2.Severity, "SEVERITY_", severity, "severity"),
        urgency=enum_value(alert_pb2.Urgency, "URGENCY_", urgency, "urgency"),
        certainty=enum_value(alert_pb2.Certainty, "CERTAINTY_", certainty, "certainty"),
        handling=enum_value(alert_pb2.Tlp, "TLP_", handling, "TLP marking"),
        recipients=list(recipients),
        subjects=list(subjects),
        summary=summary,
        details=details,
    )
