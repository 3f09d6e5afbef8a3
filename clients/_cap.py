"""Alerts as OASIS CAP 1.2 XML, and back (docs/cap.md): pure, no I/O but the bundled schema.

Export writes one ``<alert>`` per message, deterministically, so that export, import, export
gives the same bytes, and the sender's signature (docs/decisions/0014) travels in parameters so
that a recipient can still check it after an import. Import refuses what it cannot map rather
than drop it, and never lets an XML parser resolve an entity, a DTD or an external reference:
documents are parsed with defusedxml, after a size check, then validated against the OASIS
schema before anything is read from them.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from importlib import resources
from typing import TYPE_CHECKING, Any, Final, TypeVar
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as DefusedET
from defusedxml import DefusedXmlException, DTDForbidden, EntitiesForbidden
from google.protobuf import timestamp_pb2

from certs import CertsError, SpiffeId
from clients._alerts import ALL_MEMBERS, _check_recipients
from clients._errors import ClientError
from sinergi.v1 import alert_pb2

if TYPE_CHECKING:
    import xmlschema  # imported when first needed: it costs every `sinergi` command 0.6 s
    from google.protobuf.internal.enum_type_wrapper import _EnumTypeWrapper

V = TypeVar("V", bound=int)

__all__ = [
    "CAP_NAMESPACE",
    "MAX_CAP_BYTES",
    "PROFILE",
    "CapError",
    "alert_from_cap",
    "from_cap",
    "to_cap",
]

CAP_NAMESPACE: Final = "urn:oasis:names:tc:emergency:cap:1.2"
#: The largest document :func:`from_cap` reads, refused before parsing. The largest alert the
#: exchange accepts (10,000 characters of details, 64 subjects) and its signed statement make a
#: document of 276 KiB when every character takes four bytes or is an escaped '&'.
MAX_CAP_BYTES: Final = 1024 * 1024
#: The ``<code>`` of every exported document: the mapping it follows (docs/cap.md).
PROFILE: Final = "SINERGIv1.0"
#: Parameter and event code names: ``sinergi:`` keeps them apart from other systems' names.
PREFIX: Final = "sinergi:"
CATEGORY_CODE: Final = PREFIX + "category"
REGION_GEOCODE: Final = "ISO3166-2"

_NS = "{" + CAP_NAMESPACE + "}"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MIN_SECONDS, _MAX_SECONDS = -62135596800, 253402300799  # 0001-01-01 and 9999-12-31T23:59:59
# CAP's dateTime (CAP 1.2, 3.3.2): whole seconds and an offset, never "Z"; UTC is "-00:00". The
# exact time keeps a fraction (our parameters only).
_CAP_TIME = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?([-+])(\d\d):(\d\d)"
)
# What XML 1.0 can carry at all (its Char production).
_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_AGENCY = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")

# The alert's category: CAP's <category>, and the <event> a person reads; the code is the
# enum's short name, in <eventCode> sinergi:category.
_EVENTS: Final[dict[alert_pb2.Category.ValueType, tuple[str, str]]] = {
    alert_pb2.CATEGORY_TRAFFICKING_SUSPECT: ("Security", "Trafficking suspect"),
    alert_pb2.CATEGORY_TRAFFICKING_VICTIM: ("Security", "Trafficking victim"),
    alert_pb2.CATEGORY_NON_PROCEDURAL_MIGRANT_WORKER: (
        "Security",
        "Non-procedural migrant worker",
    ),
    alert_pb2.CATEGORY_PASSPORT_HOLD: ("Security", "Passport hold"),
    alert_pb2.CATEGORY_ILLEGAL_RECRUITER: ("Security", "Illegal recruiter"),
    alert_pb2.CATEGORY_PEOPLE_SMUGGLING: ("Security", "People smuggling"),
    alert_pb2.CATEGORY_IMEI_FRAUD: ("Security", "IMEI fraud"),
    alert_pb2.CATEGORY_FOREIGN_NATIONAL_ACTIVITY: ("Security", "Foreign national activity"),
    alert_pb2.CATEGORY_WHISTLEBLOWER_REPORT: ("Security", "Whistleblower report"),
    alert_pb2.CATEGORY_OTHER: ("Other", "Other"),
}

# TLP 2.0 in <restriction>, its first word the marking (docs/cap.md says why Restricted).
_RESTRICTIONS: Final[dict[alert_pb2.Tlp.ValueType, str]] = {
    alert_pb2.TLP_RED: "TLP:RED (FIRST TLP 2.0): for the named recipients only, no further "
    "disclosure",
    alert_pb2.TLP_AMBER_STRICT: "TLP:AMBER+STRICT (FIRST TLP 2.0): limited disclosure, within "
    "the recipients' own organisations only",
    alert_pb2.TLP_AMBER: "TLP:AMBER (FIRST TLP 2.0): limited disclosure, within the recipients' "
    "organisations and those they serve, on a need-to-know basis",
    alert_pb2.TLP_GREEN: "TLP:GREEN (FIRST TLP 2.0): within the community, not publicly",
}
_MARKINGS: Final[dict[str, alert_pb2.Tlp.ValueType]] = {
    "TLP:" + alert_pb2.Tlp.Name(v).removeprefix("TLP_").replace("_", "+"): v
    for v in alert_pb2.Tlp.values()
    if v != alert_pb2.TLP_UNSPECIFIED
}

# The subject fields, in the order they are written: sinergi:subject.N.<field>.
_SUBJECT_FIELDS: Final = {
    "person": ("passport_number", "nik", "nationality", "name", "birth_date"),
    "device": ("imei",),
    "organisation": ("name", "registration_number"),
}
_SIGNATURE_FIELDS: Final = ("statement", "signature", "certificate")
# What Sinergi has no field for, and so refuses rather than drop without a word.
_REFUSED: Final = ("instruction", "resource", "area/polygon", "area/circle")


class CapError(ClientError):
    """A CAP document Sinergi cannot read, or an alert it cannot write as CAP; ``element``
    names the CAP element (``alert/info/expires``). Exit code 2, as for any bad input file."""

    exit_code = 2

    def __init__(self, element: str, reason: str, *, source: str = "") -> None:
        super().__init__(
            f"{source}: CAP {element}: {reason}" if source else f"CAP {element}: {reason}"
        )
        self.element = element
        self.reason = reason

    @property
    def details(self) -> dict[str, Any]:
        return {"element": self.element}


# --- export -----------------------------------------------------------------------------------


def to_cap(alert: alert_pb2.Alert, thread: Iterable[alert_pb2.Alert] = ()) -> bytes:
    """``alert``, a message the exchange stored, as one CAP 1.2 document (UTF-8 bytes),
    validated against the OASIS schema. The same message always gives the same bytes.

    ``thread`` holds the messages ``alert`` references (its thread's history does): CAP names a
    reference by its sender, identifier and sent time. Raises :class:`CapError` naming the
    element for what CAP cannot carry: a missing identifier, sender or sent time, a reference
    not in ``thread``, a character XML cannot hold, an enum value without a CAP name."""
    known = {message.id: message for message in thread}
    out = _Writer()
    out.open("alert", f' xmlns="{CAP_NAMESPACE}"')
    for name, value in (("identifier", alert.id), ("sender", alert.sender)):
        out.leaf(name, _token(value, f"alert/{name}"))
    if not alert.HasField("sent"):
        raise CapError("alert/sent", "the message has no sent time; export a stored message")
    out.leaf("sent", _cap_time(alert.sent, "alert/sent"))
    out.leaf("status", _word(alert_pb2.Status, "STATUS_", alert.status, "alert/status"))
    out.leaf(
        "msgType",
        _word(alert_pb2.MessageType, "MESSAGE_TYPE_", alert.message_type, "alert/msgType"),
    )
    if alert.handling == alert_pb2.TLP_CLEAR:
        out.leaf("scope", "Public")
    elif alert.handling in _RESTRICTIONS:
        out.leaf("scope", "Restricted")
        out.leaf("restriction", _RESTRICTIONS[alert.handling])
    else:
        raise CapError("alert/scope", f"TLP marking {alert.handling} has no CAP scope")
    if alert.recipients:
        out.leaf("addresses", " ".join(_address(r) for r in alert.recipients))
    out.leaf("code", PROFILE)
    if alert.references:
        out.leaf("references", " ".join(_reference(r, known) for r in alert.references))
    _write_info(out, alert)
    out.close("alert")
    document = out.document()
    _validate(_parse(document), "export")  # a failure here is a bug of ours, said as such
    return document


def _write_info(out: _Writer, alert: alert_pb2.Alert) -> None:
    if alert.category not in _EVENTS:
        raise CapError("alert/info/category", f"category {alert.category} has no CAP event")
    cap_category, event = _EVENTS[alert.category]
    out.open("info")
    out.leaf("category", cap_category)
    out.leaf("event", event)
    where = "alert/info/"
    out.leaf("urgency", _word(alert_pb2.Urgency, "URGENCY_", alert.urgency, where + "urgency"))
    out.leaf("severity", _word(alert_pb2.Severity, "SEVERITY_", alert.severity, where + "severity"))
    out.leaf(
        "certainty",
        _word(alert_pb2.Certainty, "CERTAINTY_", alert.certainty, where + "certainty"),
    )
    out.pair("eventCode", CATEGORY_CODE, alert_pb2.Category.Name(alert.category)[9:])
    if alert.HasField("expires"):
        out.leaf("expires", _cap_time(alert.expires, where + "expires"))
    sender_name = _agency_of(alert.sender)
    if sender_name:
        out.leaf("senderName", sender_name)
    out.leaf("headline", _text(alert.summary, where + "headline"))
    if alert.details:
        out.leaf("description", _text(alert.details, where + "description"))
    for name, value in _parameters(alert):
        out.pair("parameter", name, _text(value, f"{where}parameter {name}"))
    if alert.HasField("place"):
        out.open("area")
        out.leaf("areaDesc", _text(alert.place.description, where + "area/areaDesc"))
        if alert.place.region:
            out.pair("geocode", REGION_GEOCODE, _text(alert.place.region, where + "area/geocode"))
        out.close("area")
    out.close("info")


def _parameters(alert: alert_pb2.Alert) -> Iterator[tuple[str, str]]:
    """Subjects one field each, the exact times when CAP's whole seconds lose a fraction, and
    the sender's signature, in that order."""
    for number, subject in enumerate(alert.subjects, 1):
        kind = subject.WhichOneof("kind")
        if kind is None:
            raise CapError(
                f"alert/info/parameter {PREFIX}subject.{number}",
                "the subject is neither a person, a device nor an organisation",
            )
        yield f"{PREFIX}subject.{number}", kind
        fields = getattr(subject, kind)
        for field in _SUBJECT_FIELDS[kind]:
            value = getattr(fields, field)
            if value:
                yield f"{PREFIX}subject.{number}.{field}", value
    for name, stamp, given in (
        ("sent", alert.sent, alert.HasField("sent")),
        ("expires", alert.expires, alert.HasField("expires")),
    ):
        if given and stamp.nanos:
            where = f"alert/info/parameter {PREFIX}{name}"
            yield f"{PREFIX}{name}", _cap_time(stamp, where, exact=True)
    if alert.HasField("signature"):
        signed = alert.signature
        for field in _SIGNATURE_FIELDS:
            value = base64.b64encode(getattr(signed, field)).decode("ascii")
            yield f"{PREFIX}signature.{field}", value
        if signed.redacted:
            yield f"{PREFIX}signature.redacted", "true"


class _Writer:
    """CAP's fixed layout, written by hand: one element a line, two spaces a level, so the
    bytes depend on the alert alone (no serializer's attribute or namespace choices)."""

    def __init__(self) -> None:
        self._lines = ['<?xml version="1.0" encoding="UTF-8"?>']
        self._depth = 0

    def open(self, name: str, attributes: str = "") -> None:
        self._lines.append(f"{'  ' * self._depth}<{name}{attributes}>")
        self._depth += 1

    def close(self, name: str) -> None:
        self._depth -= 1
        self._lines.append(f"{'  ' * self._depth}</{name}>")

    def leaf(self, name: str, text: str) -> None:
        self._lines.append(f"{'  ' * self._depth}<{name}>{_escape(text)}</{name}>")

    def pair(self, name: str, value_name: str, value: str) -> None:
        self.open(name)
        self.leaf("valueName", value_name)
        self.leaf("value", value)
        self.close(name)

    def document(self) -> bytes:
        return ("\n".join(self._lines) + "\n").encode("utf-8")


def _escape(text: str) -> str:
    """Character data that parses back to ``text`` exactly: a carriage return, which a parser
    would turn into a line feed, is written as a reference."""
    for char, reference in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("\r", "&#13;")):
        text = text.replace(char, reference)
    return text


