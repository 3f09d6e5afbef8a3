"""`sinergi alert export` and `sinergi alert publish --file alert.xml` as a user runs them: real
subprocesses against a real `sinergi serve`, and what its ledger recorded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import defusedxml.ElementTree as DefusedET
import xmlschema

import clients
import ledger
import ledger.store
from certs import TrustAnchors, load_identity
from clients import alert_from_json, from_cap, to_cap, verify_alert
from clients._cap import CAP_NAMESPACE
from ledger import Action
from tests.clients.conftest import last_json
from tests.clients.test_cli_alerts import Cli, Served

SCHEMA = xmlschema.XMLSchema(
    (Path(clients.__file__).parent / "data" / "CAP-v1.2.xsd").read_text("utf-8"), allow="none"
)
NS = {"cap": CAP_NAMESPACE}


def _entries(db: str) -> list[ledger.Entry]:
    engine = ledger.store.create_engine(db)
    try:
        with engine.connect() as connection:
            return [ledger.Entry.decode(b) for _, _, b in ledger.store.iter_entries(connection)]
    finally:
        engine.dispose()


def _valid(document: bytes) -> None:
    errors = list(SCHEMA.iter_errors(DefusedET.fromstring(document, forbid_dtd=True)))
    assert not errors, errors[0]


def test_export_a_thread_as_cap_and_the_ledger_records_the_read(
    served: Served, tmp_path: Path
) -> None:
    immigration, police = Cli(served, "immigration"), Cli(served, "police")
    original = str(
        immigration.ok(
            "publish", "--category", "PASSPORT_HOLD", "--to", "police,labour", "--tlp", "RED",
            "--summary", "Applicant held", "--subject", "passport=C1234567,nationality=ID",
            "--subject", "imei=490154203237518", "--place", "Batam", "--region", "ID-RI",
            "--expires", "30d",
        )["alert_id"]
    )  # fmt: skip
    update = str(immigration.ok("update", original, "--summary", "Passport cancelled")["alert_id"])
    cancel = str(immigration.ok("cancel", original, "--reason", "Issued after review")["alert_id"])
    before = len(_entries(served[2]))

    exported = police.ok("export", original, "--all", "--output", str(tmp_path / "thread"))
    messages = exported["messages"]
    assert isinstance(messages, list)
    assert [(m["id"], m["message_type"]) for m in messages] == [
        (original, "ALERT"),
        (update, "UPDATE"),
        (cancel, "CANCEL"),
    ]
    files = [Path(m["file"]) for m in messages]
    assert [f.name for f in files] == [
        f"01-alert-{original}.xml",
        f"02-update-{update}.xml",
        f"03-cancel-{cancel}.xml",
    ]
    documents = [f.read_bytes() for f in files]
    for document in documents:
        _valid(document)
    roots = [DefusedET.fromstring(d) for d in documents]
    assert [r.findtext("cap:msgType", namespaces=NS) for r in roots] == [
        "Alert",
        "Update",
        "Cancel",
    ]
    assert [r.findtext("cap:identifier", namespaces=NS) for r in roots] == [
        original,
        update,
        cancel,
    ]
    sent = roots[0].findtext("cap:sent", namespaces=NS)
    sender = roots[0].findtext("cap:sender", namespaces=NS)
    for root in roots[1:]:
        assert root.findtext("cap:references", namespaces=NS) == f"{sender},{original},{sent}"
    assert roots[0].findtext("cap:restriction", namespaces=NS).startswith("TLP:RED ")
    assert roots[0].findtext("cap:addresses", namespaces=NS) == "police labour"

    # One message to stdout: the same bytes as its file; any message id of the thread names it.
    alone = police("export", update)
    assert alone.returncode == 0, alone.stderr
    assert alone.stdout.encode() == documents[1]

    # Export, import, export: the same document; and the sender's signature still verifies.
    imported = [from_cap(d) for d in documents]
    assert [to_cap(m, imported) for m in imported] == documents
    anchors = TrustAnchors.from_pem(load_identity(served[1] / "police").ca_pem)
    for message in imported:
        verify_alert(message, anchors, "sinergi.dev", original=imported[0])

    # Each export read the thread through GetAlert: a READ by police, as `alert show` is.
    reads = [e for e in _entries(served[2])[before:] if e.action is Action.READ]
    assert len(reads) == 2
    assert all(e.actor.id.endswith("/agency/police/system/gateway") for e in reads)
    assert all(f"alert:{original}" in e.objects for e in reads)


def test_export_as_json_is_what_publish_file_reads(served: Served, tmp_path: Path) -> None:
    immigration, police = Cli(served, "immigration"), Cli(served, "police")
    alert_id = str(
        immigration.ok(
            "publish", "--category", "ILLEGAL_RECRUITER", "--to", "police", "--tlp",
            "AMBER+STRICT", "--summary", "Recruiter", "--subject", "organisation=PT Example",
        )["alert_id"]
    )  # fmt: skip
    path = tmp_path / "alert.json"
    police.ok("export", alert_id, "--format", "json", "--output", str(path))
    content = alert_from_json(path.read_text("utf-8"))
    assert content.summary == "Recruiter"
    assert '"handling": "AMBER+STRICT"' in path.read_text("utf-8")
    assert '"id"' not in path.read_text("utf-8")  # what the exchange assigns is left out
    again = str(immigration.ok("publish", "--file", str(path))["alert_id"])
    assert again != alert_id


def test_publish_a_cap_file_and_it_reads_back_equal(served: Served, tmp_path: Path) -> None:
    immigration, police = Cli(served, "immigration"), Cli(served, "police")
    expires = (datetime.now(UTC) + timedelta(days=7)).replace(microsecond=0)
    document = f"""<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="{CAP_NAMESPACE}">
  <identifier>KR-2025-0042</identifier>
  <sender>warnings@imigrasi.example</sender>
  <sent>2025-03-01T15:00:00+07:00</sent>
  <status>Actual</status>
  <msgType>Alert</msgType>
  <scope>Restricted</scope>
  <restriction>TLP:AMBER need to know</restriction>
  <addresses>police labour</addresses>
  <info>
    <category>Security</category>
    <event>Trafficking suspect</event>
    <urgency>Immediate</urgency>
    <severity>Severe</severity>
    <certainty>Likely</certainty>
    <eventCode><valueName>sinergi:category</valueName><value>TRAFFICKING_SUSPECT</value></eventCode>
    <expires>{expires.strftime("%Y-%m-%dT%H:%M:%S")}+00:00</expires>
    <headline>Recruiter seen at the port &amp; ferry terminal</headline>
    <description>Two workers without papers.</description>
    <parameter><valueName>sinergi:subject.1</valueName><value>person</value></parameter>
    <parameter><valueName>sinergi:subject.1.passport_number</valueName><value>C7654321</value></parameter>
    <parameter><valueName>sinergi:subject.1.nationality</valueName><value>ID</value></parameter>
    <area><areaDesc>Pelabuhan Batam</areaDesc>
      <geocode><valueName>ISO3166-2</valueName><value>ID-RI</value></geocode></area>
  </info>
