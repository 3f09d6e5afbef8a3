"""Retention: `sinergi db purge` removes the personal data of alerts past retention, records a
REDACT entry per alert, and leaves the ledger verifiable."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.engine import make_url

from clients import ExchangeClient, new_alert, parse_subjects
from exchange._retention import REDACTED
from ledger import Action
from sinergi.v1 import alert_pb2, exchange_pb2
from tests.clients.conftest import last_json, run
from tests.conftest import RunningServer, require_tool, wait_for
from tests.integration.support import stub

SECRETS = ("P1000001", "P1000003", "Applicant held at Batam", "recruiter was his uncle")


def _dump(url: str) -> bytes:
    """Everything the database would give a thief: the files, or a full logical dump."""
    if url.startswith("sqlite"):
        # Read in another process: closing any descriptor of a database file drops this
        # process's POSIX locks on it, which would corrupt the in-process server's view.
        path = Path(str(make_url(url).database))
        files = [str(p) for p in path.parent.glob(path.name + "*")]
        return subprocess.run(["cat", *files], capture_output=True, check=True).stdout
    pg_dump = require_tool("pg_dump", install="Debian: apt-get install postgresql-client")
    parsed = make_url(url)
    # bytea as escaped text, so the printable bytes inside stored messages stay searchable
    env = {**os.environ, "PGOPTIONS": "-c bytea_output=escape"}
    return subprocess.run(
        [pg_dump, "-h", str(parsed.host), "-p", str(parsed.port or 5432), "-U",
         str(parsed.username), str(parsed.database)],
        capture_output=True, check=True, timeout=60, env=env,
    ).stdout  # fmt: skip


def test_purge_removes_personal_data_and_keeps_the_ledger_verifiable(
    server: RunningServer, db_url: str
) -> None:
    expiring = new_alert(category="PASSPORT_HOLD", recipients=["police"],
                         summary="Applicant held at Batam", details="recruiter was his uncle",
                         subjects=parse_subjects(["passport=P1000001"]))  # fmt: skip
    expiring.expires.FromDatetime(datetime.now(UTC) + timedelta(seconds=1))
    with ExchangeClient(server.pki / "immigration", server.address) as immigration:
        expired = immigration.publish(expiring).alert_id
        kept = immigration.publish(new_alert(category="PASSPORT_HOLD", recipients=["police"],
                                             summary="still in force",
                                             subjects=parse_subjects(["passport=P1000002"]))
                                   ).alert_id  # fmt: skip
        cancelled = immigration.publish(new_alert(category="PASSPORT_HOLD", recipients=["police"],
                                                  summary="issued in error",
                                                  subjects=parse_subjects(["passport=P1000003"]))
                                        ).alert_id  # fmt: skip
        immigration.cancel(cancelled, "issued in error")
    with ExchangeClient(server.pki / "police", server.address) as police:
        police.acknowledge(expired, alert_pb2.RESPONSE_ACCEPTED, note="recruiter was his uncle")
    police_stub = stub(server, "police")

    def state(alert_id: str) -> int:
        return police_stub.GetAlert(exchange_pb2.GetAlertRequest(alert_id=alert_id)).state

    wait_for(lambda: state(expired) == alert_pb2.ALERT_STATE_EXPIRED, what="expiry")
    key = ["--pki", str(server.pki), "--db", db_url, "--json"]
    # The development policy keeps PASSPORT_HOLD data 365 days: nothing is due yet.
    assert last_json(run("db", "purge", *key))["alerts"] == []
    planned = last_json(run("db", "purge", "--older-than", "0", "--dry-run", *key))
    assert {a["alert"] for a in planned["alerts"]} == {expired, cancelled}  # type: ignore[index, union-attr]
    assert SECRETS[0].encode() in _dump(db_url)  # dry run: nothing changed

    done = run("db", "purge", "--older-than", "0", *key)
    assert done.returncode == 0, done.stderr
    assert {a["alert"] for a in last_json(done)["alerts"]} == {expired, cancelled}  # type: ignore[index, union-attr]
    view = police_stub.GetAlert(exchange_pb2.GetAlertRequest(alert_id=expired))
    assert view.current.summary == REDACTED
    assert not view.current.subjects
    assert view.current.category == alert_pb2.CATEGORY_PASSPORT_HOLD  # the envelope stays
    for passport, found in (("P1000001", []), ("P1000002", [kept]), ("P1000003", [])):
        reply = police_stub.SearchAlerts(exchange_pb2.SearchAlertsRequest(passport_number=passport))
        assert [v.id for v in reply.alerts] == found
    dump = _dump(db_url)
    for secret in SECRETS:
        assert secret.encode() not in dump, secret
    assert b"P1000002" in dump  # what is still in force stays
    redactions = [e for e in server.entries() if e.action == Action.REDACT]
    assert sorted(e.objects[0] for e in redactions) == sorted(
        [f"alert:{expired}", f"alert:{cancelled}"]
    )
    assert all(e.meta["retention_days"] == "0" for e in redactions)
    verified = run("ledger", "verify", "--db", db_url, "--ledger-key",
                   str(server.pki / "ledger.vkey"), "--json")  # fmt: skip
    assert last_json(verified)["ok"] is True, verified.stderr
    again = last_json(run("db", "purge", "--older-than", "0", *key))
    assert again["alerts"] == []