def _text(value: str, element: str) -> str:
    bad = _NOT_XML.search(value)
    if bad:
        raise CapError(element, f"U+{ord(bad.group()):04X} cannot be carried in XML")
    return value


def _token(value: str, element: str) -> str:
    """An identifier or sender: CAP allows no spaces, commas, '<' or '&' in them."""
    if not value:
        raise CapError(element, "is empty; export a message the exchange stored")
    if re.search(r"[\s,<&]", value):
        raise CapError(element, f"{value!r} has a space, comma, '<' or '&', which CAP forbids")
    return _text(value, element)


def _address(recipient: str) -> str:
    if recipient != ALL_MEMBERS and not _AGENCY.fullmatch(recipient):
        raise CapError("alert/addresses", f"{recipient!r} is not an agency name")
    return recipient


def _reference(alert_id: str, known: dict[str, alert_pb2.Alert]) -> str:
    message = known.get(alert_id)
    if message is None:
        raise CapError(
            "alert/references",
            f"alert {alert_id} is not among the messages given: CAP names a reference by "
            "its sender, identifier and sent time",
        )
    where = "alert/references"
    sent = _cap_time(message.sent, where)
    return f"{_token(message.sender, where)},{_token(message.id, where)},{sent}"


def _word(enum: _EnumTypeWrapper[V], prefix: str, value: V, element: str) -> str:
    """``SEVERITY_SEVERE`` -> ``Severe``: CAP's values are the enum's names, capitalised."""
    name: str = enum.Name(value) if value in enum.values() else ""
    if not name or name.endswith("_UNSPECIFIED"):
        raise CapError(element, f"the message has no {element.rsplit('/', 1)[-1]} CAP can name")
    return name.removeprefix(prefix).capitalize()


