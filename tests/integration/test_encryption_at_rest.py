"""Alert and acknowledgement bodies encrypted at rest (exchange/_sealing.py): a dump of the
database holds none of the personal data, everything still works, KEKs rotate, and a body moved
to another row is refused rather than shown."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
import sqlalchemy
from google.protobuf import json_format

from clients import ExchangeClient, Refused, new_alert, parse_subjects
from exchange._sealing import Keyring, write_kek_file
from ledger import Action
from sinergi.v1 import alert_pb2
from tests.clients.conftest import last_json, run
from tests.conftest import RunningServer
from tests.integration.test_retention import _dump as database_dump

SUMMARY = "Suspect moves recruits through Batam harbour on the night ferry"
PASSPORT = "C7654321"
IMEI = "490154203237518"
NOTE = "Officer Wulan will interview the recruits at Sekupang"


IMMIGRATION = "spiffe://sinergi.dev/agency/immigration/system/gateway"


def _dump(url: str) -> bytes:
    """Every value of every row of every table, as a database administrator could read it."""
    engine = sqlalchemy.create_engine(url)
    out = bytearray()
    try:
        with engine.connect() as connection:
            for table in sqlalchemy.inspect(connection).get_table_names():
                for row in connection.execute(sqlalchemy.text(f'SELECT * FROM "{table}"')):
                    for value in row:
                        out += value if isinstance(value, bytes) else str(value).encode()
                        out += b"\n"
    finally:
        engine.dispose()
    # And what a thief of the files or a `pg_dump` would get: free pages, the WAL, everything.
    return bytes(out) + database_dump(url)


def _personal_data() -> list[bytes]:
    return [
        SUMMARY.encode(), b"Batam harbour", PASSPORT.encode(), IMEI.encode(), NOTE.encode(),
        # the search index no longer holds a plain, recomputable hash of the identifiers
        hashlib.sha256(f"passport:{PASSPORT}".encode()).hexdigest().encode(),
        hashlib.sha256(f"imei:{IMEI}".encode()).hexdigest().encode(),
    ]  # fmt: skip


def _publish(server: RunningServer, summary: str = SUMMARY) -> str:
    with ExchangeClient(server.pki / "immigration", server.address) as client:
        return client.publish(
            new_alert(
                category="PASSPORT_HOLD",
                recipients=["police"],
                summary=summary,
                subjects=parse_subjects([f"passport={PASSPORT}", f"imei={IMEI}"]),
            )
        ).alert_id


def _search(server: RunningServer, **identifier: str) -> list[str]:
    with ExchangeClient(server.pki / "police", server.address) as client:
        return [view.id for view in client.search_alerts(**identifier)]


def test_a_database_dump_holds_no_personal_data_and_everything_works(
    start_server: Callable[..., RunningServer], db_url: str, tmp_path: Path
) -> None:
    kek = tmp_path / "sinergi.kek"
    assert write_kek_file(kek)[0]
    assert kek.stat().st_mode & 0o777 == 0o600
    server = start_server(db_url, kek_file=kek)
    alert_id = _publish(server)
    with ExchangeClient(server.pki / "police", server.address) as police:
        delivery = next(police.subscribe(after=0))
        assert delivery.alert.id == alert_id
        assert delivery.alert.summary == SUMMARY
        view = police.get_alert(alert_id)
        assert view.current.summary == SUMMARY
        assert view.current.subjects[0].person.passport_number == PASSPORT
        police.acknowledge(alert_id, alert_pb2.RESPONSE_ACCEPTED, note=NOTE)
    assert _search(server, passport=PASSPORT.lower()) == [alert_id]
    assert _search(server, imei=IMEI) == [alert_id]
    with ExchangeClient(server.pki / "immigration", server.address) as sender:
        assert [a.note for a in sender.acknowledgements(alert_id)] == [NOTE]

    dump = _dump(db_url)
    assert alert_id.encode() in dump  # the dump is real: the envelope is there
    for secret in _personal_data():
        assert secret not in dump, f"{secret!r} is readable in the database"

    # The ledger's digests are over the plaintext, as docs/ledger-format.md 1.4 says: the
    # PUBLISH and every DELIVER entry match the alert as delivered, and `audit match` finds them
    # from a retained copy.
    body = view.current.SerializeToString(deterministic=True)
    digest = hashlib.sha256(body).hexdigest()
    entries = server.entries()
    matching = {e.action for e in entries if e.digest == digest}
    assert matching == {Action.PUBLISH, Action.DELIVER}
    copy = tmp_path / "alert.json"
    copy.write_text(json_format.MessageToJson(view.current))
    matched = run("audit", "match", "--alert-file", str(copy), "--db", db_url,
                  "--ledger-key", str(server.pki / "ledger.vkey"), "--json")  # fmt: skip
    assert matched.returncode == 0, matched.stderr
    assert {e["action"] for e in last_json(matched)["entries"]} == {"PUBLISH", "DELIVER"}  # type: ignore[union-attr]
    verified = run("ledger", "verify", "--db", db_url,
                   "--ledger-key", str(server.pki / "ledger.vkey"), "--json")  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_keks_rotate_and_old_rows_stay_readable(
    start_server: Callable[..., RunningServer], sqlite_url: str, tmp_path: Path
) -> None:
    kek = tmp_path / "sinergi.kek"
    _, first_id = write_kek_file(kek)
    first = start_server(sqlite_url, kek_file=kek)
    old = _publish(first, "sealed under the first key")
    first.server_thread.stop()

    written, second_id = write_kek_file(kek, rotate=True)
    assert written
    assert second_id != first_id
    assert Keyring.load(kek).ids == (second_id, first_id)
    second = start_server(sqlite_url, kek_file=kek)
    new = _publish(second, "sealed under the second key")
    engine = sqlalchemy.create_engine(sqlite_url)
    with engine.connect() as connection:
        key_ids = dict(connection.execute(sqlalchemy.text("SELECT id, key_id FROM alerts")).all())
    engine.dispose()
    assert key_ids == {old: first_id, new: second_id}
    with ExchangeClient(second.pki / "police", second.address) as police:
        assert police.get_alert(old).current.summary == "sealed under the first key"
    # Rows indexed under either key are found by one search.
    assert sorted(_search(second, passport=PASSPORT)) == sorted([old, new])
    second.server_thread.stop()

    # Dropping the old KEK makes its rows unreadable: refused as INTERNAL, never shown wrong.
    kek.write_text(kek.read_text().splitlines()[0] + "\n")
    third = start_server(sqlite_url, kek_file=kek)
    with ExchangeClient(third.pki / "police", third.address) as police:
        assert police.get_alert(new).current.summary == "sealed under the second key"
        with pytest.raises(Refused) as refused:
            police.get_alert(old)
    assert refused.value.code == grpc.StatusCode.INTERNAL
    assert "stored data cannot be read" in str(refused.value)


def test_reseal_lets_an_old_kek_go_and_seals_rows_stored_in_plain(
    start_server: Callable[..., RunningServer], db_url: str, tmp_path: Path
) -> None:
    plain_server = start_server(db_url)  # before encryption was turned on
    plain = _publish(plain_server, "stored before encryption")
    plain_server.server_thread.stop()
    kek = tmp_path / "sinergi.kek"
    _, old_id = write_kek_file(kek)
    first = start_server(db_url, kek_file=kek)
    sealed = _publish(first)
    with ExchangeClient(first.pki / "police", first.address) as police:
        police.acknowledge(sealed, alert_pb2.RESPONSE_ACCEPTED, note=NOTE)
    first.server_thread.stop()

    _, new_id = write_kek_file(kek, rotate=True)
    key = ("db", "reseal", "--db", db_url, "--kek-file", str(kek), "--json")
    done = last_json(run(*key))
    assert done == {"ok": True, "alerts": 2, "acknowledgements": 1, "key_id": new_id,
                    "keys_in_use": [new_id], "keys_no_longer_used": [old_id]}  # fmt: skip
    again = last_json(run(*key))  # nothing left to do: it is safe to run twice
    assert (again["alerts"], again["acknowledgements"]) == (0, 0)

    kek.write_text(kek.read_text().splitlines()[0] + "\n")  # the old key is gone
    server = start_server(db_url, kek_file=kek)
    with ExchangeClient(server.pki / "police", server.address) as police:
        assert police.get_alert(plain).current.summary == "stored before encryption"
        assert police.get_alert(sealed).current.summary == SUMMARY
    with ExchangeClient(server.pki / "immigration", server.address) as immigration:
        assert [a.note for a in immigration.acknowledgements(sealed)] == [NOTE]
    # The index was rebuilt under the new key alone, the plain row's included.
    assert sorted(_search(server, passport=PASSPORT)) == sorted([plain, sealed])
    dump = _dump(db_url)
    assert b"stored before encryption" not in dump
    assert [s for s in _personal_data() if s in dump] == []


def test_reseal_without_the_keys_in_use_changes_nothing(
    start_server: Callable[..., RunningServer], sqlite_url: str, tmp_path: Path
) -> None:
    kek, other = tmp_path / "sinergi.kek", tmp_path / "other.kek"
    write_kek_file(kek)
    write_kek_file(other)
    server = start_server(sqlite_url, kek_file=kek)
    alert_id = _publish(server)
    refused = run("db", "reseal", "--db", sqlite_url, "--kek-file", str(other), "--json")
    assert refused.returncode == 2
    assert "cannot be decrypted with the keys given" in last_json(refused)["error"]  # type: ignore[operator]
    no_keys = run(
        "db", "reseal", "--db", sqlite_url, "--json", env={**os.environ, "SINERGI_KEK": ""}
    )
    assert no_keys.returncode == 2
    with ExchangeClient(server.pki / "police", server.address) as police:
        assert police.get_alert(alert_id).current.summary == SUMMARY


def test_a_body_moved_to_another_row_is_refused(
    start_server: Callable[..., RunningServer], sqlite_url: str, tmp_path: Path
) -> None:
    kek = tmp_path / "sinergi.kek"
    write_kek_file(kek)
    server = start_server(sqlite_url, kek_file=kek)
    first, second = _publish(server, "first"), _publish(server, "second")
    engine = sqlalchemy.create_engine(sqlite_url)
    with engine.begin() as connection:  # a database administrator swaps two sealed bodies
        connection.execute(sqlalchemy.text(
            "UPDATE alerts SET body = (SELECT body FROM alerts WHERE id = :b), "
            "wrapped_key = (SELECT wrapped_key FROM alerts WHERE id = :b) WHERE id = :a"
        ), {"a": first, "b": second})  # fmt: skip
    engine.dispose()
    with ExchangeClient(server.pki / "police", server.address) as police:
        with pytest.raises(Refused) as refused:
            police.get_alert(first)
        assert police.get_alert(second).current.summary == "second"
    assert refused.value.code == grpc.StatusCode.INTERNAL


def test_db_kek_creates_once_and_refuses_a_bad_file(tmp_path: Path) -> None:
    kek = tmp_path / "var" / "sinergi.kek"
    created = last_json(run("db", "kek", "--kek-file", str(kek), "--json"))
    assert created["written"] is True
    assert created["key_id"] == Keyring.load(kek).current_id
    assert write_kek_file(kek) == (False, created["key_id"])  # kept: never overwritten
    kek.write_text("not base64!\n")
    bad = run("db", "kek", "--kek-file", str(kek), "--rotate", "--json")
    assert bad.returncode != 0
    assert "not base64" in json.loads(bad.stdout.strip().splitlines()[-1])["error"]
    assert kek.read_text() == "not base64!\n"  # a refused rotation wrote nothing


def test_retention_purges_sealed_alerts_and_seals_what_it_keeps(
    start_server: Callable[..., RunningServer], sqlite_url: str, tmp_path: Path
) -> None:
    kek = tmp_path / "sinergi.kek"
    write_kek_file(kek)
    server = start_server(sqlite_url, kek_file=kek)
    alert_id = _publish(server)
    with ExchangeClient(server.pki / "police", server.address) as police:
        police.acknowledge(alert_id, alert_pb2.RESPONSE_ACCEPTED, note=NOTE)
    with ExchangeClient(server.pki / "immigration", server.address) as immigration:
        immigration.cancel(alert_id, "issued in error")
    key = ("--db", sqlite_url, "--pki", str(server.pki), "--json")
    without = run("db", "purge", "--older-than", "0", *key)  # the bodies cannot be opened
    assert without.returncode == 2  # a configuration problem, as for any missing key file
    assert "cannot be decrypted" in last_json(without)["error"]  # type: ignore[operator]
    done = run("db", "purge", "--older-than", "0", "--kek-file", str(kek), *key)
    assert done.returncode == 0, done.stdout + done.stderr
    with ExchangeClient(server.pki / "immigration", server.address) as immigration:
        view = immigration.get_alert(alert_id)  # the redacted bodies are sealed and open
        assert view.current.summary == "[removed under retention]"
        # The signed statements held the personal data too: gone, and said so, not forged.
        signed = [immigration.verify_sender(m, view.history[0]) for m in view.history]
        assert [(s.redacted, str(s.sender)) for s in signed] == [(True, IMMIGRATION)] * 2
        assert all(not m.signature.statement for m in view.history)
        assert [a.note for a in immigration.acknowledgements(alert_id)] == [""]
    engine = sqlalchemy.create_engine(sqlite_url)
    with engine.connect() as connection:
        unsealed = connection.execute(sqlalchemy.text(
            "SELECT (SELECT count(*) FROM alerts WHERE key_id IS NULL) + "
            "(SELECT count(*) FROM acknowledgements WHERE key_id IS NULL)"
        )).scalar_one()  # fmt: skip
    engine.dispose()
    assert unsealed == 0


def test_an_auditor_matches_a_sealed_alert_with_the_kek(
    start_server: Callable[..., RunningServer], sqlite_url: str, tmp_path: Path
) -> None:
    kek = tmp_path / "sinergi.kek"
    write_kek_file(kek)
    server = start_server(sqlite_url, kek_file=kek)
    with ExchangeClient(server.pki / "immigration", server.address) as client:
        alert_id = client.publish(
            new_alert(category="PASSPORT_HOLD", recipients=["police"], summary="sealed")
        ).alert_id
    key = ["--db", sqlite_url, "--ledger-key", str(server.pki / "ledger.vkey"), "--json"]
    without = run("audit", "match", "--alert", alert_id, *key)
    assert without.returncode == 2
    assert "--kek-file" in without.stderr
    found = run("audit", "match", "--alert", alert_id, "--kek-file", str(kek), *key)
    assert found.returncode == 0, found.stderr
    assert [e["action"] for e in last_json(found)["entries"]] == ["PUBLISH"]  # type: ignore[index, union-attr]