</alert>
"""
    path = tmp_path / "alert.txt"  # read by its content, not its name
    path.write_text(document, encoding="utf-8")
    published = immigration.ok("publish", "--file", str(path))
    alert_id = str(published["alert_id"])

    shown = police.ok("show", alert_id)
    current = shown["current"]
    assert isinstance(current, dict)
    assert current["id"] == alert_id  # the exchange's identifier, not the document's
    assert current["sender"].endswith("/agency/immigration/system/gateway")
    assert current["category"] == "CATEGORY_TRAFFICKING_SUSPECT"
    assert current["handling"] == "TLP_AMBER"
    assert sorted(current["recipients"]) == ["labour", "police"]
    assert current["severity"] == "SEVERITY_SEVERE"
    assert current["urgency"] == "URGENCY_IMMEDIATE"
    assert current["certainty"] == "CERTAINTY_LIKELY"
    assert current["summary"] == "Recruiter seen at the port & ferry terminal"
    assert current["details"] == "Two workers without papers."
    assert current["subjects"] == [{"person": {"passport_number": "C7654321", "nationality": "ID"}}]
    assert current["place"] == {"description": "Pelabuhan Batam", "region": "ID-RI"}
    assert current["expires"] == expires.strftime("%Y-%m-%dT%H:%M:%SZ")
    # Exported again, the content is the file's; the envelope is the exchange's.
    again = from_cap(police("export", alert_id).stdout)
    imported = from_cap(document)
    for name in ("category", "handling", "severity", "urgency", "certainty", "summary",
                 "details", "subjects", "place", "expires", "status", "message_type"):  # fmt: skip
        assert getattr(again, name) == getattr(imported, name), name
    assert sorted(again.recipients) == sorted(imported.recipients)


def test_hostile_or_malformed_cap_files_are_refused_in_one_line_and_nothing_is_published(
    served: Served, tmp_path: Path
) -> None:
    immigration = Cli(served, "immigration")
    before = len(_entries(served[2]))
    cases = {
        "laughs.xml": b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY l "lol"><!ENTITY l2 "&l;&l;">]>'
        b'<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">&l2;</alert>',
        "xxe.xml": b'<!DOCTYPE a [<!ENTITY p SYSTEM "file:///etc/passwd">]><alert>&p;</alert>',
        "big.xml": b"<" + b" " * (1024 * 1024),
        "cap11.xml": b'<alert xmlns="urn:oasis:names:tc:emergency:cap:1.1"/>',
        "invalid.xml": b'<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"><sender/></alert>',
    }
    expected = {
        "laughs.xml": "CAP alert: the document declares a DTD",
        "xxe.xml": "CAP alert: the document declares a DTD",
        "big.xml": "at most 1048576 are read",
        "cap11.xml": "not a CAP 1.2 document",
        "invalid.xml": "CAP alert: not valid against the CAP 1.2 schema",
    }
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        result = immigration("publish", "--file", str(path), "--json")
        assert result.returncode == 2, (name, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert "Traceback" not in result.stderr
        assert lines[0].startswith(f"sinergi: --file {path}: CAP "), lines[0]
        assert expected[name] in lines[0], lines[0]
        assert "root:" not in result.stderr + result.stdout
        assert last_json(result)["element"] == "alert"
    # An UPDATE is not published as a new alert.
    update = tmp_path / "update.xml"
    update.write_bytes(
        (tmp_path / "invalid.xml").read_bytes().replace(b"<sender/>", b"").replace(b"</alert>", b"")
        + b"<identifier>x</identifier><sender>s</sender><sent>2025-03-01T08:00:00-00:00</sent>"
        b"<status>Actual</status><msgType>Update</msgType><scope>Public</scope><info>"
        b"<category>Other</category><event>Other</event><urgency>Past</urgency>"
        b"<severity>Minor</severity><certainty>Likely</certainty><headline>x</headline></info>"
        b"</alert>"
    )
    refused = immigration("publish", "--file", str(update))
    assert refused.returncode == 2, refused.stderr
    assert "CAP alert/msgType: Update" in refused.stderr
    assert [e.action for e in _entries(served[2])[before:]] == []  # nothing reached the exchange


def test_an_exported_update_updates_again_and_outside_references_are_looked_up(
    served: Served, tmp_path: Path
) -> None:
    immigration, police = Cli(served, "immigration"), Cli(served, "police")
    first = str(immigration.ok(
        "publish", "--category", "PASSPORT_HOLD", "--to", "police", "--summary", "First",
    )["alert_id"])  # fmt: skip
    second = str(immigration.ok(
        "publish", "--category", "PASSPORT_HOLD", "--to", "police", "--summary", "Second",
        "--reference", first,
    )["alert_id"])  # fmt: skip
    before = len(_entries(served[2]))
    document = police("export", second).stdout.encode()
    _valid(document)
    head = DefusedET.fromstring(police("export", first).stdout.encode())
    sent, sender = (
        head.findtext("cap:sent", namespaces=NS),
        head.findtext("cap:sender", namespaces=NS),
    )
    root = DefusedET.fromstring(document)
    assert root.findtext("cap:references", namespaces=NS) == f"{sender},{first},{sent}"
    reads = [e.objects for e in _entries(served[2])[before:] if e.action is Action.READ]
    assert reads == [(f"alert:{second}",), (f"alert:{first}",), (f"alert:{first}",)]

    update = str(immigration.ok("update", first, "--summary", "Held")["alert_id"])
    path = tmp_path / "update.xml"
    immigration.ok("export", update, "--output", str(path))
    path.write_bytes(path.read_bytes().replace(b"<headline>Held<", b"<headline>Released<"))
    again = immigration.ok("update", first, "--file", str(path))
    shown = police.ok("show", first)
    current = shown["current"]
    assert isinstance(current, dict)
    assert current["id"] == again["alert_id"]
    assert current["summary"] == "Released"
    assert current["references"] == [first]