def _cap_time(stamp: timestamp_pb2.Timestamp, element: str, exact: bool = False) -> str:
    """CAP's dateTime in UTC (``-00:00``, as CAP 1.2 requires); ``exact`` adds the fraction."""
    if not _MIN_SECONDS <= stamp.seconds <= _MAX_SECONDS or not 0 <= stamp.nanos < 10**9:
        raise CapError(element, "is not a valid timestamp (years 1 to 9999)")
    moment = _EPOCH + timedelta(seconds=stamp.seconds)
    text = (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
        f"T{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
    )
    return f"{text}{f'.{stamp.nanos:09d}' if exact else ''}-00:00"


def _agency_of(sender: str) -> str:
    try:
        return SpiffeId.parse(sender).agency
    except CertsError:
        return ""


# --- import -----------------------------------------------------------------------------------


def from_cap(document: bytes | str) -> alert_pb2.Alert:
    """The message a CAP 1.2 document holds, whole: its identifier, sender, sent time and, from
    a Sinergi export, the sender's signature, which :func:`clients.verify_alert` then checks.

    The document must be at most :data:`MAX_CAP_BYTES`, have no DTD (so no entities and no
    external references), be in CAP 1.2's namespace, be valid against the OASIS schema, and
    map: one ``<info>``, a known category, a TLP marking, agencies as addresses. Raises
    :class:`CapError` naming the element otherwise."""
    root = _parse(document)
    if root.tag != _NS + "alert":
        namespace, _, local = root.tag.removeprefix("{").rpartition("}")
        found = f"<{local}> in namespace {namespace!r}" if namespace else f"<{local}>"
        raise CapError(
            "alert",
            f"not a CAP 1.2 document: its root is {found}, not <alert> in {CAP_NAMESPACE!r}",
        )
    _validate(root, "import")
    alert = alert_pb2.Alert(
        id=_one(root, "identifier"),
        sender=_one(root, "sender"),
        status=_enum(alert_pb2.Status, "STATUS_", _one(root, "status"), "alert/status"),
        message_type=_enum(
            alert_pb2.MessageType, "MESSAGE_TYPE_", _one(root, "msgType"), "alert/msgType"
        ),
    )
    for name in ("identifier", "sender"):
        _token(_one(root, name), f"alert/{name}")
    alert.sent.CopyFrom(_stamp(_one(root, "sent"), "alert/sent"))
    alert.handling = _handling(root)
    addresses = _optional(root, "addresses")
    for address in addresses.split():
        if address.startswith('"') or (address != ALL_MEMBERS and not _AGENCY.fullmatch(address)):
            raise CapError("alert/addresses", f"{address!r} is not an agency name (or '*')")
        alert.recipients.append(address)
    for reference in _optional(root, "references").split():
        parts = reference.split(",")
        if len(parts) != 3 or not all(parts) or not _CAP_TIME.fullmatch(parts[2]):
            raise CapError("alert/references", f"{reference!r} is not sender,identifier,sent")
        alert.references.append(parts[1])
    infos = root.findall(_NS + "info")
    if len(infos) != 1:
        raise CapError(
            "alert/info", f"a Sinergi alert has exactly one <info>; this document has {len(infos)}"
        )
    _read_info(infos[0], alert)
    return alert


