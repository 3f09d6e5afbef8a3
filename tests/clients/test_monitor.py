"""The suppression monitor (docs/audit.md, "Suppression monitor"): every ledger entry addressed to
an agency must reach it, or its monitor raises the alarm; and the proof bundle a recipient or a
court checks offline."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import grpc
import pytest
import sqlalchemy

import exchange._audit as audit_service
import exchange._service as exchange_service
import ledger.store
from certs import SpiffeId
from clients import (
    AlertProof,
    ExchangeClient,
    ForkDetected,
    Monitor,
    QuorumFailed,
    Refused,
    VerificationFailed,
    new_alert,
)
from exchange._visibility import Checked
from ledger import WITNESS_VERIFIER_FILE, Action, VerificationError, Verifier, write_cosigning_key
from sinergi.v1 import ledger_pb2, ledger_pb2_grpc
from tests.clients.conftest import SINERGI, Exchange, last_json, run, withhold
from tests.conftest import wait_for
from tests.integration.support import channel


def _cosigned_past(client: ExchangeClient, size: int) -> bool:
    """The newest cosigned checkpoint covers ``size`` entries (witnesses cosign off the path)."""
    try:
        return client.newest().checkpoint.size >= size
    except QuorumFailed:
        return False


def _publish(
    exchange: Exchange, recipients: list[str], summary: str, category: str = "PASSPORT_HOLD"
) -> str:
    with exchange.client() as client:
        published = client.publish(
            new_alert(category=category, recipients=recipients, summary=summary)
        )
        seq = published.receipt.seq
        wait_for(lambda: _cosigned_past(client, seq), what="a cosigned checkpoint covering it")
        return published.alert_id


def _monitor(exchange: Exchange, who: str, **kw: object) -> tuple[ExchangeClient, Monitor]:
    client = exchange.client(who)
    return client, Monitor(client, exchange.pki / who / "monitor.json", **kw)  # type: ignore[arg-type]


def test_every_entry_addressed_to_an_agency_is_found_and_confirmed(exchange: Exchange) -> None:
    to_police = _publish(exchange, ["police"], "for police")
    to_customs = _publish(exchange, ["customs"], "for customs only", "PEOPLE_SMUGGLING")
    to_all = _publish(exchange, ["*"], "for every member that receives it")
    client, monitor = _monitor(exchange, "police", grace=0, confirm="get")
    with client:
        report = monitor.check()
    assert [p.message_id for p in report.pending] == []
    assert report.alarms == ()
    assert report.found == 2
    assert report.received == 2
    entries = exchange.server.entries()
    reads = [e for e in entries if e.meta.get("method") == "GetEnvelopes"]
    assert reads
    assert {SpiffeId.parse(e.actor.id).agency for e in reads} == {"police"}
    # The entries name every recipient with its number; `*` was expanded by the policy.
    published = {e.objects[0]: e for e in entries if e.action is Action.PUBLISH}
    assert published[f"alert:{to_police}"].meta["to_index"] == ["police:1"]
    assert published[f"alert:{to_customs}"].meta["to_index"] == ["customs:1"]
    assert "police:2" in published[f"alert:{to_all}"].meta["to_index"]


def _alarmed(report_alarms: object) -> list[tuple[str, str | None]]:
    return [(a.kind, a.message_id) for a in report_alarms]  # type: ignore[attr-defined]


def test_a_removed_recipient_row_is_caught_by_the_monitor_and_the_cli(
    exchange: Exchange, tmp_path: Path
) -> None:
    kept = _publish(exchange, ["police"], "reaches police")
    withheld = _publish(exchange, ["police", "labour"], "kept from police")
    # An insider with the database removes police's recipient row: police's reads and
    # subscription no longer find the alert, and nothing on the exchange says so.
    withhold(exchange.server.database, withheld, "police")
    metrics = tmp_path / "sinergi.prom"
    result = run(
        "monitor",
        "--identity", str(exchange.pki / "police"),
        "--server", exchange.server.address,
        "--witness-policy", str(exchange.policy),
        "--grace", "0",
        "--metrics-file", str(metrics),
        "--json",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    report = last_json(result)
    assert report["ok"] is False
    assert report["cosigners"] == ["internal-affairs", "police"]
    assert [(a["kind"], a["message_id"]) for a in report["alarms"]] == [  # type: ignore[attr-defined]
        ("not-received", withheld)
    ]
    assert kept not in json.dumps(report["alarms"])
    assert 'sinergi_monitor_suppression_alarms{agency="police"} 1' in metrics.read_text()
    # labour still has its row, but the rows no longer match what the sender signed, so the
    # exchange refuses the thread to everyone (and logs it): labour's monitor says so too.
    client, monitor = _monitor(exchange, "labour", grace=0, confirm="get")
    with client:
        assert _alarmed(monitor.check().alarms) == [("not-received", withheld)]
    # The human report names the alert; the alarm stands on the next run until cleared.
    again = run(
        "monitor", "--identity", str(exchange.pki / "police"), "--server",
        exchange.server.address, "--witness-policy", str(exchange.policy), "--clear-alarms",
    )  # fmt: skip
    assert again.returncode == 1
    assert f"SUPPRESSION: PUBLISH {withheld}" in again.stdout
    cleared = run(
        "monitor", "--identity", str(exchange.pki / "police"), "--server",
        exchange.server.address, "--witness-policy", str(exchange.policy),
    )  # fmt: skip
    assert cleared.returncode == 0, cleared.stdout
    assert "no suppression found" in cleared.stdout
    assert "no witness policy" not in cleared.stdout  # witnessed: no warning


@pytest.fixture
def filtered(monkeypatch: pytest.MonkeyPatch) -> None:
    """The exchange's code changed to drop, from police's subscription only, every message
    whose summary says WITHHELD: what a subverted server would do (GetAlert still serves it)."""
    real = exchange_service.deliverable

    def deliverable(connection: sqlalchemy.Connection, page: list, agency: str) -> Checked:  # type: ignore[type-arg]
        checked = real(connection, page, agency)
        if agency == "police":
            checked.served[:] = [m for m in checked.served if m[0].alert.summary != "WITHHELD"]
        return checked

    monkeypatch.setattr(exchange_service, "deliverable", deliverable)


@pytest.mark.usefixtures("filtered")
def test_a_filtered_subscription_is_caught_by_deliveries(exchange: Exchange) -> None:
    client, monitor = _monitor(exchange, "police", grace=0)
    with client:
        stream = monitor.watching(client.subscribe())
        delivered = _publish(exchange, ["police"], "delivered")
        withheld = _publish(exchange, ["police"], "WITHHELD")
        after = _publish(exchange, ["police"], "delivered after it")
        got = [next(stream).alert.id, next(stream).alert.id]
        assert got == [delivered, after]  # the withheld one never came
        report = monitor.check()
        # GetAlert would have shown it: confirming by deliveries is what catches this.
        assert client.get_alert(withheld).id == withheld
    assert _alarmed(report.alarms) == [("not-received", withheld)]
    assert report.received == 2


@pytest.mark.usefixtures("filtered")
def test_watch_with_monitor_raises_the_alarm_where_it_runs(exchange: Exchange) -> None:
    watch = subprocess.Popen(
        [
            *SINERGI, "alert", "watch", "--identity", str(exchange.pki / "police"),
            "--server", exchange.server.address, "--witness-policy", str(exchange.policy),
            "--monitor", "--monitor-interval", "0.2", "--grace", "0.5", "--json",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert watch.stdout is not None
        delivered = _publish(exchange, ["police"], "delivered")
        first = json.loads(watch.stdout.readline())
        assert first["alert"]["id"] == delivered
        withheld = _publish(exchange, ["police"], "WITHHELD")
        alarm = json.loads(watch.stdout.readline())  # the next line: nothing else comes
        assert alarm["kind"] == "not-received"
        assert alarm["message_id"] == withheld
    finally:
        watch.terminate()
        _out, err = watch.communicate(timeout=30)
    assert f"SUPPRESSION: PUBLISH {withheld}" in err


def test_an_entry_kept_from_the_monitor_shows_as_a_gap(
    exchange: Exchange, monkeypatch: pytest.MonkeyPatch
) -> None:
    _publish(exchange, ["police"], "one")
    hidden = _publish(exchange, ["police"], "two")
    _publish(exchange, ["police"], "three")
    real = audit_service.envelopes_for

    def envelopes_for(*args: object) -> list[ledger_pb2.Envelope]:
        found = real(*args)  # type: ignore[arg-type]
        return [e for e in found if f"alert:{hidden}".encode() not in e.entry]

    monkeypatch.setattr(audit_service, "envelopes_for", envelopes_for)
    client, monitor = _monitor(exchange, "police", grace=0, confirm="get")
    with client:
        report = monitor.check()
    assert report.found == 2
    assert _alarmed(report.alarms) == [("withheld-entry", None)]
    assert report.alarms[0].number == 2
    assert report.received == 2  # the two it was shown


def test_an_alert_to_every_member_is_expected_by_each_receiving_agency(exchange: Exchange) -> None:
    everyone = _publish(exchange, ["*"], "to all", "PEOPLE_SMUGGLING")
    for agency in ("police", "customs", "labour"):
        client, monitor = _monitor(exchange, agency, grace=3600, confirm="deliveries")
        with client:
            report = monitor.check()
        assert [p.message_id for p in report.pending] == [everyone], agency
    # immigration sent it: it is not addressed to itself.
    client, monitor = _monitor(exchange, "immigration", grace=0, confirm="get")
    with client:
        assert monitor.check().found == 0


def test_a_checkpoint_without_its_quorum_is_refused(exchange: Exchange, tmp_path: Path) -> None:
    _publish(exchange, ["police"], "one")
    # A policy that also needs a third witness, which never cosigned anything.
    (tmp_path / "third").mkdir()
    write_cosigning_key(tmp_path / "third", "sinergi.dev/witness/third")
    third = (tmp_path / "third" / WITNESS_VERIFIER_FILE).read_text().strip()
    group = "group dev-witnesses all internal-affairs police"
    text = exchange.policy.read_text().replace(
        group, f"witness third {third} https://127.0.0.1:9\n{group} third"
    )
    strict = tmp_path / "strict-policy"
    strict.write_text(text)
    client = ExchangeClient(exchange.pki / "police", exchange.server.address, witness_policy=strict)
    with client, pytest.raises(QuorumFailed):
        Monitor(client, tmp_path / "monitor.json").check()
    assert not (tmp_path / "monitor.json").exists()


def test_a_checkpoint_inconsistent_with_the_state_is_refused(exchange: Exchange) -> None:
    _publish(exchange, ["police"], "one")
    client, monitor = _monitor(exchange, "police", grace=3600)
    with client:
        monitor.check()
        state = json.loads(monitor.path.read_text())
        state["root"] = "00" * 32  # a checkpoint of another history at the same size
        monitor.path.write_text(json.dumps(state))
        _publish(exchange, ["police"], "two")
        with pytest.raises(ForkDetected):
            monitor.check()


def test_envelopes_are_only_ones_own_and_asking_for_others_is_denied_and_recorded(
    exchange: Exchange,
) -> None:
    _publish(exchange, ["customs"], "customs only", "PEOPLE_SMUGGLING")
    audit = ledger_pb2_grpc.AuditLedgerStub(channel(exchange.server, "police"))
    mine = audit.GetEnvelopes(ledger_pb2.GetEnvelopesRequest(start=1))
    assert list(mine.envelopes) == []
    with pytest.raises(grpc.RpcError) as refused:
        audit.GetEnvelopes(ledger_pb2.GetEnvelopesRequest(agency="customs", start=1))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    auditor = ledger_pb2_grpc.AuditLedgerStub(channel(exchange.server, "internal-affairs"))
    with pytest.raises(grpc.RpcError) as no_role:
        auditor.GetEnvelopes(ledger_pb2.GetEnvelopesRequest(start=1))
    assert no_role.value.code() == grpc.StatusCode.PERMISSION_DENIED
    entries = exchange.server.entries()
    denied = [
        e for e in entries if e.action is Action.DENIED and "GetEnvelopes" in e.meta["method"]
    ]
    assert len(denied) == 2
    recorded = [e for e in entries if e.meta.get("method") == "GetEnvelopes"]
    assert recorded[-1].meta["results"] == 0


def test_the_proof_bundle_verifies_offline_and_fails_when_any_byte_changes(
    exchange: Exchange, tmp_path: Path
) -> None:
    alert_id = _publish(exchange, ["police"], "proof of record")
    bundle = tmp_path / "alert.proof.json"
    made = run(
        "alert", "proof", alert_id, "--identity", str(exchange.pki / "police"),
        "--server", exchange.server.address, "--witness-policy", str(exchange.policy),
        "--output", str(bundle), "--json",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    check = ["ledger", "verify-proof", str(bundle), "--identity", str(exchange.pki / "police"),
             "--witness-policy", str(exchange.policy), "--json"]  # fmt: skip
    verified = run(*check)
    assert verified.returncode == 0, verified.stderr
    assert last_json(verified)["alert_id"] == alert_id
    assert last_json(verified)["cosigners"] == ["internal-affairs", "police"]
    # Any byte of what the bundle proves changed: refused, in the library and by the CLI.
    proof = AlertProof.loads(bundle.read_text())
    with exchange.client("police") as client:
        client.verify_proof(proof)
        for field in ("message", "entry", "note"):
            data = getattr(proof, field)
            for i in range(len(data)):
                changed = bytearray(data)
                changed[i] ^= 0x01
                forged = AlertProof(**{**proof.__dict__, field: bytes(changed)})
                with pytest.raises(VerificationFailed):
                    client.verify_proof(forged)
        for i, node in enumerate(proof.proof):
            nodes = list(proof.proof)
            nodes[i] = bytes([node[0] ^ 1]) + node[1:]
            with pytest.raises(VerificationFailed):
                client.verify_proof(AlertProof(**{**proof.__dict__, "proof": tuple(nodes)}))
    data = json.loads(bundle.read_text())
    data["seq"] += 1
    bundle.write_text(json.dumps(data))
    forged = run(*check)
    assert forged.returncode == 1
    assert "proof" in forged.stderr
    # The read is recorded: who asked for the proof of which alert.
    reads = [e for e in exchange.server.entries() if e.meta.get("method") == "GetAlertProof"]
    assert [e.objects for e in reads] == [(f"alert:{alert_id}",)]


def test_an_alert_another_agency_may_not_see_has_no_proof_for_it(exchange: Exchange) -> None:
    alert_id = _publish(exchange, ["customs"], "customs only", "PEOPLE_SMUGGLING")
    with exchange.client("labour") as client:
        with pytest.raises(Refused) as refused:
            client.alert_proof(alert_id)
    assert refused.value.code == grpc.StatusCode.NOT_FOUND
    denied = [e for e in exchange.server.entries() if e.action is Action.DENIED]
    assert [e.objects for e in denied] == [(f"alert:{alert_id}",)]


def test_a_number_taken_back_by_the_database_shows_in_verify_and_the_monitor(
    exchange: Exchange, verifier: Verifier
) -> None:
    _publish(exchange, ["police"], "one")
    second = _publish(exchange, ["police"], "two")
    # An insider deletes police's last number, so the next entry to police repeats it: the
    # two entries given one number are what hides an entry from a monitor.
    engine = sqlalchemy.create_engine(exchange.server.database)
    with engine.begin() as connection:
        connection.execute(
            sqlalchemy.text("DELETE FROM envelope_numbers WHERE agency = 'police' AND number = 2")
        )
    engine.dispose()
    third = _publish(exchange, ["police"], "three")
    with pytest.raises(VerificationError, match="two entries share a number"):
        ledger.store.verify_database(exchange.server.database, [verifier], workers=1)
    published = {
        e.objects[0]: e.meta["to_index"]
        for e in exchange.server.entries()
        if e.action is Action.PUBLISH
    }
    assert published[f"alert:{second}"] == published[f"alert:{third}"] == ["police:2"]
    client, monitor = _monitor(exchange, "police", grace=3600)
    with client, pytest.raises(VerificationFailed, match="two entries one number"):
        monitor.check()
