"""Benchmark 10: the cost of correlation (exchange/_correlation.py) with 100,000 alerts stored.

    python -m bench --only 10 [--quick]

Correlation is computed when read (docs/decisions/0017): a publish stores its subjects' search
keys as it always did, and the related alerts are found for whoever reads them. What a publish
brings is the correlation its deliveries carry when the agencies watching ask for related alerts
(`sinergi alert watch`, ``SubscribeRequest.related``): with each message, the related alerts of
its thread that the agency may see, found once per read of a page.

Each run is `sinergi serve` (``serve_exchange``: its own process, no rate limit) on a copy of a
SQLite database holding ``stored`` alerts (100,000; 20,000 in bench-quick), signed by their
sender and indexed as the exchange stores them, each about a passport shared with about nine
others and a recruiting agency shared with about a hundred. Every agency is subscribed (one
stream each, in another process: ``bench._subscribers``) from the newest cursor, and 8
publishers (``bench._exchange``) publish as fast as they go for ``sizes.seconds``; the rate is
the publishes over the time to publish and deliver them all. Three kinds of run (:class:`Mode`),
each twice, the second round in the other order (the machine's speed drifts): every stream
asking for related alerts; the same alerts, no stream asking; no stream asking and alerts whose
identifiers no stored alert has. Then GetAlert of 200 stored alerts by one client: its latency,
related alerts included.
"""

from __future__ import annotations

import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding

from bench._build import copy_database, schema_fingerprint
from bench._common import CACHE, Child, Result, Sizes, fresh_copy, log, percentile, wait_for
from bench._exchange import (
    AGENCIES,
    _clients,
    _Deliveries,
    _expected,
    _measured,
    serve_exchange,
)
from certs import Signer, load_identity
from clients import ExchangeClient, new_alert, parse_subjects, sign_request
from sinergi.v1 import alert_pb2, exchange_pb2

#: Alerts about one passport, and about one recruiting agency, among those stored.
PER_PASSPORT = 10
PER_AGENCY = 100
_BATCH = 2_000  # alerts per transaction while building


def _alert(agency: str, n: int, stored: int, series: str = "B") -> alert_pb2.Alert:
    """Alert ``n``: GREEN, category OTHER, to the three other agencies (everyone may see it),
    about passport ``n // PER_PASSPORT`` and agency ``n % (stored // PER_AGENCY)`` of
    ``series`` (the stored alerts' is "B")."""
    passport = f"{series}{(n // PER_PASSPORT) % 10_000_000:07d}"
    recruiter = f"PT Penyalur Tenaga Kerja {series}{n % max(1, stored // PER_AGENCY)}"
    return new_alert(
        category="OTHER",
        recipients=[a for a in AGENCIES if a != agency],
        summary=f"Benchmark alert {n}: applicant recruited by an unlicensed agent",
        details="Reported at the Soekarno-Hatta immigration office; documents held for review.",
        subjects=parse_subjects(
            [f"passport={passport},nationality=ID", f"organisation={recruiter}"]
        ),
        handling="GREEN",
    )


def build_alerts(path: Path, pki: Path, stored: int) -> None:
    """A new SQLite database at ``path`` with ``stored`` alerts as the exchange stores them
    (signed by their sender's identity key, indexed), and an empty ledger."""
    from exchange import initialise_database  # noqa: PLC0415 - the server package, only here
    from exchange._validate import message_digest  # noqa: PLC0415
    from exchange._writes import insert_alert  # noqa: PLC0415
    from ledger.store import create_engine  # noqa: PLC0415

    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    url = f"sqlite:///{path}"
    initialise_database(url)
    senders = {}
    for agency in AGENCIES:
        identity = load_identity(pki / agency)
        assert identity.spiffe_id is not None
        der = identity.certificate.public_bytes(Encoding.DER)
        senders[agency] = (identity.spiffe_id, Signer(identity.key_pem), der)
    engine = create_engine(url)
    try:
        for start in range(0, stored, _BATCH):
            with engine.begin() as connection:
                for n in range(start, min(stored, start + _BATCH)):
                    agency = AGENCIES[n % 4]
                    spiffe, signer, der = senders[agency]
                    content = _alert(agency, n, stored)
                    request = exchange_pb2.PublishRequest(idempotency_key=f"b{n}", alert=content)
                    sign_request(request, signer, spiffe)
                    alert = alert_pb2.Alert()
                    alert.CopyFrom(content)
                    alert.id = str(uuid.uuid4())
                    alert.sender = str(spiffe)
                    alert.sent.GetCurrentTime()
                    alert.signature.CopyFrom(request.signature)
                    alert.signature.certificate = der
                    insert_alert(
                        connection,
                        alert,
                        alert.SerializeToString(deterministic=True),
                        sender_agency=agency,
                        idempotency_key=f"b{n}",
                        request_digest=message_digest(content),
                        publish_seq=0,
                    )
            if (start + _BATCH) % 20_000 == 0:
                log(f"  built {start + _BATCH:,} of {stored:,} alerts")
    finally:
        engine.dispose()