def alert_from_cap(document: bytes | str, *, update: bool = False) -> alert_pb2.Alert:
    """What ``sinergi alert publish --file`` sends for a CAP document: :func:`from_cap`'s message
    without what the exchange assigns (identifier, sender, sent time, signature: the publisher
    signs anew). With ``update``, the content of an UPDATE: its thread is the one named on the
    command line, so msgType and references are dropped too.

    Raises :class:`CapError` for a document :func:`from_cap` refuses or whose msgType is not
    for the command (a Cancel: use ``sinergi alert cancel``), and :class:`UsageError` for
    recipients the exchange would refuse."""
    message = from_cap(document)
    kind = message.message_type
    allowed = (
        (alert_pb2.MESSAGE_TYPE_ALERT, alert_pb2.MESSAGE_TYPE_UPDATE)
        if update
        else (alert_pb2.MESSAGE_TYPE_ALERT,)
    )
    if kind not in allowed:
        name = alert_pb2.MessageType.Name(kind).removeprefix("MESSAGE_TYPE_").capitalize()
        command = "sinergi alert cancel" if name == "Cancel" else "sinergi alert update ID --file"
        raise CapError("alert/msgType", f"{name}: this command takes Alert messages; use {command}")
    for name in ("id", "sender", "sent", "signature"):
        message.ClearField(name)  # type: ignore[arg-type]
    if update:
        message.ClearField("message_type")
        message.ClearField("references")
    else:
        _check_recipients(message.recipients, message.handling)
    return message


