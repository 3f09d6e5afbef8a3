"""Field-by-field validation of requests, reported as google.rpc.BadRequest violations.

Every problem is collected (not only the first), and descriptions never echo the submitted value,
since values are personal data and refusals are recorded in the ledger.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from exchange._errors import InvalidArgument
from exchange._policy import AGENCY_NAME
from sinergi.v1 import alert_pb2, exchange_pb2, ledger_pb2

if TYPE_CHECKING:  # a stub-only generic; at run time the wrapper is not subscriptable
    from google.protobuf.internal.enum_type_wrapper import _EnumTypeWrapper

MAX_RECIPIENTS = 32
MAX_SUBJECTS = 64
MAX_REFERENCES = 32
MAX_PAGE = 200
MAX_FILTERS = 16  # categories or states in one list or subscribe request
DEFAULT_PAGE = 50
ALL_MEMBERS = "*"  # the recipient list that means every member agency that may receive it
_PASSPORT = re.compile(r"[A-Z0-9]{6,9}")
_NIK = re.compile(r"\d{16}")
_IMEI = re.compile(r"\d{15}")
_COUNTRIES = frozenset(
    line
    for line in (Path(__file__).parent / "data" / "iso3166-1-alpha2.txt").read_text().split("\n")
    if line and not line.startswith("#")
)
_REGION = re.compile(r"[A-Z]{2}-[A-Z0-9]{1,3}")
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,128}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
# google.protobuf.Timestamp's valid range (0001-01-01 to 9999-12-31, UTC); outside it the
# conversion to a datetime raises, so a request must be refused before any code converts it.
_MIN_SECONDS, _MAX_SECONDS = -62_135_596_800, 253_402_300_799
#: C0 control characters but tab and newline (one search, not a Python loop per character).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f]")
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
    elif _CONTROL.search(value):
        out.append((path, "contains control characters"))


def _enum(out: Violations, path: str, value: int, enum: _EnumTypeWrapper[Any]) -> None:
    try:
        name = enum.Name(value)
    except ValueError:
        out.append((path, "is not a known value"))
        return
    if name.endswith("_UNSPECIFIED"):
        out.append((path, "is required"))


def timestamp_ok(value: Timestamp) -> bool:
    """Whether ``value`` is a valid Timestamp (seconds and nanos in range)."""
    return _MIN_SECONDS <= value.seconds <= _MAX_SECONDS and 0 <= value.nanos <= 999_999_999


def _timestamp(out: Violations, path: str, value: Timestamp) -> bool:
    if timestamp_ok(value):
        return True
    out.append((path, "is not a valid timestamp (years 1 to 9999, nanos 0 to 999999999)"))
    return False


def _enums(out: Violations, path: str, values: Sequence[int], enum: _EnumTypeWrapper[Any]) -> None:
    """A repeated enum filter: a few known values (a million of them is an attack)."""
    if len(values) > MAX_FILTERS:
        out.append((path, f"at most {MAX_FILTERS} values"))
        return
    for i, value in enumerate(values):
        _enum(out, f"{path}[{i}]", value, enum)


def _person(out: Violations, path: str, person: alert_pb2.Person) -> None:
    if not (person.passport_number or person.nik or (person.name and person.birth_date)):
        out.append((path, "needs a passport number, a NIK, or a name with a birth date"))
    if person.passport_number and not _PASSPORT.fullmatch(person.passport_number):
        out.append((f"{path}.passport_number", "must be 6-9 upper-case letters or digits"))
    if person.nik and not _NIK.fullmatch(person.nik):
        out.append((f"{path}.nik", "must be 16 digits"))
    if person.nationality and person.nationality not in _COUNTRIES:
        out.append((f"{path}.nationality", "must be an ISO 3166-1 alpha-2 country code"))
    _text(out, f"{path}.name", person.name, 200)
    _birth_date(out, f"{path}.birth_date", person.birth_date)


def _birth_date(out: Violations, path: str, value: str) -> None:
    if not value:
        return
    try:
        if not _DATE.fullmatch(value):  # fromisoformat also takes 2020-W01-1 and 20200101
            raise ValueError(value)
        born = dt.date.fromisoformat(value)
    except ValueError:
        out.append((path, "must be a date as YYYY-MM-DD"))
    else:
        if len(value) != 10 or born > dt.datetime.now(dt.UTC).date():
            out.append((path, "must be a past date as YYYY-MM-DD"))


def _subject(out: Violations, path: str, subject: alert_pb2.Subject) -> None:
    kind = subject.WhichOneof("kind")
    if kind == "person":
        _person(out, f"{path}.person", subject.person)
    elif kind == "device":
        imei = subject.device.imei
        if not (_IMEI.fullmatch(imei) and luhn_ok(imei)):
            out.append((f"{path}.device.imei", "must be 15 digits with a valid Luhn check digit"))
    elif kind == "organisation":
        organisation = subject.organisation
        _text(out, f"{path}.organisation.name", organisation.name, 200, required=True)
        _text(out, f"{path}.organisation.registration_number", organisation.registration_number, 64)
    else:
        out.append((path, "must be a person, a device or an organisation"))


def _key(out: Violations, key: str) -> None:
    if not _IDEMPOTENCY_KEY.fullmatch(key):
        out.append(("idempotency_key", "must be 1-128 printable ASCII characters"))


def _alert_id(out: Violations, path: str, value: str) -> None:
    if not _ALERT_ID.fullmatch(value):
        out.append((path, "is not an alert id"))


def _content(out: Violations, alert: alert_pb2.Alert, *, update: bool) -> None:
    """The fields a sender writes. In an update, category, handling and recipients may be left
    empty (they are the original's); the service checks that any given equal the original's."""
    for name in ("id", "sender"):
        if getattr(alert, name):
            out.append((f"alert.{name}", "is assigned by the exchange; leave it empty"))
    if alert.HasField("sent"):
        out.append(("alert.sent", "is assigned by the exchange; leave it empty"))
    if alert.HasField("signature"):
        out.append(("alert.signature", "is assigned by the exchange; sign the request instead"))
    _enum(out, "alert.status", alert.status, alert_pb2.Status)
    _enum(out, "alert.severity", alert.severity, alert_pb2.Severity)
    _enum(out, "alert.urgency", alert.urgency, alert_pb2.Urgency)
    _enum(out, "alert.certainty", alert.certainty, alert_pb2.Certainty)
    if not update or alert.category:
        _enum(out, "alert.category", alert.category, alert_pb2.Category)
    if not update or alert.handling:
        _enum(out, "alert.handling", alert.handling, alert_pb2.Tlp)
    if update:
        if alert.message_type not in (0, alert_pb2.MESSAGE_TYPE_UPDATE):
            out.append(("alert.message_type", "leave it empty; this is an UPDATE"))
        if alert.references:
            out.append(("alert.references", "leave it empty; the update references alert_id"))
    elif alert.message_type not in alert_pb2.MessageType.values():
        out.append(("alert.message_type", "is not a known value"))
    elif alert.message_type not in (0, alert_pb2.MESSAGE_TYPE_ALERT):
        # Empty means ALERT (docs/api.md): Publish stores every message it makes as an ALERT.
        out.append(("alert.message_type", "use Update or Cancel for UPDATE and CANCEL"))
    _recipients(out, alert, required=not update)
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
        _alert_id(out, f"alert.references[{i}]", ref)
    if (
        alert.HasField("expires")
        and _timestamp(out, "alert.expires", alert.expires)
        and alert.expires.ToDatetime(dt.UTC) <= dt.datetime.now(dt.UTC)
    ):
        out.append(("alert.expires", "must be in the future"))


def _recipients(out: Violations, alert: alert_pb2.Alert, *, required: bool) -> None:
    recipients = list(alert.recipients)
    if recipients == [ALL_MEMBERS]:
        if alert.handling == alert_pb2.TLP_RED:
            out.append(("alert.recipients", "TLP:RED alerts must name their recipients"))
        return
    if not recipients and required:
        out.append(("alert.recipients", "name at least one recipient agency, or '*'"))
    elif len(recipients) > MAX_RECIPIENTS:
        out.append(("alert.recipients", f"at most {MAX_RECIPIENTS} agencies"))
        return  # checking each of a huge list is the attack (and each would be a violation)
    seen: set[str] = set()
    for i, agency in enumerate(recipients):
        if not AGENCY_NAME.fullmatch(agency):
            out.append((f"alert.recipients[{i}]", "is not a valid agency name"))
        elif agency in seen:
            out.append((f"alert.recipients[{i}]", "is named twice"))
        seen.add(agency)


def validate_publish(request: exchange_pb2.PublishRequest) -> None:
    """Raise :class:`InvalidArgument` listing every bad field of a publish request."""
    out: Violations = []
    _key(out, request.idempotency_key)
    if not request.HasField("alert"):
        raise InvalidArgument("alert is required", [*out, ("alert", "is required")])
    _content(out, request.alert, update=False)
    if out:
        raise InvalidArgument("invalid publish request", out)


def validate_update(request: exchange_pb2.UpdateRequest) -> None:
    out: Violations = []
    _key(out, request.idempotency_key)
    _alert_id(out, "alert_id", request.alert_id)
    if not request.HasField("alert"):
        raise InvalidArgument("alert is required", [*out, ("alert", "is required")])
    _content(out, request.alert, update=True)
    if out:
        raise InvalidArgument("invalid update request", out)


def validate_cancel(request: exchange_pb2.CancelRequest) -> None:
    out: Violations = []
    _key(out, request.idempotency_key)
    _alert_id(out, "alert_id", request.alert_id)
    _text(out, "reason", request.reason, 500, required=True)
    if out:
        raise InvalidArgument("invalid cancel request", out)


def validate_alert_id(
    request: exchange_pb2.GetAlertRequest
    | exchange_pb2.ListAcknowledgementsRequest
    | ledger_pb2.GetAlertProofRequest,
) -> None:
    out: Violations = []
    _alert_id(out, "alert_id", request.alert_id)
    if out:
        raise InvalidArgument("invalid request", out)


def _page(out: Violations, page_size: int, page_token: str) -> None:
    if not 0 <= page_size <= MAX_PAGE:
        out.append(("page_size", f"must be between 1 and {MAX_PAGE}, or 0 for {DEFAULT_PAGE}"))
    if page_token and not (page_token.isdigit() and page_token.isascii() and len(page_token) <= 18):
        out.append(("page_token", "is not a token this exchange returned"))


def validate_list(request: exchange_pb2.ListAlertsRequest) -> None:
    out: Violations = []
    _enums(out, "categories", request.categories, alert_pb2.Category)
    if request.sender_agency and not AGENCY_NAME.fullmatch(request.sender_agency):
        out.append(("sender_agency", "is not a valid agency name"))
    _enums(out, "states", request.states, alert_pb2.AlertState)
    after = not request.HasField("sent_after") or _timestamp(out, "sent_after", request.sent_after)
    before = not request.HasField("sent_before") or _timestamp(
        out, "sent_before", request.sent_before
    )
    if (
        after
        and before
        and request.HasField("sent_after")
        and request.HasField("sent_before")
        and request.sent_after.ToDatetime() >= request.sent_before.ToDatetime()
    ):
        out.append(("sent_before", "must be later than sent_after"))
    _page(out, request.page_size, request.page_token)
    if out:
        raise InvalidArgument("invalid list request", out)


def validate_search(request: exchange_pb2.SearchAlertsRequest) -> tuple[str, str]:
    """Check the one identifier searched for; return it as (kind, value) for the index."""
    out: Violations = []
    identifiers = {
        "passport": request.passport_number,
        "nik": request.nik,
        "imei": request.imei,
        "person": request.name or request.birth_date,
    }
    given = [kind for kind, value in identifiers.items() if value]
    if len(given) != 1:
        out.append(("passport_number,nik,imei,name", "give exactly one identifier"))
    if request.passport_number and not _PASSPORT.fullmatch(request.passport_number.upper()):
        out.append(("passport_number", "must be 6-9 letters or digits"))
    if request.nik and not _NIK.fullmatch(request.nik):
        out.append(("nik", "must be 16 digits"))
    if request.imei and not (_IMEI.fullmatch(request.imei) and luhn_ok(request.imei)):
        out.append(("imei", "must be 15 digits with a valid Luhn check digit"))
    if "person" in given:
        _text(out, "name", request.name, 200, required=True)
        if not request.birth_date:
            out.append(("birth_date", "is required with name"))
        _birth_date(out, "birth_date", request.birth_date)
    _page(out, request.page_size, request.page_token)
    if out:
        raise InvalidArgument("invalid search request", out)
    kind = given[0]
    return kind, f"{request.name}|{request.birth_date}" if kind == "person" else identifiers[kind]


def validate_related(request: exchange_pb2.GetRelatedAlertsRequest) -> None:
    out: Violations = []
    _alert_id(out, "alert_id", request.alert_id)
    _page(out, request.page_size, request.page_token)
    if out:
        raise InvalidArgument("invalid related alerts request", out)


def validate_subscribe(request: exchange_pb2.SubscribeRequest) -> None:
    out: Violations = []
    if request.after < 0:
        out.append(("after", "must be a cursor received earlier, or 0"))
    _enums(out, "categories", request.categories, alert_pb2.Category)
    if out:
        raise InvalidArgument("invalid subscribe request", out)


def validate_acknowledge(request: exchange_pb2.AcknowledgeRequest) -> None:
    out: Violations = []
    _alert_id(out, "alert_id", request.alert_id)
    if request.idempotency_key:
        _key(out, request.idempotency_key)
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
