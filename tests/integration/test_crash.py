"""Crash safety: a real `sinergi serve` killed with SIGKILL at random moments under load.

Publishers, an acknowledging recipient and two subscribers run against one `sinergi serve`
process on a fixed port; the process is killed (SIGKILL: no shutdown code runs) at a seeded
random moment and restarted, again and again. Afterwards every write a client was told succeeded
(a publish or an acknowledgement with a *verified* receipt) must be in the database with the very
ledger entry its receipt proved, no state may exist without its entry nor an entry without its
state, `sinergi ledger verify` must pass, and both subscribers (one resuming from its own cursor
on every restart, one with the client library's automatic reconnection) must have received every
acknowledged alert, in cursor order.

``SINERGI_CRASH_KILLS`` sets the kills per database (3 here; `make crash` runs 20),
``SINERGI_CRASH_SEED`` the seed of the kill moments, and ``SINERGI_CRASH_REPORT`` a file to which
each run appends its figures as one JSON line (docs/reliability.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc

import ledger
import ledger.store
from clients import ClientError, ExchangeClient, Refused, Unreachable, new_alert, parse_subjects
from exchange._bodies import alert_context
from exchange._sealing import Keyring, write_kek_file
from ledger import Action
from sinergi.v1 import alert_pb2
from tests.clients.conftest import last_json, run
from tests.conftest import wait_for
from tests.integration.support import Collector, ServeProcess, serve_process

KILLS = int(os.environ.get("SINERGI_CRASH_KILLS", "3"))
SEED = int(os.environ.get("SINERGI_CRASH_SEED", "20261123"))
#: How long the load runs before the kill, at most (seconds); the moment is drawn uniformly.
MAX_DELAY = float(os.environ.get("SINERGI_CRASH_MAX_DELAY", "1.0"))
#: Codes a client may get while the server dies or restarts; anything else is a failure.
_GOING_AWAY = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
               grpc.StatusCode.CANCELLED}  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Load:
    """Client threads that keep working across restarts. Each opens a fresh client per server
    generation and, when a call fails because the server died, waits for the next one."""

    pki: Path
    address: str
    published: dict[str, ledger.Entry] = field(default_factory=dict)  # acknowledged publishes
    acked: dict[str, ledger.Entry] = field(default_factory=dict)  # acknowledged acks, by alert
    delivered: list[tuple[int, str]] = field(default_factory=list)  # (cursor, id), own resume
    attempts: int = 0
    unexpected: list[str] = field(default_factory=list)
    generation: int = 0
    stopping: bool = False

    def __post_init__(self) -> None:
        self._changed = threading.Condition()
        self._workers = [self._thread(self._publisher) for _ in range(3)]
        self._workers.append(self._thread(self._acknowledger))
        self._subscriber_thread = self._thread(self._subscriber)
        self._open: list[ExchangeClient] = []

    def _thread(self, target: Callable[[], None]) -> threading.Thread:
        def run() -> None:
            try:
                target()
            except Exception as exc:  # a load thread must not die unnoticed
                self.unexpected.append(f"{target.__name__}: {type(exc).__name__}: {exc}")

        return threading.Thread(target=run, name=target.__name__, daemon=True)

    def start(self) -> None:
        for thread in (*self._workers, self._subscriber_thread):
            thread.start()

    def next_generation(self) -> None:
        """A new server process is listening."""
        with self._changed:
            self.generation += 1
            self._changed.notify_all()

    def stop_workers(self) -> None:
        """Publishers and the acknowledger stop after their current call; subscribers go on."""
        with self._changed:
            self.stopping = True
            self._changed.notify_all()
        for thread in self._workers:
            thread.join(30)
            assert not thread.is_alive(), "a load thread did not stop"

    def stop_subscriber(self) -> None:
        """After the server stopped (its stream ended) or to clean up."""
        for client in self._open:
            client.close()
        self._subscriber_thread.join(30)

    def _generations(self, who: str) -> Iterator[ExchangeClient]:
        seen = 0
        while True:
            with self._changed:
                self._changed.wait_for(lambda s=seen: self.stopping or self.generation > s)
                if self.stopping and who != "subscriber":
                    return
                seen = self.generation
            client = ExchangeClient(self.pki / ("immigration" if who == "publisher" else
                                                "police"), self.address, timeout=5)  # fmt: skip
            self._open.append(client)
            try:
                yield client
            finally:
                client.close()
            if self.stopping:
                return

    def _failed(self, exc: ClientError) -> None:
        """Only "the server went away" is expected; any refusal or bad receipt is a failure."""
        if (isinstance(exc, Refused) and exc.code in _GOING_AWAY) or isinstance(exc, Unreachable):
            return
        self.unexpected.append(f"{type(exc).__name__}: {exc}")

    def _publisher(self) -> None:
        for client in self._generations("publisher"):
            while not self.stopping:
                alert = new_alert(
                    category="PASSPORT_HOLD",
                    recipients=["police", "labour"],
                    summary="crash test",
                    subjects=parse_subjects(["passport=C1234567"]),
                )
                self.attempts += 1
                try:
                    done = client.publish(alert)
                except ClientError as exc:
                    self._failed(exc)
                    break
                with self._changed:
                    self.published[done.alert_id] = done.receipt.entry
                    self._changed.notify_all()

    def _acknowledger(self) -> None:
        for client in self._generations("acknowledger"):
            while not self.stopping:
                with self._changed:  # wait for a publish not yet acknowledged
                    self._changed.wait_for(
                        lambda: self.stopping or len(self.acked) < len(self.published)
                    )
                    todo = [a for a in self.published if a not in self.acked]
                if not todo:
                    break
                try:
                    done = client.acknowledge(todo[0], alert_pb2.RESPONSE_RECEIVED)
                except ClientError as exc:
                    self._failed(exc)
                    break
                self.acked[todo[0]] = done.receipt.entry

    def _subscriber(self) -> None:
        """Resumes after the last cursor it received, on every restart."""
        cursor = 0
        for client in self._generations("subscriber"):
            try:
                for delivery in client.subscribe(after=cursor, reconnect=False):
                    if delivery.cursor <= cursor:
                        self.unexpected.append(f"cursor {delivery.cursor} after {cursor}")
                    cursor = delivery.cursor
                    self.delivered.append((cursor, delivery.alert.id))
            except ClientError as exc:
                if not self.stopping:
                    self._failed(exc)
            except ValueError:  # its channel was closed by stop_subscriber
                return


def _serve(db: str, pki: Path, port: int, kek: Path) -> ServeProcess:
    return serve_process(db, pki, "--listen", f"127.0.0.1:{port}", "--grace-seconds", "1",
                         "--kek-file", str(kek))  # fmt: skip


def _check_database(db: str, load: Load, keys: Keyring) -> dict[str, int]:
    """Everything acknowledged is there with the entry its receipt proved; nothing half-written."""
    engine = ledger.store.create_engine(db)
    try:
        with engine.connect() as connection:
            entries = {
                seq: ledger.Entry.decode(body)
                for seq, _, body in ledger.store.iter_entries(connection)
            }
            alerts = {  # every body sealed, and it opens: nothing half-written there either
                alert_id: (seq, keys.open(key_id, wrapped, body, alert_context(alert_id)))
                for alert_id, seq, body, key_id, wrapped in connection.exec_driver_sql(
                    "SELECT id, publish_seq, body, key_id, wrapped_key FROM alerts"
                )
            }
            acks = [
                (row[0], row[1])
                for row in connection.exec_driver_sql(
                    "SELECT alerts.id, acknowledgements.agency FROM acknowledgements "
                    "JOIN alerts ON alerts.position = acknowledgements.alert_position"
                )
            ]  # a retried acknowledgement (its first answer lost in a kill) is a second row
    finally:
        engine.dispose()
    for alert_id, entry in load.published.items():
        assert entries.get(entry.seq) == entry, f"receipted PUBLISH entry {entry.seq} lost"
        assert alert_id in alerts, f"acknowledged alert {alert_id} lost"
        assert entry.digest == hashlib.sha256(alerts[alert_id][1]).hexdigest()
    for alert_id, entry in load.acked.items():
        assert entries.get(entry.seq) == entry, f"receipted ACK entry {entry.seq} lost"
        assert (alert_id, "police") in acks, f"acknowledgement of {alert_id} lost"
    # No state without its entry, no entry without its state.
    for alert_id, (seq, body) in alerts.items():
        entry = entries[seq]
        assert entry.action == Action.PUBLISH, f"alert {alert_id}: entry {seq} is {entry.action}"
        assert f"alert:{alert_id}" in entry.objects
        assert entry.digest == hashlib.sha256(body).hexdigest()
    published = [e for e in entries.values() if e.action == Action.PUBLISH]
    assert len(published) == len(alerts)
    assert sum(e.action == Action.ACK for e in entries.values()) == len(acks)
    return {
        "entries": len(entries),
        "starts": sum(e.action == Action.START for e in entries.values()),
        "alerts_stored": len(alerts),
        "acks_stored": len(acks),
    }


def test_sigkill_under_load_loses_nothing_acknowledged(
    db_url: str, pki: Path, tmp_path: Path
) -> None:
    rng = random.Random(f"{SEED}:{db_url.split(':', maxsplit=1)[0]}")
    kek = tmp_path / "sinergi.kek"  # served as `make run` serves: bodies encrypted at rest
    write_kek_file(kek)
    port = _free_port()
    address = f"127.0.0.1:{port}"
    load = Load(pki, address)
    load.start()
    library_subscriber: Collector | None = None
    process = _serve(db_url, pki, port, kek)
    started = time.monotonic()
    try:
        load.next_generation()
        # A subscriber that relies on the client library to reconnect and resume by itself.
        library_subscriber = Collector(process, "labour")
        for _ in range(KILLS):
            before = len(load.published)
            wait_for(lambda b=before: len(load.published) >= b + 2, 60, "publishes under load")
            time.sleep(rng.uniform(0.0, MAX_DELAY))  # the random moment (seeded)
            process.process.kill()
            process.process.wait(10)
            process = _serve(db_url, pki, port, kek)
            load.next_generation()
        # After the last restart: more load, then everyone must have caught up.
        before = len(load.published)
        wait_for(lambda: len(load.published) >= before + 5, 60, "publishes after the restarts")
        load.stop_workers()
        expected = set(load.published)
        wait_for(lambda: expected <= {i for _, i in load.delivered} or load.unexpected, 60,
                 "the resuming subscriber to catch up")  # fmt: skip
        assert library_subscriber is not None
        wait_for(lambda: expected <= set(library_subscriber.ids()), 90,
                 "the library subscriber to catch up")  # fmt: skip
    finally:
        load.stop_workers()
        if process.process.poll() is None:
            assert process.stop() == 0  # SIGTERM: subscriptions end with UNAVAILABLE
        load.stop_subscriber()
        if library_subscriber is not None:
            library_subscriber.stop()
    assert load.unexpected == []
    cursors = [c for c, _ in load.delivered]
    assert cursors == sorted(set(cursors)), "deliveries out of cursor order or repeated"
    figures = _check_database(db_url, load, Keyring.load(kek))
    assert figures["starts"] == KILLS + 1
    verified = run("ledger", "verify", "--db", db_url, "--ledger-key", str(pki / "ledger.vkey"),
                   "--json")  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert last_json(verified)["ok"] is True
    report = {
        "database": db_url.split(":", maxsplit=1)[0].split("+", maxsplit=1)[0],
        "kills": KILLS,
        "seed": SEED,
        "seconds": round(time.monotonic() - started, 1),
        "publish_attempts": load.attempts,
        "acknowledged_publishes": len(load.published),
        "acknowledged_acks": len(load.acked),
        "committed_unacknowledged_publishes": figures["alerts_stored"] - len(load.published),
        "ledger_entries": figures["entries"],
        "lost": 0,  # every check above passed
    }
    print("crash-report", json.dumps(report))
    if target := os.environ.get("SINERGI_CRASH_REPORT"):
        with open(target, "a", encoding="utf-8") as out:
            out.write(json.dumps(report) + "\n")