def _read_info(info: Element, alert: alert_pb2.Alert) -> None:
    where = "alert/info/"
    for name in _REFUSED:
        found = info.find("/".join(_NS + part for part in name.split("/")))
        if found is not None:
            raise CapError(
                where + name, "Sinergi alerts have no field for it; put it in <description>"
            )
    if len(info.findall(_NS + "area")) > 1:
        raise CapError(where + "area", "a Sinergi alert has one place: give one <area>")
    alert.category = _category(info)
    alert.urgency = _enum(alert_pb2.Urgency, "URGENCY_", _one(info, "urgency"), where + "urgency")
    alert.severity = _enum(
        alert_pb2.Severity, "SEVERITY_", _one(info, "severity"), where + "severity"
    )
    alert.certainty = _enum(
        alert_pb2.Certainty, "CERTAINTY_", _one(info, "certainty"), where + "certainty"
    )
    expires = info.find(_NS + "expires")
    if expires is not None:
        alert.expires.CopyFrom(_stamp(expires.text or "", where + "expires"))
    headline = info.find(_NS + "headline")
    if headline is None:
        raise CapError(where + "headline", "is required: it is the alert's summary")
    alert.summary = headline.text or ""
    alert.details = _optional(info, "description")
    _read_parameters(info, alert)
    area = info.find(_NS + "area")
    if area is not None:
        alert.place.description = _one(area, "areaDesc")
        for name, value in _pairs(area, "geocode"):
            if name == REGION_GEOCODE:
                if alert.place.region:
                    raise CapError(where + "area/geocode", f"{REGION_GEOCODE} is given twice")
                alert.place.region = value


