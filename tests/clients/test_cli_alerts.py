"""`sinergi alert` beyond publish/watch/ack, as a user runs it: update, cancel, show, list,
search and acks against a real `sinergi serve`, each command a real subprocess."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest

from clients import ExchangeClient, Refused, new_alert
from sinergi.v1 import exchange_pb2
from tests.clients.conftest import last_json, run

Served = tuple[str, Path, str]


class Cli:
    """`sinergi alert ...` as one agency, against the test's server."""

    def __init__(self, served: Served, agency: str) -> None:
        address, pki, _ = served
        self.identity = str(pki / agency)
        self.env = {**os.environ, "SINERGI_SERVER": address}

    def __call__(self, command: str, *args: str) -> subprocess.CompletedProcess[str]:
        return run("alert", command, *args, "--identity", self.identity, env=self.env)

    def ok(self, command: str, *args: str) -> dict[str, object]:
        result = self(command, *args, "--json")
        assert result.returncode == 0, result.stderr
        return last_json(result)

    def publish(self, category: str, to: str, summary: str, *args: str) -> str:
        published = self.ok(
            "publish", "--category", category, "--to", to, "--summary", summary, *args
        )
        return str(published["alert_id"])


def _ids(listing: dict[str, object]) -> list[str]:
    alerts = listing["alerts"]
    assert isinstance(alerts, list)
    assert listing["count"] == len(alerts)
    return [view["id"] for view in alerts]


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_publish_from_a_json_file(served: Served, tmp_path: Path) -> None:
    immigration, police = Cli(served, "immigration"), Cli(served, "police")
    expires = (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    document = {
        "category": "PASSPORT_HOLD",
        "handling": "AMBER+STRICT",
        "severity": "SEVERE",
        "urgency": "expected",
        "recipients": ["police"],
        "summary": "Applicant recruited by an unlicensed agent",
        "details": "Interviewed at the counter.",
        "subjects": [{"person": {"passport_number": "C1234567", "nationality": "ID"}}],
        "place": {"description": "Kantor Imigrasi Batam", "region": "ID-RI"},
        "expires": expires,
    }
    path = tmp_path / "alert.json"
    path.write_text(json.dumps(document), encoding="utf-8")

    alert_id = str(immigration.ok("publish", "--file", str(path))["alert_id"])

    shown = police.ok("show", alert_id)
    assert shown["id"] == alert_id
    assert shown["state"] == "ALERT_STATE_ACTIVE"
    current = shown["current"]
    assert isinstance(current, dict)
    assert current["handling"] == "TLP_AMBER_STRICT"
    assert current["severity"] == "SEVERITY_SEVERE"
    assert current["urgency"] == "URGENCY_EXPECTED"
    assert current["certainty"] == "CERTAINTY_UNKNOWN"  # the default, as with flags
    assert current["status"] == "STATUS_ACTUAL"
    assert current["place"] == {"description": "Kantor Imigrasi Batam", "region": "ID-RI"}
    assert current["expires"] == expires
    assert current["subjects"] == document["subjects"]

    human = police("show", alert_id)
    assert human.returncode == 0, human.stderr
    assert "ACTIVE" in human.stdout
    assert "passport=C1234567" in human.stdout
    assert "TLP:AMBER+STRICT" in human.stdout

    both = immigration("publish", "--file", str(path), "--summary", "x")
    assert both.returncode == 2
    assert "--summary" in _one_line(both.stderr)


def test_publish_to_every_member_reaches_those_whose_policy_receives_the_category(
    served: Served,
) -> None:
    police, customs = Cli(served, "police"), Cli(served, "customs")
    alert_id = police.publish(
        "TRAFFICKING_SUSPECT",
        "*",
        "Recruiter active in Batam",
        "--tlp",
        "GREEN",
        "--region",
        "ID-RI",
        "--expires",
        "72h",
    )
    for agency in ("immigration", "labour"):
        shown = Cli(served, agency).ok("show", alert_id)
        current = shown["current"]
        assert isinstance(current, dict)
        assert sorted(current["recipients"]) == ["immigration", "labour"]
    # customs' policy does not receive TRAFFICKING_SUSPECT, so even TLP:GREEN stays hidden.
    hidden = customs("show", alert_id, "--json")
    assert hidden.returncode == 1
    assert last_json(hidden)["code"] == "NOT_FOUND"

    red = police(
        "publish",
        "--category",
        "TRAFFICKING_SUSPECT",
        "--to",
        "*",
        "--tlp",
        "RED",
        "--summary",
        "x",
    )
    assert red.returncode == 2
    assert "TLP:RED" in _one_line(red.stderr)


def test_update_and_cancel_by_the_originator_and_the_thread_shows_them(served: Served) -> None:
    immigration, police = Cli(served, "immigration"), Cli(served, "police")
    original = immigration.publish(
        "PASSPORT_HOLD", "police,labour", "Applicant held", "--subject", "passport=C1234567"
    )

    updated = immigration.ok(
        "update", original, "--summary", "Passport cancelled", "--severity", "SEVERE"
    )
    update_id = updated["alert_id"]
    assert update_id != original
    assert updated["target_id"] == original

    shown = police.ok("show", original)
    assert shown["state"] == "ALERT_STATE_UPDATED"
    current = shown["current"]
    assert isinstance(current, dict)
    assert current["id"] == update_id
    assert current["summary"] == "Passport cancelled"
    assert current["severity"] == "SEVERITY_SEVERE"
    # Flags left out keep the content in force: the subject is still there.
    assert current["subjects"] == [{"person": {"passport_number": "C1234567"}}]
    assert current["category"] == "CATEGORY_PASSPORT_HOLD"
    assert sorted(current["recipients"]) == ["labour", "police"]

    # Only the originating agency may update, even an agency the alert was sent to.
    refused = police("update", original, "--summary", "Not yours", "--json")
    assert refused.returncode == 1
    assert last_json(refused)["code"] == "PERMISSION_DENIED"
    assert "PERMISSION_DENIED" in _one_line(refused.stderr)

    cancelled = immigration.ok("cancel", original, "--reason", "Issued after review")
    assert cancelled["target_id"] == original
    shown = police.ok("show", original)
    assert shown["state"] == "ALERT_STATE_CANCELLED"
    history = shown["history"]
    assert isinstance(history, list)
    assert [m["message_type"] for m in history] == [
        "MESSAGE_TYPE_ALERT",
        "MESSAGE_TYPE_UPDATE",
        "MESSAGE_TYPE_CANCEL",
    ]
    assert [m["id"] for m in history] == [original, update_id, cancelled["alert_id"]]
    assert history[2]["summary"] == "Issued after review"
    assert all(m.get("references", [original]) == [original] for m in history[1:])

    human = police("show", original)
    assert human.returncode == 0, human.stderr
    assert "CANCELLED" in human.stdout
    for message_type in ("ALERT", "UPDATE", "CANCEL"):
        assert any(line.strip().startswith(message_type) for line in human.stdout.splitlines())

    again = immigration("update", original, "--summary", "Too late", "--json")
    assert again.returncode == 1
    assert last_json(again)["code"] == "FAILED_PRECONDITION"

    # The watcher gets the whole thread in order, UPDATE and CANCEL naming the original.
    watched = police("watch", "--from-cursor", "0", "--count", "3", "--json")
    assert watched.returncode == 0, watched.stderr
    deliveries = [json.loads(line) for line in watched.stdout.splitlines()]
    assert [d["alert"]["message_type"] for d in deliveries] == [
        "MESSAGE_TYPE_ALERT",
        "MESSAGE_TYPE_UPDATE",
        "MESSAGE_TYPE_CANCEL",
    ]
    assert [d["alert"].get("references") for d in deliveries[1:]] == [[original], [original]]
    cursors = [d["cursor"] for d in deliveries]
    assert cursors == sorted(cursors)
    resumed = police("watch", "--after", str(cursors[0]), "--count", "2")
    assert resumed.returncode == 0, resumed.stderr
    assert f"] UPDATE of {original}" in resumed.stdout
    assert f"] CANCEL of {original}" in resumed.stdout


def test_list_filters_by_category_sender_state_and_time(served: Served) -> None:
    immigration, police = Cli(served, "immigration"), Cli(served, "police")
    hold = immigration.publish("PASSPORT_HOLD", "police", "Applicant held")
    suspect = police.publish("TRAFFICKING_SUSPECT", "immigration", "Suspect at the port")
    worker = immigration.publish("NON_PROCEDURAL_MIGRANT_WORKER", "police,labour", "Group")
    immigration.ok("cancel", worker, "--reason", "Duplicate")

    assert _ids(police.ok("list")) == [worker, suspect, hold]  # newest first
    assert _ids(police.ok("list", "--category", "PASSPORT_HOLD")) == [hold]
    assert _ids(police.ok("list", "--category", "PASSPORT_HOLD,TRAFFICKING_SUSPECT")) == [
        suspect,
        hold,
    ]
    assert _ids(police.ok("list", "--sender", "police")) == [suspect]
    assert _ids(police.ok("list", "--state", "CANCELLED")) == [worker]
    assert _ids(police.ok("list", "--state", "ACTIVE", "--sender", "immigration")) == [hold]
    assert _ids(police.ok("list", "--limit", "2")) == [worker, suspect]
    today = datetime.now(UTC).date()
    assert _ids(police.ok("list", "--since", today.isoformat(), "--until", today.isoformat())) == [
        worker,
        suspect,
        hold,
    ]
    tomorrow = (today + timedelta(days=1)).isoformat()
    assert _ids(police.ok("list", "--since", tomorrow)) == []
    # labour is addressed by the worker alert only. It also sees the TLP:AMBER suspect alert,
    # since its recipient (immigration) shares AMBER with labour, but not the hold: police, its
    # recipient, shares AMBER with customs only.
    assert _ids(Cli(served, "labour").ok("list")) == [worker, suspect]

    human = police("list")
    assert human.returncode == 0, human.stderr
    header, *rows = human.stdout.splitlines()
    assert header.split() == [
        "CURSOR",
        "ID",
        "STATE",
        "CATEGORY",
        "TLP",
        "SENDER",
        "SENT",
        "SUMMARY",
    ]
    assert [row.split()[1] for row in rows] == [worker, suspect, hold]
    assert rows[0].split()[2] == "CANCELLED"
    # Columns are aligned: every row's id starts where the header's ID does.
    assert {row.index(row.split()[1]) for row in rows} == {header.index("ID")}

    bad = police("list", "--since", "last week")
    assert bad.returncode == 2
    assert "--since" in _one_line(bad.stderr)


def test_list_follows_pages(served: Served) -> None:
    address, pki, _ = served
    with ExchangeClient(pki / "immigration", address) as client:
        sent = [
            client.publish(new_alert(category="OTHER", recipients=["police"], summary=f"n{i}"))
            for i in range(5)
        ]
    with ExchangeClient(pki / "police", address) as client:
        listed = [view.id for view in client.list_alerts(page_size=2)]
    assert listed == [p.alert_id for p in reversed(sent)]


def test_search_finds_alerts_only_for_agencies_that_may_see_them(served: Served) -> None:
    immigration, police, customs = (Cli(served, a) for a in ("immigration", "police", "customs"))
    alert_id = immigration.publish(
        "PASSPORT_HOLD", "police", "Applicant held", "--subject", "passport=C1234567,name=Budi"
    )
    immigration.publish("PASSPORT_HOLD", "police", "Someone else", "--subject", "passport=X7654321")

    found = police.ok("search", "--passport", "c1234567")
    assert _ids(found) == [alert_id]
    human = police("search", "--passport", "C1234567")
    assert human.returncode == 0, human.stderr
    assert alert_id in human.stdout

    # customs' policy does not receive PASSPORT_HOLD: nothing, and no hint that it exists.
    assert _ids(customs.ok("search", "--passport", "C1234567")) == []
    assert "no alerts found" in customs("search", "--passport", "C1234567").stdout
    assert _ids(police.ok("search", "--passport", "Z9999999")) == []

    auditor = Cli(served, "internal-affairs")("search", "--passport", "C1234567", "--json")
    assert auditor.returncode == 1
    assert last_json(auditor)["code"] == "PERMISSION_DENIED"

    # The ledger records each search, never the identifier searched for.
    _, pki, db = served
    export = pki.parent.parent / "ledger.jsonl"
    assert run("ledger", "export", "--db", db, "--out", str(export)).returncode == 0
    text = export.read_text(encoding="utf-8")
    assert "C1234567" not in text.upper()
    searches = [
        entry for entry in map(json.loads, text.splitlines()) if entry.get("action") == "SEARCH"
    ]
    assert len(searches) >= 4
    assert all(len(entry["digest"]) == 64 for entry in searches)


def test_acks_lists_every_acknowledgement_for_the_originator(served: Served) -> None:
    immigration, police, labour = (Cli(served, a) for a in ("immigration", "police", "labour"))
    alert_id = immigration.publish("PASSPORT_HOLD", "police,labour", "Applicant held")
    police.ok(
        "ack",
        alert_id,
        "--response",
        "ACTION_TAKEN",
        "--case-ref",
        "LP/123/III/2025",
        "--note",
        "Detained at the airport",
    )
    labour.ok("ack", alert_id, "--response", "RECEIVED")

    mine = immigration.ok("acks", alert_id)
    assert mine["alert_id"] == alert_id
    acknowledgements = mine["acknowledgements"]
    assert isinstance(acknowledgements, list)
    by_agency = {a["agency"]: a for a in acknowledgements}
    assert set(by_agency) == {"police", "labour"}
    assert by_agency["police"]["response"] == "RESPONSE_ACTION_TAKEN"
    assert by_agency["police"]["case_reference"] == "LP/123/III/2025"
    assert by_agency["labour"]["response"] == "RESPONSE_RECEIVED"

    # A recipient sees its own agency's acknowledgement only.
    theirs = police.ok("acks", alert_id)
    assert [a["agency"] for a in theirs["acknowledgements"]] == ["police"]

    human = immigration("acks", alert_id)
    assert human.returncode == 0, human.stderr
    header, *rows = human.stdout.splitlines()
    assert header.split()[:3] == ["AGENCY", "PRINCIPAL", "RESPONSE"]
    assert len(rows) == 2
    assert any("LP/123/III/2025" in row and "ACTION_TAKEN" in row for row in rows)

    # customs may not see the alert at all.
    hidden = Cli(served, "customs")("acks", alert_id, "--json")
    assert hidden.returncode == 1
    assert last_json(hidden)["code"] == "NOT_FOUND"


def test_usage_errors_exit_2_with_one_line(workdir: Path) -> None:
    police = str(workdir / "certs" / "dev" / "police")
    two = run(
        "alert",
        "search",
        "--identity",
        police,
        "--passport",
        "C1234567",
        "--nik",
        "3171012345678901",
        "--json",
    )
    assert two.returncode == 2
    assert _one_line(two.stderr).startswith("sinergi: search by exactly one identifier")
    assert last_json(two)["ok"] is False

    bad = workdir / "bad.json"
    bad.write_text('{"category": "PASSPORT_HOLD", "recipents": ["police"]}', encoding="utf-8")
    result = run("alert", "publish", "--identity", police, "--file", str(bad))
    assert result.returncode == 2
    assert "'recipents'" in _one_line(result.stderr)

    bad.write_text('{"category": "PASSPORT_HOLD", "handling": "PURPLE"}', encoding="utf-8")
    result = run("alert", "publish", "--identity", police, "--file", str(bad))
    assert result.returncode == 2
    assert "'handling'" in _one_line(result.stderr)

    missing = run("alert", "publish", "--identity", police, "--file", str(workdir / "no.json"))
    assert missing.returncode == 2
    assert "no.json" in _one_line(missing.stderr)

    nothing = run("alert", "update", "6f1c0000-0000-4000-8000-0000000000e2", "--identity", police)
    assert nothing.returncode == 2
    assert "nothing to update" in _one_line(nothing.stderr)

    expires = run(
        "alert",
        "publish",
        "--identity",
        police,
        "--category",
        "OTHER",
        "--to",
        "immigration",
        "--summary",
        "x",
        "--expires",
        "soon",
    )
    assert expires.returncode == 2
    assert "--expires" in _one_line(expires.stderr)


class _Status(grpc.RpcError):
    """What a failed call raises: a status code and details, no rich status."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[()]:
        return ()


class _Stream:
    def __init__(self, cursors: Sequence[int], then: grpc.RpcError | None) -> None:
        self._cursors, self._then = cursors, then

    def __iter__(self) -> Iterator[exchange_pb2.Delivery]:
        for cursor in self._cursors:
            yield exchange_pb2.Delivery(cursor=cursor)
        if self._then is not None:
            raise self._then

    def cancel(self) -> None:
        pass


class _Exchange:
    """Subscribe answered by the streams given, in turn; records where each asked to resume."""

    def __init__(self, *streams: _Stream) -> None:
        self.streams = list(streams)
        self.after: list[int] = []

    def Subscribe(self, request: exchange_pb2.SubscribeRequest) -> _Stream:  # noqa: N802
        self.after.append(request.after)
        return self.streams.pop(0)


def test_subscribe_resumes_from_its_cursor_when_shed_as_too_slow(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    too_slow = _Status(grpc.StatusCode.RESOURCE_EXHAUSTED, "subscriber too slow; resume from 2")
    dropped = _Status(grpc.StatusCode.UNAVAILABLE, "connection reset")
    fake = _Exchange(_Stream([1, 2], too_slow), _Stream([3], dropped), _Stream([4], None))
    waits: list[float] = []
    monkeypatch.setattr("clients._client.time.sleep", waits.append)
    # Fake deliveries carry no alert, so no signature: this is about cursors only.
    police = workdir / "certs" / "dev" / "police"
    with ExchangeClient(police, "127.0.0.1:1", verify_senders=False) as client:
        client._stub = fake
        cursors = [d.cursor for d in client.subscribe(after=0)]
    assert cursors == [1, 2, 3, 4]
    assert fake.after == [0, 2, 3]
    assert len(waits) == 2

    refused = _Status(grpc.StatusCode.PERMISSION_DENIED, "not a recipient")
    with ExchangeClient(police, "127.0.0.1:1", verify_senders=False) as client:
        client._stub = _Exchange(_Stream([1], refused))
        stream = client.subscribe(after=0)
        assert next(stream).cursor == 1
        with pytest.raises(Refused) as caught:
            next(stream)
    assert caught.value.code == grpc.StatusCode.PERMISSION_DENIED
    without = _Exchange(_Stream([5], too_slow))
    with ExchangeClient(police, "127.0.0.1:1", verify_senders=False) as client:
        client._stub = without
        with pytest.raises(Refused):
            list(itertools.islice(client.subscribe(after=4, reconnect=False), 5))


def test_docs_api_has_a_section_for_every_rpc() -> None:
    root = Path(__file__).resolve().parents[2]
    doc = (root / "docs" / "api.md").read_text(encoding="utf-8")
    sections = set(re.findall(r"^## (\w+)$", doc, re.MULTILINE))
    for proto in ("exchange.proto", "ledger.proto"):
        text = (root / "proto" / "sinergi" / "v1" / proto).read_text(encoding="utf-8")
        rpcs = re.findall(r"^\s*rpc (\w+)\(", text, re.MULTILINE)
        assert rpcs, proto
        assert not set(rpcs) - sections, f"docs/api.md has no section for {set(rpcs) - sections}"
