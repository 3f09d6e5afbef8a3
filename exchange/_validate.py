"""Field-by-field validation of requests, reported as google.rpc.BadRequest violations.

Every problem is collected (not only the first), and descriptions never echo the submitted value,
since values are personal data and refusals are recorded in the ledger.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from typing import TYPE_CHECKING, Any

from google.protobuf.message import Message

from exchange._errors import InvalidArgument
from exchange._policy import AGENCY_NAME
from sinergi.v1 import alert_pb2, exchange_pb2

if TYPE_CHECKING:  # a stub-only generic; at run time the wrapper is not subscriptable
    from google.protobuf.internal.enum_type_wrapper import _EnumTypeWrapper

MAX_RECIPIENTS = 32
MAX_SUBJECTS = 64
MAX_REFERENCES = 32
_PASSPORT = re.compile(r"[A-Z0-9]{6,9}")
_NIK = re.compile(r"\d{16}")
_IMEI = re.compile(r"\d{15}")
_ALPHA2 = re.compile(r"[A-Z]{2}")
_REGION = re.compile(r"[A-Z]{2}-[A-Z0-9]{1,3}")
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,128}")
_ALERT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

Violations = list[tuple[str, str]]


def luhn_ok(digits: str) -> bool:
    """ISO/IEC 7812-1 Annex B check digit, as used by the IMEI (3GPP TS 23.003 §6.2.1)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def _text(out: Violations, path: str, value: str, limit: int, *, required: bool = False) -> None:
    if required and not value.strip():
        out.append((path, "is required"))
    elif len(value) > limit:
        out.append((path, f"is longer than {limit} characters"))
    elif any(ord(c) < 0x20 and c not in "\n\t" for c in value):
        out.append((path, "contains control characters"))


def _enum(out: Violations, path: str, value: int, enum: _EnumTypeWrapper[Any]) -> None:
    try:
        name = enum.Name(value)
    except ValueError:
        out.append((path, "is not a known value"))
        return
    if name.endswith("_UNSPECIFIED"):
        out.append((path, "is required"))


def _person(out: Violations, path: str, person: alert_pb2.Person) -> None:
    if not (person.passport_number or person.nik or (person.name and person.birth_date)):
        out.append((path, "needs a passport number, a NIK, or a name with a birth date"))
    if person.passport_number and not _PASSPORT.fullmatch(person.passport_number):
        out.append((f"{path}.passport_number", "must be 6-9 upper-case letters or digits"))
    if person.nik and not _NIK.fullmatch(person.nik):
        out.append((f"{path}.nik", "must be 16 digits"))
    if person.nationality and not _ALPHA2.fullmatch(person.nationality):
        out.append((f"{path}.nationality", "must be an ISO 3166-1 alpha-2 code"))
    _text(out, f"{path}.name", person.name, 200)
    if person.birth_date:
        try:
            born = dt.date.fromisoformat(person.birth_date)
        except ValueError:
            out.append((f"{path}.birth_date", "must be a date as YYYY-MM-DD"))
        else:
            if len(person.birth_date) != 10 or born > dt.datetime.now(dt.UTC).date():
                out.append((f"{path}.birth_date", "must be a past date as YYYY-MM-DD"))


def _subject(out: Violations, path: str, subject: alert_pb2.Subject) -> None:
    kind = subject.WhichOneof("kind")
    if kind == "person":
        _person(out, f"{path}.person", subject.person)
    elif kind == "device":
        imei = subject.device.imei
        if not (_IMEI.fullmatch(imei) and luhn_ok(imei)):
            out.append((f"{path}.device.imei", "must be 15 digits with a valid Luhn check digit"))
    elif kind == "organisation":
        _text(out, f"{path}.organisation.name", subject.organisation.name, 200, required=True)
        _text(out, f"{path}.organisation.registration_number",
              subject.organisation.registration_number, 64)  # fmt: skip
    else:
        out.append((path, "must be a person, a device or an organisation"))