def cached_alerts(pki: Path, stored: int) -> Path:
    """A cached database of ``stored`` alerts signed by ``pki``'s identities, built if absent."""
    path = CACHE / f"alerts-{stored}-{schema_fingerprint()}.db"
    stamp = path.with_suffix(".ok")  # written last: a half-built database is never reused
    if not stamp.exists():
        log(f"building {stored:,} stored alerts (cached in {path.relative_to(CACHE.parent)})")
        build_alerts(path, pki, stored)
        stamp.write_text(f"{stored}\n")
    return path


def _publishers(
    clients: list[ExchangeClient], stored: int, *, shared: bool
) -> tuple[list[Callable[[], object]], list[dict[str, float]]]:
    """A publish call per client: each alert about the passport and agency of a stored one
    (``shared``), or about a passport and an agency no stored alert has."""
    sent: list[dict[str, float]] = [{} for _ in clients]
    counters = [0] * len(clients)

    def make(i: int) -> Callable[[], object]:
        agency = AGENCIES[i % 4]

        def call() -> object:
            counters[i] += 1
            n = (i * 7_919 + counters[i] * 104_729) % stored
            alert = _alert(agency, n, stored) if shared else _alert(agency, n, stored, "U")
            published = clients[i].publish(alert)
            sent[i][published.alert_id] = time.monotonic_ns()
            return published

        return call

    return [make(i) for i in range(len(clients))], sent


@dataclass(frozen=True)
class Mode:
    """One kind of run: whether the published alerts share identifiers with stored ones, and
    whether every agency's stream asks for related alerts."""

    name: str
    shared: bool
    related: bool


#: The alerts of a run share identifiers with stored ones, or none; the streams ask for related
#: alerts, or do not.
PLAIN = Mode("plain", shared=True, related=False)
UNSHARED = Mode("unshared", shared=False, related=False)
RELATED = Mode("related", shared=True, related=True)


def _last_position(database: Path) -> int:
    with closing(sqlite3.connect(database)) as db:
        (last,) = db.execute("SELECT coalesce(max(position), 0) FROM alerts").fetchone()
    return int(last)


def _run(
    pki_template: Path, source: Path, work: Path, name: str, mode: Mode, seconds: float,
    stored: int,
) -> dict[str, object]:  # fmt: skip
    """One measured run on a copy of ``source``: 8 publishers for ``seconds``, every agency
    subscribed from the newest stored alert on; then until every delivery has arrived. The
    figure is the sustained rate: publishes over the time to publish and deliver them all."""
    pki = fresh_copy(pki_template, work / f"pki-{name}")
    database = copy_database(source, work / f"{name}.db")
    after = _last_position(database)
    with serve_exchange(pki, f"sqlite:///{database}", work, name) as (server, address):
        flags = ["--related"] if mode.related else []
        subscribers = Child(
            [sys.executable, "-m", "bench._subscribers", "--pki", str(pki), "--server", address,
             "--agencies", ",".join(AGENCIES), "--after", str(after), *flags],
            name="subscribers",
        )  # fmt: skip
        deliveries = _Deliveries(subscribers)
        try:
            subscribers.next_line(60)  # "started"
            clients = _clients(pki, address, work / f"witness-{name}")
            calls, sent = _publishers(clients, stored, shared=mode.shared)
            for call in calls[:2]:  # immigration's and police's alerts reach all four agencies
                call()
            wait_for(lambda: deliveries.drain() >= 6, 60, "every subscription to be live")
            for ids in sent:
                ids.clear()
            cpu_before = server.cpu_seconds()
            count, elapsed, latencies, cpu = _measured(calls, seconds, server, "publish")
            expected = _expected(sent)
            began = time.monotonic()
            wait_for(lambda: deliveries.covers(expected), 600, "every delivery of the run")
            drained = time.monotonic() - began
            server_cpu = server.cpu_seconds() - cpu_before
            for client in clients:
                client.close()
        finally:
            subscribers.stop()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    return {
        "mode": mode.name,
        "sustained_rate": count / (elapsed + drained),
        "publish_rate": count / elapsed,
        "publishes": count,
        "deliveries": len(expected),
        "seconds_publishing": elapsed,
        "seconds_delivering_after": drained,
        "server_cpu_us_per_publish_and_deliveries": 1e6 * server_cpu / count,
        "publish_p50_ms": 1000 * percentile(latencies, 50),
        "publish_p99_ms": 1000 * percentile(latencies, 99),
        **cpu,
    }