def _category(info: Element) -> alert_pb2.Category.ValueType:
    codes = [value for name, value in _pairs(info, "eventCode") if name == CATEGORY_CODE]
    if len(codes) > 1:
        raise CapError("alert/info/eventCode", f"{CATEGORY_CODE} is given {len(codes)} times")
    if codes:
        return _enum(alert_pb2.Category, "CATEGORY_", codes[0], "alert/info/eventCode", upper=True)
    event = _one(info, "event").strip().lower()
    for category, (_, name) in _EVENTS.items():
        if name.lower() == event:
            return category
    events = ", ".join(name for _, name in _EVENTS.values())
    raise CapError(
        "alert/info/event",
        f"no eventCode {CATEGORY_CODE}, and {event!r} is not a Sinergi event ({events})",
    )


def _read_parameters(info: Element, alert: alert_pb2.Alert) -> None:
    """The parameters named ``sinergi:``; those of other systems mean nothing here."""
    kinds: dict[int, str] = {}
    fields: dict[int, dict[str, str]] = {}
    signature: dict[str, str] = {}
    exact: dict[str, str] = {}
    for name, value in _pairs(info, "parameter"):
        if not name.startswith(PREFIX):
            continue
        where = f"alert/info/parameter {name}"
        key = name.removeprefix(PREFIX)
        subject = re.fullmatch(r"subject\.([1-9][0-9]{0,2})(?:\.([a-z_]+))?", key)
        if subject and subject[2] is None:
            _put(kinds, int(subject[1]), value, where)
        elif subject:
            _put(fields.setdefault(int(subject[1]), {}), subject[2], value, where)
        elif key.startswith("signature."):
            _put(signature, key.removeprefix("signature."), value, where)
        elif key in ("sent", "expires"):
            _put(exact, key, value, where)
        else:
            raise CapError(where, "is not a parameter Sinergi writes (docs/cap.md)")
    _read_subjects(kinds, fields, alert)
    for name, value in exact.items():
        _exact_time(alert, name, value)
    if signature:
        _read_signature(signature, alert)


def _put(into: dict[Any, str], key: object, value: str, where: str) -> None:
    if key in into:
        raise CapError(where, "is given twice")
    into[key] = value


