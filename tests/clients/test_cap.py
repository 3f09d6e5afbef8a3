"""CAP 1.2 export and import (clients/_cap.py, docs/cap.md): every exported document is valid
against the OASIS schema, export -> import -> export gives the same bytes, the sender's signature
still verifies after an import, and hostile or malformed XML is refused, unexpanded, naming the
element."""

from __future__ import annotations

import itertools
import re
import socket
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import defusedxml.ElementTree as DefusedET
import pytest
import xmlschema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import clients
from certs import TrustAnchors, load_identity
from clients import (
    CapError,
    ExchangeClient,
    SignatureFailed,
    alert_from_cap,
    content_alert,
    from_cap,
    new_alert,
    parse_subjects,
    to_cap,
    verify_alert,
)
from clients._cap import CAP_NAMESPACE, MAX_CAP_BYTES
from ledger import Action
from sinergi.v1 import alert_pb2
from tests.conftest import RunningServer

SCHEMA_FILE = Path(clients.__file__).parent / "data" / "CAP-v1.2.xsd"
NS = {"cap": CAP_NAMESPACE}
SENDER = "spiffe://sinergi.dev/agency/immigration/system/gateway"
SUBJECTS = {
    "person": "passport=C1234567,nationality=ID",
    "person-by-name": "name=Siti Aminah,birth-date=1990-01-31,nik=3171012345678901",
    "device": "imei=490154203237518",
    "organisation": "organisation=PT Example",
}


@pytest.fixture(scope="module")
def schema() -> xmlschema.XMLSchema:
    """The packaged OASIS schema, loaded here by the test itself, apart from the code under test."""
    return xmlschema.XMLSchema(SCHEMA_FILE.read_text("utf-8"), allow="none")


def _valid(schema: xmlschema.XMLSchema, document: bytes) -> None:
    root = DefusedET.fromstring(document, forbid_dtd=True)
    errors = list(schema.iter_errors(root))
    assert not errors, errors[0]


def _stored(message: alert_pb2.Alert, **envelope: object) -> alert_pb2.Alert:
    """``message`` as the exchange stores it: an id, a sender and a sent time assigned."""
    stored = alert_pb2.Alert()
    stored.CopyFrom(message)
    stored.id = str(envelope.get("id", uuid.uuid4()))
    stored.sender = str(envelope.get("sender", SENDER))
    stored.sent.FromDatetime(datetime(2025, 3, 1, 8, 0, 0, 123456, tzinfo=UTC))
    return stored


def _thread(handling: str = "AMBER", subject: str = "passport=C1234567") -> list[alert_pb2.Alert]:
    """An ALERT, an UPDATE and a CANCEL as the exchange makes them."""
    original = _stored(
        new_alert(
            category="PASSPORT_HOLD",
            recipients=["police", "labour"],
            summary="Applicant held",
            subjects=parse_subjects([subject]),
            handling=handling,
            expires=datetime(2026, 1, 31, tzinfo=UTC),
            place="Kantor Imigrasi Batam",
            region="ID-RI",
        )
    )
    update = _stored(original)
    update.message_type = alert_pb2.MESSAGE_TYPE_UPDATE
    update.summary = "Passport cancelled"
    update.references.append(original.id)
    cancel = _stored(original)
    cancel.message_type = alert_pb2.MESSAGE_TYPE_CANCEL
    cancel.summary = "Issued after review"
    for name in ("subjects", "place", "details", "expires"):
        cancel.ClearField(name)  # type: ignore[arg-type]
    cancel.references.append(original.id)
    return [original, update, cancel]


def test_the_shipped_schema_is_the_oasis_cap_1_2_schema() -> None:
    text = SCHEMA_FILE.read_text("utf-8")
    assert text.splitlines()[1] == "<!-- Copyright OASIS Open 2010 All Rights Reserved -->"
    root = DefusedET.fromstring(text.encode(), forbid_dtd=True)
    assert root.get("targetNamespace") == CAP_NAMESPACE == "urn:oasis:names:tc:emergency:cap:1.2"
    assert root.get("version") == "1.2"