def _get_alert(pki_template: Path, source: Path, work: Path, stored: int) -> dict[str, object]:
    """GetAlert of 200 stored alerts, each related to about a hundred others, by one client:
    latency, related alerts included, and how many each view carried."""
    pki = fresh_copy(pki_template, work / "pki-get")
    database = copy_database(source, work / "get.db")
    with closing(sqlite3.connect(database)) as db:
        ids = [row[0] for row in db.execute("SELECT id FROM alerts ORDER BY random() LIMIT 200")]
    latencies, shown = [], []
    with serve_exchange(pki, f"sqlite:///{database}", work, "get") as (_server, address):
        police = ExchangeClient(pki / "police", address, witness_state=work / "get.json")
        police.get_alert(ids[0])  # the connection, the witness state
        for alert_id in ids:
            started = time.perf_counter()
            view = police.get_alert(alert_id)
            latencies.append(time.perf_counter() - started)
            shown.append(len(view.related))
        police.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    return {
        "stored": stored,
        "reads": len(latencies),
        "p50_ms": 1000 * percentile(latencies, 50),
        "p99_ms": 1000 * percentile(latencies, 99),
        "related_per_view": sum(shown) / len(shown),
    }


def _mean(runs: list[dict[str, object]], mode: Mode, key: str = "sustained_rate") -> float:
    values = [float(r[key]) for r in runs if r["mode"] == mode.name]  # type: ignore[arg-type]
    return sum(values) / len(values)


def run(pki_template: Path, sizes: Sizes) -> list[Result]:
    stored = 100_000 if sizes.name == "full" else 20_000
    source = cached_alerts(pki_template, stored)
    work = Path(tempfile.mkdtemp(prefix="correlation-", dir=CACHE.parent))
    runs: list[dict[str, object]] = []
    try:
        # Each kind twice, the second round in the other order: the machine's speed drifts.
        order = [PLAIN, UNSHARED, RELATED, RELATED, UNSHARED, PLAIN]
        for n, mode in enumerate(order):
            log(f"10. publish, {stored:,} alerts stored, 4 agencies subscribed: {mode.name}")
            done = _run(pki_template, source, work, f"{mode.name}-{n}", mode, sizes.seconds,
                        stored)  # fmt: skip
            runs.append(done)
            cpu_used = done["server_cpu_us_per_publish_and_deliveries"]
            log(f"    {done['sustained_rate']:,.0f} publishes/s delivered "
                f"({done['publish_rate']:,.0f}/s while publishing, then "
                f"{done['seconds_delivering_after']:.1f} s to deliver the rest); server CPU "
                f"{cpu_used:,.0f} µs per publish")  # fmt: skip
        log(f"10. GetAlert, {stored:,} alerts stored")
        reads = _get_alert(pki_template, source, work, stored)
        log(f"    p50 {reads['p50_ms']:.1f} ms, p99 {reads['p99_ms']:.1f} ms, "
            f"{reads['related_per_view']:.1f} related alerts per view")  # fmt: skip
    except BaseException:
        log(f"kept {work} (server logs, databases) for a look")
        raise
    shutil.rmtree(work, ignore_errors=True)
    plain, unshared, related = (_mean(runs, m) for m in (PLAIN, UNSHARED, RELATED))
    cpu = {m.name: _mean(runs, m, "server_cpu_us_per_publish_and_deliveries")
           for m in (PLAIN, UNSHARED, RELATED)}  # fmt: skip
    details = {"stored": stored, "runs": runs, "server_cpu_us_per_publish": cpu}
    return [
        Result(
            "10", f"publish, {stored:,} stored, 4 agencies watching with related alerts, vs not",
            "calls/s", related, plain, 0.9,
            notes="baseline: the same alerts, no stream asking for related alerts; rates of "
            "publishing and delivering everything",
            details=details,
        ),
        Result(
            "10", f"publish, {stored:,} stored, alerts with related alerts, vs with none",
            "calls/s", plain, unshared, 0.9,
            notes="baseline: alerts whose identifiers no stored alert has; no stream asking",
            details=details,
        ),
        Result(
            "10", f"GetAlert p50 with related alerts, {stored:,} stored", "ms",
            float(reads["p50_ms"]), 50.0, 1.0, higher=False,  # type: ignore[arg-type]
            notes=f"{reads['related_per_view']:.1f} related alerts per view; baseline: a 50 ms "
            "limit for an officer's read",
            details=reads,
        ),
    ]  # fmt: skip