def _read_subjects(
    kinds: dict[int, str], fields: dict[int, dict[str, str]], alert: alert_pb2.Alert
) -> None:
    if sorted(kinds) != list(range(1, len(kinds) + 1)):
        raise CapError(
            f"alert/info/parameter {PREFIX}subject.N",
            f"subjects must be numbered 1 to {len(kinds)} with none missing",
        )
    for number in fields:
        if number not in kinds:
            raise CapError(
                f"alert/info/parameter {PREFIX}subject.{number}",
                "is missing: it names the subject's kind (person, device or organisation)",
            )
    for number in range(1, len(kinds) + 1):
        kind = kinds[number]
        where = f"alert/info/parameter {PREFIX}subject.{number}"
        if kind not in _SUBJECT_FIELDS:
            raise CapError(where, f"{kind!r} is not person, device or organisation")
        subject = alert.subjects.add()
        getattr(subject, kind).SetInParent()
        for field, value in fields.get(number, {}).items():
            if field not in _SUBJECT_FIELDS[kind]:
                known = ", ".join(_SUBJECT_FIELDS[kind])
                raise CapError(f"{where}.{field}", f"a {kind} has no such field ({known})")
            setattr(getattr(subject, kind), field, value)


def _exact_time(alert: alert_pb2.Alert, name: str, value: str) -> None:
    """The fraction of a second that CAP's ``<sent>`` or ``<expires>`` cannot hold."""
    where = f"alert/info/parameter {PREFIX}{name}"
    given = alert.HasField("sent") if name == "sent" else alert.HasField("expires")
    if not given:
        raise CapError(where, f"is given, but the document has no <{name}>")
    target = alert.sent if name == "sent" else alert.expires
    stamp = _stamp(value, where)
    if stamp.seconds != target.seconds:
        raise CapError(where, f"{value!r} is not the time <{name}> gives")
    target.nanos = stamp.nanos


def _read_signature(signature: dict[str, str], alert: alert_pb2.Alert) -> None:
    signed = alert.signature
    for field, value in signature.items():
        where = f"alert/info/parameter {PREFIX}signature.{field}"
        if field == "redacted":
            if value != "true":
                raise CapError(where, "is 'true' when given")
            signed.redacted = True
        elif field in _SIGNATURE_FIELDS:
            try:
                setattr(signed, field, base64.b64decode(value, validate=True))
            except binascii.Error:
                raise CapError(where, "is not base64") from None
        else:
            raise CapError(where, "is not a part of a sender signature")
    signed.SetInParent()