def validate_publish(request: exchange_pb2.PublishRequest) -> None:
    """Raise :class:`InvalidArgument` listing every bad field of a publish request."""
    out: Violations = []
    if not _IDEMPOTENCY_KEY.fullmatch(request.idempotency_key):
        out.append(("idempotency_key", "must be 1-128 printable ASCII characters"))
    if not request.HasField("alert"):
        raise InvalidArgument("alert is required", [*out, ("alert", "is required")])
    alert = request.alert
    for name in ("id", "sender"):
        if getattr(alert, name):
            out.append((f"alert.{name}", "is assigned by the exchange; leave it empty"))
    if alert.HasField("sent"):
        out.append(("alert.sent", "is assigned by the exchange; leave it empty"))
    _enum(out, "alert.status", alert.status, alert_pb2.Status)
    _enum(out, "alert.category", alert.category, alert_pb2.Category)
    _enum(out, "alert.severity", alert.severity, alert_pb2.Severity)
    _enum(out, "alert.urgency", alert.urgency, alert_pb2.Urgency)
    _enum(out, "alert.certainty", alert.certainty, alert_pb2.Certainty)
    _enum(out, "alert.handling", alert.handling, alert_pb2.Tlp)
    _enum(out, "alert.message_type", alert.message_type, alert_pb2.MessageType)
    if alert.message_type not in (0, alert_pb2.MESSAGE_TYPE_ALERT):
        out.append(("alert.message_type", "only ALERT messages can be published here"))
    if not alert.recipients:
        out.append(("alert.recipients", "name at least one recipient agency"))
    elif len(alert.recipients) > MAX_RECIPIENTS:
        out.append(("alert.recipients", f"at most {MAX_RECIPIENTS} agencies"))
    for i, agency in enumerate(alert.recipients):
        if not AGENCY_NAME.fullmatch(agency):
            out.append((f"alert.recipients[{i}]", "is not a valid agency name"))
        elif agency in alert.recipients[:i]:
            out.append((f"alert.recipients[{i}]", "is named twice"))
    if len(alert.subjects) > MAX_SUBJECTS:
        out.append(("alert.subjects", f"at most {MAX_SUBJECTS} subjects"))
    for i, subject in enumerate(alert.subjects[:MAX_SUBJECTS]):
        _subject(out, f"alert.subjects[{i}]", subject)
    _text(out, "alert.summary", alert.summary, 500, required=True)
    _text(out, "alert.details", alert.details, 10_000)
    _text(out, "alert.place.description", alert.place.description, 200)
    if alert.place.region and not _REGION.fullmatch(alert.place.region):
        out.append(("alert.place.region", "must be an ISO 3166-2 code such as ID-RI"))
    if len(alert.references) > MAX_REFERENCES:
        out.append(("alert.references", f"at most {MAX_REFERENCES} references"))
    for i, ref in enumerate(alert.references[:MAX_REFERENCES]):
        if not _ALERT_ID.fullmatch(ref):
            out.append((f"alert.references[{i}]", "is not an alert id"))
    if alert.HasField("expires") and alert.expires.ToDatetime(dt.UTC) <= dt.datetime.now(dt.UTC):
        out.append(("alert.expires", "must be in the future"))
    if out:
        raise InvalidArgument("invalid publish request", out)


def validate_subscribe(request: exchange_pb2.SubscribeRequest) -> None:
    out: Violations = []
    if request.after < 0:
        out.append(("after", "must be a cursor received earlier, or 0"))
    for i, category in enumerate(request.categories):
        _enum(out, f"categories[{i}]", category, alert_pb2.Category)
    if out:
        raise InvalidArgument("invalid subscribe request", out)


def validate_acknowledge(request: exchange_pb2.AcknowledgeRequest) -> None:
    out: Violations = []
    if not _ALERT_ID.fullmatch(request.alert_id):
        out.append(("alert_id", "is not an alert id"))
    _enum(out, "response", request.response, alert_pb2.Response)
    if request.response == alert_pb2.RESPONSE_ACTION_TAKEN and not request.case_reference:
        out.append(("case_reference", "is required when the response is ACTION_TAKEN"))
    _text(out, "case_reference", request.case_reference, 64)
    _text(out, "note", request.note, 2000)
    if out:
        raise InvalidArgument("invalid acknowledge request", out)


def category_name(value: alert_pb2.Category.ValueType) -> str:
    return alert_pb2.Category.Name(value).removeprefix("CATEGORY_")


def message_digest(message: Message) -> str:
    """SHA-256 of the deterministic encoding: the ledger's stand-in for the data exchanged."""
    return hashlib.sha256(message.SerializeToString(deterministic=True)).hexdigest()