@pytest.mark.parametrize("handling", ["RED", "AMBER+STRICT", "AMBER", "GREEN", "CLEAR"])
@pytest.mark.parametrize("subject", SUBJECTS)
def test_every_marking_subject_and_message_type_exports_valid_cap_and_round_trips(
    schema: xmlschema.XMLSchema, handling: str, subject: str
) -> None:
    thread = _thread(handling, SUBJECTS[subject])
    for message in thread:
        document = to_cap(message, thread)
        _valid(schema, document)
        back = from_cap(document)
        assert back == message
        assert to_cap(back, thread) == document  # byte for byte
    root = DefusedET.fromstring(to_cap(thread[0], thread))
    scope = root.findtext("cap:scope", namespaces=NS)
    restriction = root.findtext("cap:restriction", namespaces=NS)
    if handling == "CLEAR":
        assert (scope, restriction) == ("Public", None)
    else:
        assert scope == "Restricted"
        assert restriction is not None
        assert restriction.split()[0] == f"TLP:{handling}"
    assert root.findtext("cap:addresses", namespaces=NS) == "police labour"
    assert root.findtext("cap:sent", namespaces=NS) == "2025-03-01T08:00:00-00:00"
    assert root.findtext("cap:info/cap:expires", namespaces=NS) == "2026-01-31T00:00:00-00:00"
    update = DefusedET.fromstring(to_cap(thread[1], thread))
    assert update.findtext("cap:msgType", namespaces=NS) == "Update"
    # CAP names a reference by sender, identifier and sent time.
    assert update.findtext("cap:references", namespaces=NS) == (
        f"{SENDER},{thread[0].id},2025-03-01T08:00:00-00:00"
    )
    cancel = DefusedET.fromstring(to_cap(thread[2], thread))
    assert cancel.findtext("cap:msgType", namespaces=NS) == "Cancel"


@pytest.mark.parametrize(
    "category", [v.name for v in alert_pb2.Category.DESCRIPTOR.values if v.number]
)
def test_every_category_has_an_event_and_its_code(
    schema: xmlschema.XMLSchema, category: str
) -> None:
    message = _stored(
        new_alert(category=category[9:], recipients=["*"], summary="x", handling="GREEN")
    )
    document = to_cap(message)
    _valid(schema, document)
    info = DefusedET.fromstring(document).find("cap:info", NS)
    assert info is not None
    assert info.findtext("cap:eventCode/cap:valueName", namespaces=NS) == "sinergi:category"
    assert info.findtext("cap:eventCode/cap:value", namespaces=NS) == category[9:]
    assert info.findtext("cap:event", namespaces=NS)
    assert info.findtext("cap:category", namespaces=NS) == (
        "Other" if category == "CATEGORY_OTHER" else "Security"
    )
    assert from_cap(document) == message


def test_subjects_are_one_parameter_per_field_with_documented_names() -> None:
    message = _stored(
        new_alert(
            category="ILLEGAL_RECRUITER",
            recipients=["police"],
            summary="x",
            subjects=parse_subjects([SUBJECTS["person-by-name"], SUBJECTS["device"]]),
        )
    )
    info = DefusedET.fromstring(to_cap(message)).find("cap:info", NS)
    assert info is not None
    pairs = [
        (p.findtext("cap:valueName", namespaces=NS), p.findtext("cap:value", namespaces=NS))
        for p in info.findall("cap:parameter", NS)
    ]
    assert pairs[:6] == [
        ("sinergi:subject.1", "person"),
        ("sinergi:subject.1.nik", "3171012345678901"),
        ("sinergi:subject.1.name", "Siti Aminah"),
        ("sinergi:subject.1.birth_date", "1990-01-31"),
        ("sinergi:subject.2", "device"),
        ("sinergi:subject.2.imei", "490154203237518"),
    ]


# Text as the exchange takes it: no control characters but tab and newline (docs/api.md); and a
# carriage return, which the export must keep too.
_TEXT = st.text(
    st.characters(exclude_categories=("Cs",), exclude_characters="\x00\ufffe\uffff").filter(
        lambda c: c in "\t\n\r" or c >= " "
    ),
    max_size=40,
)
_STAMP = st.builds(
    lambda seconds, nanos: (seconds, nanos),
    st.integers(-62135596800, 253402300799),
    st.one_of(st.just(0), st.integers(0, 999_999_999)),
)