def _parse(document: bytes | str) -> Element:
    """The root element of ``document``: size first, then defusedxml with DTDs refused (no
    entity is ever expanded, no external DTD or entity fetched)."""
    size = len(document) if isinstance(document, bytes) else len(document.encode("utf-8"))
    if size > MAX_CAP_BYTES:
        raise CapError("alert", f"the document has {size} bytes; at most {MAX_CAP_BYTES} are read")
    try:
        root: Element = DefusedET.fromstring(
            document, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
    except (DTDForbidden, EntitiesForbidden) as exc:
        raise CapError(
            "alert",
            f"the document declares a DTD or entities ({type(exc).__name__}); CAP needs none, "
            "and they are refused unread",
        ) from None
    except DefusedXmlException as exc:
        raise CapError("alert", f"refused: {type(exc).__name__}") from None
    except ParseError as exc:
        raise CapError("alert", f"not well-formed XML: {exc}") from None
    return root


@functools.cache
def _schema() -> xmlschema.XMLSchema:
    """The OASIS CAP 1.2 schema shipped with the package (clients/data/CAP-v1.2.xsd), read once;
    it imports nothing, and xmlschema is allowed to fetch nothing."""
    import xmlschema  # noqa: PLC0415 - 0.6 s, paid by the commands that read or write CAP only

    text = resources.files("clients").joinpath("data", "CAP-v1.2.xsd").read_text("utf-8")
    return xmlschema.XMLSchema(text, allow="none", defuse="always")


def _validate(root: Element, what: str) -> None:
    for error in _schema().iter_errors(root):
        path = re.sub(r"\{[^}]*\}|\[\d+\]", "", error.path or "").strip("/") or "alert"
        reason = " ".join(str(error.reason or error.message).split())
        if what == "export":
            raise CapError(path, f"the exported document is not valid CAP 1.2 (a bug): {reason}")
        raise CapError(path, f"not valid against the CAP 1.2 schema: {reason}")


def _one(parent: Element, name: str) -> str:
    """A required child's text (the schema made sure it is there)."""
    child = parent.find(_NS + name)
    if child is None:  # pragma: no cover - the schema requires it
        raise CapError(name, "is required")
    return child.text or ""


def _optional(parent: Element, name: str) -> str:
    child = parent.find(_NS + name)
    return "" if child is None else child.text or ""


def _pairs(parent: Element, name: str) -> Iterator[tuple[str, str]]:
    for child in parent.findall(_NS + name):
        yield _one(child, "valueName"), _one(child, "value")


def _enum(
    enum: _EnumTypeWrapper[V], prefix: str, word: str, element: str, *, upper: bool = False
) -> V:
    """CAP's ``Severe`` -> ``SEVERITY_SEVERE``; ``upper`` for the category's code, written as
    the enum's short name (``PASSPORT_HOLD``)."""
    key = prefix + (word if upper else word.upper())
    if key in enum.keys() and not key.endswith("_UNSPECIFIED"):  # noqa: SIM118
        return enum.Value(key)
    known = ", ".join(
        n.removeprefix(prefix) if upper else n.removeprefix(prefix).capitalize()
        for n in enum.keys()  # noqa: SIM118
        if not n.endswith("_UNSPECIFIED")
    )
    raise CapError(element, f"{word!r} is not one Sinergi takes ({known})")


def _handling(root: Element) -> alert_pb2.Tlp.ValueType:
    """The TLP marking from <scope> and <restriction>'s first word (docs/cap.md)."""
    scope = _one(root, "scope")
    restriction = _optional(root, "restriction")
    words = restriction.split(maxsplit=1)
    marking = words[0].upper() if words else ""
    if marking and marking not in _MARKINGS:
        raise CapError(
            "alert/restriction",
            f"begins {words[0]!r}, not a TLP 2.0 marking ({', '.join(_MARKINGS)})",
        )
    if scope == "Public":
        if marking not in ("", "TLP:CLEAR"):
            raise CapError("alert/restriction", f"{marking} does not go with scope Public")
        return alert_pb2.TLP_CLEAR
    if scope == "Private":
        if marking not in ("", "TLP:RED", "TLP:AMBER+STRICT"):
            raise CapError("alert/restriction", f"{marking} does not go with scope Private")
        return _MARKINGS[marking or "TLP:RED"]
    if not marking or marking == "TLP:CLEAR":
        raise CapError(
            "alert/restriction",
            "a Restricted alert's restriction must begin with its TLP marking "
            "(TLP:RED, TLP:AMBER+STRICT, TLP:AMBER or TLP:GREEN)",
        )
    return _MARKINGS[marking]


def _stamp(text: str, element: str) -> timestamp_pb2.Timestamp:
    """A CAP dateTime (or our exact one, with a fraction) as a UTC timestamp."""
    found = _CAP_TIME.fullmatch(text.strip())
    if found is None:
        raise CapError(element, f"{text!r} is not a CAP date and time (2025-03-01T08:00:00-07:00)")
    year, month, day, hour, minute, second = (int(found[i]) for i in range(1, 7))
    fraction, sign, off_hours, off_minutes = found[7], found[8], int(found[9]), int(found[10])
    try:
        offset = timedelta(hours=off_hours, minutes=off_minutes) * (-1 if sign == "-" else 1)
        moment = datetime(year, month, day, hour, minute, second, tzinfo=timezone(offset))
    except ValueError as exc:
        raise CapError(element, f"{text!r} is not a valid date and time ({exc})") from None
    seconds = (moment - _EPOCH) // timedelta(seconds=1)
    if not _MIN_SECONDS <= seconds <= _MAX_SECONDS:
        raise CapError(element, f"{text!r} is outside years 1 to 9999 in UTC")
    nanos = int((fraction or "0").ljust(9, "0"))
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)