def _enum(enum: object) -> st.SearchStrategy[int]:
    values = [v for n, v in enum.items() if not n.endswith("UNSPECIFIED")]  # type: ignore[attr-defined]
    return st.sampled_from(values)


@st.composite
def _subjects(draw: st.DrawFn) -> alert_pb2.Subject:
    kind = draw(st.sampled_from(["person", "device", "organisation"]))
    if kind == "device":
        return alert_pb2.Subject(device=alert_pb2.Device(imei=draw(_TEXT)))
    if kind == "organisation":
        return alert_pb2.Subject(
            organisation=alert_pb2.Organisation(name=draw(_TEXT), registration_number=draw(_TEXT))
        )
    fields = alert_pb2.Person.DESCRIPTOR.fields
    return alert_pb2.Subject(person=alert_pb2.Person(**{f.name: draw(_TEXT) for f in fields}))


@st.composite
def _alerts(draw: st.DrawFn) -> tuple[alert_pb2.Alert, list[alert_pb2.Alert]]:
    earlier = [
        _stored(
            alert_pb2.Alert(),
            id=uuid.UUID(int=i + 1),
            sender=f"spiffe://sinergi.dev/agency/a{i}/system/gateway",
        )
        for i in range(draw(st.integers(0, 3)))
    ]
    message = alert_pb2.Alert(
        id=str(uuid.UUID(int=draw(st.integers(0, 2**128 - 1)))),
        sender=draw(st.sampled_from([SENDER, "urn:other-system:sender"])),
        status=draw(_enum(alert_pb2.Status)),
        message_type=draw(_enum(alert_pb2.MessageType)),
        category=draw(_enum(alert_pb2.Category)),
        severity=draw(_enum(alert_pb2.Severity)),
        urgency=draw(_enum(alert_pb2.Urgency)),
        certainty=draw(_enum(alert_pb2.Certainty)),
        handling=draw(_enum(alert_pb2.Tlp)),
        recipients=draw(
            st.one_of(
                st.just(["*"]),
                st.lists(
                    st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True),
                    max_size=4,
                ),
            )
        ),
        subjects=draw(st.lists(_subjects(), max_size=4)),
        summary=draw(_TEXT),
        details=draw(_TEXT),
        references=[m.id for m in draw(st.permutations(earlier))],
    )
    message.sent.seconds, message.sent.nanos = draw(_STAMP)
    if draw(st.booleans()):
        message.expires.seconds, message.expires.nanos = draw(_STAMP)
    if draw(st.booleans()):
        message.place.description, message.place.region = (
            draw(_TEXT),
            draw(st.sampled_from(["", "ID-RI"])),
        )
    if draw(st.booleans()):
        message.signature.statement = draw(st.binary(max_size=64))
        message.signature.signature = draw(st.binary(max_size=64))
        message.signature.certificate = draw(st.binary(max_size=64))
        message.signature.redacted = draw(st.booleans())
    return message, earlier


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_alerts())
def test_any_alert_round_trips_exactly_and_validates(
    schema: xmlschema.XMLSchema, drawn: tuple[alert_pb2.Alert, list[alert_pb2.Alert]]
) -> None:
    message, earlier = drawn
    document = to_cap(message, earlier)
    _valid(schema, document)
    back = from_cap(document)
    assert back == message
    assert to_cap(back, earlier) == document
    assert from_cap(document.decode("utf-8")) == message  # str in, the same


def test_what_cap_cannot_carry_is_refused_naming_the_element() -> None:
    message = _thread()[1]
    with pytest.raises(CapError) as unknown:
        to_cap(message)  # the original it references is not given
    assert unknown.value.element == "alert/references"
    assert message.references[0] in str(unknown.value)
    unsent = new_alert(category="OTHER", recipients=["police"], summary="x")
    with pytest.raises(CapError) as missing:
        to_cap(unsent)
    assert missing.value.element == "alert/identifier"
    stored = _stored(unsent)
    stored.summary = "not XML: \ufffe"
    with pytest.raises(CapError) as character:
        to_cap(stored)
    assert character.value.element == "alert/info/headline"
    assert "U+FFFE" in str(character.value)


# --- hostile and malformed documents ------------------------------------------------------------

_BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE alert [
  <!ENTITY lol "lol">
  <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
  <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"><identifier>&lol9;</identifier></alert>
"""
_EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE alert [<!ENTITY passwd SYSTEM "file:///etc/passwd">]>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"><identifier>&passwd;</identifier></alert>
"""
_EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE alert SYSTEM "http://127.0.0.1:9/cap.dtd">
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"><identifier>x</identifier></alert>
"""


@pytest.mark.parametrize("document", [_BILLION_LAUGHS, _EXTERNAL_ENTITY, _EXTERNAL_DTD])
def test_dtds_and_entities_are_refused_unexpanded(document: bytes) -> None:
    with pytest.raises(CapError) as refused:
        from_cap(document)
    assert refused.value.element == "alert"
    assert "DTD" in str(refused.value)
    assert "lol" not in str(refused.value)
    assert "root:" not in str(refused.value)  # /etc/passwd was never read into anything
    assert refused.value.exit_code == 2


def test_a_document_over_the_limit_is_refused_before_parsing() -> None:
    document = to_cap(_thread()[0], _thread())
    padded = document.replace(b"<headline>", b"<headline>" + b" " * MAX_CAP_BYTES)
    with pytest.raises(CapError) as refused:
        from_cap(padded)
    assert f"at most {MAX_CAP_BYTES}" in str(refused.value)
    # Not well-formed past the limit either: the size is what is said, so parsing never began.
    with pytest.raises(CapError) as unparsed:
        from_cap(b"<" * (MAX_CAP_BYTES + 1))
    assert "bytes" in str(unparsed.value)
    assert "well-formed" not in str(unparsed.value)


def _edited(old: str, new: str, count: int = 1) -> bytes:
    thread = _thread()
    document = to_cap(thread[0], thread).decode()
    assert old in document, old
    return document.replace(old, new, count).encode()


@pytest.mark.parametrize(
    ("document", "element", "words"),
    [
        (
            _edited("2025-03-01T08:00:00-00:00</sent>", "2025-02-30T08:00:00-00:00</sent>"),
            "alert/sent",
            "not valid",
        ),
        (
            _edited("2025-03-01T08:00:00-00:00</sent>", "2025-03-01T08:00:00Z</sent>"),
            "alert/sent",
            "pattern",
        ),
        (_edited("2026-01-31T00:00:00-00:00", "31/01/2026"), "alert/info/expires", "not valid"),
        (
            _edited(
                "sinergi:sent</valueName>\n      <value>2025-03-01T08:00:00.123456000",
                "sinergi:sent</valueName>\n      <value>2025-03-01T09:00:00.123456000",
            ),
            "alert/info/parameter sinergi:sent",
            "not the time",
        ),
        (_edited(CAP_NAMESPACE, "urn:oasis:names:tc:emergency:cap:1.1"), "alert", "cap:1.1"),
        (_edited(f' xmlns="{CAP_NAMESPACE}"', ""), "alert", "not a CAP 1.2 document"),
        (
            _edited("<value>PASSPORT_HOLD</value>", "<value>SHOPLIFTING</value>"),
            "alert/info/eventCode",
            "SHOPLIFTING",
        ),
        (
            _edited("<restriction>TLP:AMBER ", "<restriction>TLP:PURPLE "),
            "alert/restriction",
            "TLP:PURPLE",
        ),
        (
            _edited("<scope>Restricted</scope>", "<scope>Public</scope>"),
            "alert/restriction",
            "Public",
        ),
        (_edited("<scope>Restricted</scope>", "<scope>Secret</scope>"), "alert/scope", "not valid"),
        (
            _edited("<identifier>", "<!-- none --><x>", 1).replace(b"</identifier>", b"</x>", 1),
            "alert",
            "not valid",
        ),
        (_edited("<status>Actual</status>", "<status>Draft</status>"), "alert/status", "Draft"),
        (_edited("<msgType>Alert</msgType>", "<msgType>Ack</msgType>"), "alert/msgType", "Ack"),
        (
            _edited("<addresses>police labour</addresses>", '<addresses>"the police"</addresses>'),
            "alert/addresses",
            "agency",
        ),
        (_edited("<headline>Applicant held</headline>", ""), "alert/info/headline", "required"),
        (
            _edited(
                "</info>",
                "</info><info><category>Other</category><event>x</event>"
                "<urgency>Past</urgency><severity>Minor</severity><certainty>Likely</certainty>"
                "</info>",
            ),
            "alert/info",
            "exactly one",
        ),
        (
            _edited("<parameter>", "<instruction>Run</instruction><parameter>"),
            "alert/info/instruction",
            "no field",
        ),
        (
            _edited("sinergi:subject.1.passport_number", "sinergi:subject.1.shoe_size"),
            "alert/info/parameter sinergi:subject.1.shoe_size",
            "no such field",
        ),
        (
            _edited("sinergi:subject.1</valueName>", "sinergi:subject.2</valueName>"),
            "alert/info/parameter sinergi:subject.N",
            "numbered",
        ),
        (
            _edited(
                "<valueName>sinergi:subject.1</valueName>\n      <value>person",
                "<valueName>sinergi:subject.1</valueName>\n      <value>vehicle",
            ),
            "alert/info/parameter sinergi:subject.1",
            "vehicle",
        ),
        (
            _edited(
                "<parameter>",
                "<parameter><valueName>sinergi:colour</valueName>"
                "<value>red</value></parameter><parameter>",
            ),
            "alert/info/parameter sinergi:colour",
            "not a parameter",
        ),
        (
            _edited(
                "<code>SINERGIv1.0</code>", "<code>SINERGIv1.0</code><references>bad</references>"
            ),
            "alert/references",
            "sender,identifier,sent",
        ),
        (b"<alert", "alert", "not well-formed"),
    ],
)
def test_malformed_documents_are_refused_naming_the_element(
    document: bytes, element: str, words: str
) -> None:
    with pytest.raises(CapError) as refused:
        from_cap(document)
    assert refused.value.element == element, refused.value
    assert words in str(refused.value)
    assert str(refused.value).startswith(f"CAP {element}: ")


def test_bad_base64_in_a_signature_parameter_is_named() -> None:
    document = _edited(
        "<parameter>",
        "<parameter><valueName>sinergi:signature.statement</valueName>"
        "<value>not base64!</value></parameter><parameter>",
    )
    with pytest.raises(CapError) as refused:
        from_cap(document)
    assert refused.value.element == "alert/info/parameter sinergi:signature.statement"
    assert "base64" in str(refused.value)


def test_a_cap_document_from_another_system_is_read_by_event_name() -> None:
    document = f"""<?xml version="1.0" encoding="ISO-8859-1"?>
<alert xmlns="{CAP_NAMESPACE}">
  <identifier>KR-2025-0042</identifier>
  <sender>warnings@imigrasi.example</sender>
  <sent>2025-03-01T15:00:00+07:00</sent>
  <status>Exercise</status>
  <msgType>Alert</msgType>
  <scope>Private</scope>
  <addresses>police</addresses>
  <info>
    <language>id-ID</language>
    <category>Security</category>
    <event>People smuggling</event>
    <urgency>Immediate</urgency>
    <severity>Severe</severity>
    <certainty>Likely</certainty>
    <headline>Kapal di Batam \xe9</headline>
    <parameter><valueName>EAS-ORG</valueName><value>CIV</value></parameter>
  </info>
</alert>
""".encode("latin-1")
    message = from_cap(document)
    assert message.category == alert_pb2.CATEGORY_PEOPLE_SMUGGLING
    assert message.handling == alert_pb2.TLP_RED  # Private: the addressed agencies only
    assert message.status == alert_pb2.STATUS_EXERCISE
    assert message.summary == "Kapal di Batam \xe9"
    assert message.sent.ToDatetime(UTC) == datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
    assert list(message.recipients) == ["police"]
    publishable = alert_from_cap(document)
    assert not publishable.id
    assert not publishable.sender
    assert not publishable.HasField("sent")
    thread = _thread()
    with pytest.raises(CapError) as update:
        alert_from_cap(to_cap(thread[1], thread))
    assert update.value.element == "alert/msgType"
    assert "sinergi alert update" in str(update.value)
    with pytest.raises(CapError, match="sinergi alert cancel"):
        alert_from_cap(to_cap(thread[2], thread), update=True)
    content = alert_from_cap(to_cap(thread[1], thread), update=True)
    assert not content.references
    assert not content.message_type


# --- the sender's signature, from a real exchange -----------------------------------------------


def test_export_import_keeps_the_senders_signature_verifiable(
    start_server: Callable[..., RunningServer], sqlite_url: str
) -> None:
    server = start_server(sqlite_url)
    with ExchangeClient(server.pki / "immigration", server.address) as immigration:
        alert_id = immigration.publish(
            new_alert(
                category="PASSPORT_HOLD",
                recipients=["police"],
                summary="Applicant held",
                subjects=parse_subjects(["passport=C1234567,nationality=ID"]),
                handling="AMBER+STRICT",
                expires=datetime.now(UTC) + timedelta(days=30),  # with microseconds
                place="Kantor Imigrasi Batam",
                region="ID-RI",
            )
        ).alert_id
        immigration.update(alert_id, content_alert(summary="Passport cancelled", severity="SEVERE"))
        immigration.cancel(alert_id, "Issued after review")
    with ExchangeClient(server.pki / "police", server.address) as police:
        view = police.get_alert(alert_id)
    history = list(view.history)
    assert len(history) == 3
    documents = [to_cap(m, history) for m in history]
    imported = [from_cap(d) for d in documents]
    assert imported == history
    police_identity = load_identity(server.pki / "police")
    anchors = TrustAnchors.from_pem(police_identity.ca_pem)
    for message in imported:
        signed = verify_alert(message, anchors, "sinergi.dev", original=imported[0])
        assert str(signed.sender).endswith("/agency/immigration/system/gateway")
    # The signature covers the content: an edited document no longer verifies.
    forged = from_cap(documents[0].replace(b"<headline>Applicant held", b"<headline>Nothing"))
    with pytest.raises(SignatureFailed, match="summary"):
        verify_alert(forged, anchors, "sinergi.dev")
    reads = [e for e in server.entries() if e.action is Action.READ]
    assert [e.objects[0] for e in reads] == [f"alert:{alert_id}"]
    assert reads[0].actor.id.endswith("/agency/police/system/gateway")


def test_every_exported_time_is_whole_seconds_in_utc_as_cap_requires() -> None:
    thread = _thread()
    for document in (to_cap(m, thread) for m in thread):
        stamps = re.findall(rb"<(?:sent|expires)>([^<]*)<", document)
        assert stamps
        assert all(re.fullmatch(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d-00:00", s) for s in stamps)


def test_import_accepts_any_offset_and_converts_to_utc() -> None:
    for offset, hour in itertools.product(("+07:00", "-05:30"), (8,)):
        document = _edited(
            "2025-03-01T08:00:00-00:00</sent>", f"2025-03-01T08:00:00{offset}</sent>"
        )
        document = document.replace(
            b"<valueName>sinergi:sent</valueName>", b"<valueName>x:sent</valueName>"
        )
        message = from_cap(document)
        sign = 1 if offset[0] == "+" else -1
        hours, minutes = int(offset[1:3]), int(offset[4:])
        expected = datetime(2025, 3, 1, hour, tzinfo=UTC) - sign * timedelta(
            hours=hours, minutes=minutes
        )
        assert message.sent.ToDatetime(UTC) == expected


def test_schema_location_hints_are_never_fetched(monkeypatch: pytest.MonkeyPatch) -> None:
    """A document naming where its schemas live is validated against the shipped schema only,
    and an XML-DSig <Signature> (CAP's optional one) is let through unchecked, not fetched."""

    def no_network(*args: object) -> None:
        raise AssertionError(f"a connection was attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    thread = _thread()
    hints = (
        f'<alert xmlns="{CAP_NAMESPACE}" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation="'
        f"{CAP_NAMESPACE} http://127.0.0.1:9/cap.xsd "
        'http://www.w3.org/2000/09/xmldsig# http://127.0.0.1:9/dsig.xsd">'
    )
    document = (
        to_cap(thread[0], thread)
        .decode()
        .replace(f'<alert xmlns="{CAP_NAMESPACE}">', hints)
        .replace(
            "</info>",
            '</info><ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:x/>'
            "</ds:Signature>",
        )
    )
    assert from_cap(document) == thread[0]
