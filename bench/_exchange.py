"""Publishing end to end, with and without subscribers, beside a bare mTLS echo; server memory.

The exchange runs as deployed: ``sinergi serve`` in its own process, on SQLite (WAL,
synchronous=FULL), with its JSON log lines going to a file. The baseline is ``bench._echo`` in its
own process with the same server certificate, driven the same way: 8 client threads, each with its
own mTLS channel and agency certificate, sending requests of the size of a ``PublishRequest``.

A publish is the whole path: the client library builds the request, the server checks the
certificate (identity, revocation), the policy and the alert, stores it and its ledger entry in one
group-committed, durable transaction with a signed checkpoint, and answers with a receipt that the
client verifies (signature, inclusion proof, witnessed consistency) before ``publish`` returns.

Benchmark 1 also runs the publishes with the development PKI's two witnesses, each `sinergi
witness serve` in its own process on 127.0.0.1, named by the witness policy the server gets: its
rate beside the rate without, and how long each commit waited for a checkpoint with the quorum
of both to cover it (from the stored checkpoints' and cosignatures' times).
"""

from __future__ import annotations

import bisect
import random
import secrets
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path

import grpc

from bench._build import cached_ledger, copy_database
from bench._common import (
    RESULTS,
    Child,
    Result,
    Sizes,
    fresh_copy,
    log,
    percentile,
    rss_bytes,
    wait_for,
)
from bench._echo import METHOD
from certs import Signer, load_identity
from clients import ExchangeClient, new_alert, parse_subjects, sign_request
from sinergi.v1 import alert_pb2, exchange_pb2
from witness import DEV_WITNESS_PORTS, create_dev_witnesses

PUBLISHERS = 8
AGENCIES = ("immigration", "police", "customs", "labour")
SINERGI = str(Path(sys.executable).with_name("sinergi"))


def _alert(agency: str, n: int) -> alert_pb2.Alert:
    """An alert of about the size the reference measurements use (300 bytes)."""
    return new_alert(
        category="OTHER",
        recipients=[a for a in AGENCIES if a != agency],
        summary=f"Benchmark alert {n}: applicant recruited by an unlicensed agent",
        details="Reported at the Soekarno-Hatta immigration office; documents held for review.",
        subjects=parse_subjects([f"passport=C{n % 10_000_000:07d},nationality=ID"]),
        handling="GREEN",
    )


def _request_size(pki: Path) -> int:
    """The size of a signed publish request: what the echo baseline sends instead."""
    request = exchange_pb2.PublishRequest(idempotency_key=secrets.token_urlsafe(24),
                                          alert=_alert("immigration", 1234567))  # fmt: skip
    identity = load_identity(pki / "immigration")
    assert identity.spiffe_id is not None
    sign_request(request, Signer(identity.key_pem), identity.spiffe_id)
    return request.ByteSize()


@contextmanager
def serve_exchange(
    pki: Path, database: str, work: Path, name: str, *flags: str
) -> Iterator[tuple[Child, str]]:
    """`sinergi serve` without its rate limit: the benchmarks measure what the whole exchange
    serves, with 8 publishers driving 4 agency identities at 100 to 200 calls/s each, far
    above the default per-principal limit (20/s) that keeps one identity from taking it."""
    child = Child(
        [
            *(SINERGI, "serve", "--db", database, "--pki", str(pki)),
            *("--listen", "127.0.0.1:0", "--json", "--rate-limit", "0", *flags),
        ],
        stderr=work / f"{name}.log",
        name=f"sinergi serve ({name})",
    )
    try:
        ready = child.ready_json(timeout=120)
        yield child, f"127.0.0.1:{ready['port']}"
    finally:
        child.stop()


@contextmanager
def _witnesses(pki: Path, work: Path) -> Iterator[Path]:
    """The development PKI's two witnesses, each `sinergi witness serve` in its own process on
    127.0.0.1, and a witness policy naming them where they listen (with a quorum of both)."""
    made = create_dev_witnesses(pki)
    text = made.policy.read_text()
    children: list[Child] = []
    try:
        for name, directory in made.directories.items():
            argv = [SINERGI, "witness", "serve", "--dir", str(directory), "--listen", "127.0.0.1:0"]
            child = Child([*argv, "--json"], stderr=work / f"witness-{name}.log", name=name)
            children.append(child)
            port = child.ready_json(timeout=60)["port"]
            default = f"https://127.0.0.1:{DEV_WITNESS_PORTS[name]}"
            text = text.replace(default, f"https://127.0.0.1:{port}")
        policy = work / "witness-policy"
        policy.write_text(text)
        yield policy
    finally:
        for child in children:
            child.stop()


def _quorum_covers(database: Path, size: int, quorum: int) -> bool:
    """Whether the exchange stored a quorum of cosignatures on a checkpoint of ``size`` or more."""
    with closing(sqlite3.connect(database)) as db:
        row = db.execute(
            "SELECT max(size) FROM (SELECT size FROM ledger_cosignatures GROUP BY size"
            " HAVING count(*) >= ?)",
            (quorum,),
        ).fetchone()
    return row[0] is not None and row[0] >= size


def _commit_to_quorum(database: Path, quorum: int) -> list[float]:
    """For every stored checkpoint, the seconds from its commit until a checkpoint of its size
    or more had ``quorum`` cosignatures stored (the later of them): each commit's wait for the
    witnesses, as the exchange's clock saw both."""
    with closing(sqlite3.connect(database)) as db:
        commits = db.execute(
            "SELECT size, created FROM ledger_checkpoints ORDER BY size"
        ).fetchall()
        cosigned = db.execute(
            "SELECT size, max(created) FROM ledger_cosignatures GROUP BY size HAVING count(*) >= ?"
            " ORDER BY size",
            (quorum,),
        ).fetchall()
    sizes = [size for size, _ in cosigned]
    earliest: list[datetime] = []  # from the end: the earliest quorum at this size or above
    for _, at in reversed(cosigned):
        when = datetime.fromisoformat(at)
        earliest.append(min(when, earliest[-1]) if earliest else when)
    earliest.reverse()
    waits = []
    for size, at in commits:
        covering = bisect.bisect_left(sizes, size)
        if covering < len(sizes):
            waits.append((earliest[covering] - datetime.fromisoformat(at)).total_seconds())
    return waits


@contextmanager
def _echo_server(pki: Path) -> Iterator[tuple[Child, str]]:
    child = Child([sys.executable, "-m", "bench._echo", "--identity", str(pki / "server")],
                  name="echo server")  # fmt: skip
    try:
        ready = child.ready_json(timeout=60)
        yield child, f"127.0.0.1:{ready['port']}"
    finally:
        child.stop()


def _closed_loop(
    calls: list[Callable[[], object]], seconds: float
) -> tuple[int, float, list[float]]:
    """Each call in its own thread, as fast as it goes, for ``seconds``: (calls, elapsed,
    latencies). Every thread makes two calls first (handshake, caches), then all start together.
    """
    barrier = threading.Barrier(len(calls) + 1)
    latencies: list[list[float]] = [[] for _ in calls]
    stop_at = [0.0]
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            calls[i]()
            calls[i]()
        except BaseException as exc:
            errors.append(exc)
        barrier.wait()
        if errors:
            return
        mine = latencies[i]
        while True:
            started = time.perf_counter()
            if started >= stop_at[0]:
                return
            calls[i]()
            mine.append(time.perf_counter() - started)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    stop_at[0] = time.perf_counter() + 3600
    barrier.wait()
    began = time.perf_counter()
    stop_at[0] = began + seconds
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    if errors:
        raise errors[0]
    flat = [x for mine in latencies for x in mine]
    return len(flat), elapsed, flat


def _measured(
    calls: list[Callable[[], object]], seconds: float, server: Child, unit: str
) -> tuple[int, float, list[float], dict[str, float]]:
    """:func:`_closed_loop`, with the CPU per ``unit`` that the server process and this one (the
    clients: signing, TLS, receipt checks) used meanwhile. On two cores their sum bounds the
    rate, so the ratio of two figures follows the ratio of their CPU per call."""
    server_cpu, client_cpu = server.cpu_seconds(), time.process_time()
    count, elapsed, latencies = _closed_loop(calls, seconds)
    cpu = {
        f"server_cpu_us_per_{unit}": 1e6 * (server.cpu_seconds() - server_cpu) / count,
        f"client_cpu_us_per_{unit}": 1e6 * (time.process_time() - client_cpu) / count,
    }
    return count, elapsed, latencies, cpu


def _clients(pki: Path, address: str, state: Path) -> list[ExchangeClient]:
    """One client per publisher; witness state in ``state`` (one directory per ledger)."""
    state.mkdir(parents=True, exist_ok=True)
    return [
        ExchangeClient(
            pki / AGENCIES[i % 4], address, witness_state=state / f"witness-publisher-{i}.json"
        )
        for i in range(PUBLISHERS)
    ]


Calls = list[Callable[[], object]]


def _publishers(clients: list[ExchangeClient]) -> tuple[Calls, list[dict[str, float]]]:
    """A publish call per client, recording when each alert left (monotonic ns) by id."""
    sent: list[dict[str, float]] = [{} for _ in clients]
    counters = [0] * len(clients)

    def make(i: int) -> Callable[[], object]:
        agency = AGENCIES[i % 4]

        def call() -> object:
            counters[i] += 1
            alert = _alert(agency, i * 1_000_000 + counters[i])
            started = time.monotonic_ns()
            published = clients[i].publish(alert)
            sent[i][published.alert_id] = started
            return published

        return call

    return [make(i) for i in range(len(clients))], sent


def echo_rate(pki: Path, seconds: float) -> tuple[float, dict[str, object]]:
    size = _request_size(pki)
    payload = secrets.token_bytes(size)
    with _echo_server(pki) as (child, address):
        channels = []
        calls: list[Callable[[], object]] = []
        for i in range(PUBLISHERS):
            identity = pki / AGENCIES[i % 4]
            credentials = grpc.ssl_channel_credentials(
                root_certificates=(identity / "ca.crt").read_bytes(),
                private_key=(identity / "tls.key").read_bytes(),
                certificate_chain=(identity / "tls.crt").read_bytes(),
            )
            channel = grpc.secure_channel(address, credentials)
            channels.append(channel)
            stub: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                METHOD, request_serializer=None, response_deserializer=None
            )
            calls.append(partial(stub, payload, timeout=10))
        count, elapsed, latencies, cpu = _measured(calls, seconds, child, "call")
        for channel in channels:
            channel.close()
    rate = count / elapsed
    return rate, {
        "rate": rate,
        "message_bytes": size,
        "calls": count,
        "p50_ms": 1000 * percentile(latencies, 50),
        "p99_ms": 1000 * percentile(latencies, 99),
        **cpu,
    }


def _init_database(path: Path) -> str:
    from exchange import initialise_database  # noqa: PLC0415

    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    url = f"sqlite:///{path}"
    initialise_database(url)
    return url


def publish_rate(
    pki_template: Path, work: Path, seconds: float, name: str = "publish"
) -> tuple[float, dict[str, object]]:
    pki = fresh_copy(pki_template, work / f"pki-{name}")
    url = _init_database(work / f"{name}.db")
    with serve_exchange(pki, url, work, name) as (child, address):
        state = work / f"witness-{name}"
        count, elapsed, latencies, cpu = _publish(pki, address, state, child, seconds)
    return count / elapsed, {
        "publishes": count,
        "p50_ms": 1000 * percentile(latencies, 50),
        "p99_ms": 1000 * percentile(latencies, 99),
        **cpu,
    }


def _publish(
    pki: Path, address: str, state: Path, server: Child, seconds: float
) -> tuple[int, float, list[float], dict[str, float]]:
    clients = _clients(pki, address, state)
    calls, _sent = _publishers(clients)
    try:
        return _measured(calls, seconds, server, "publish")
    finally:
        for client in clients:
            client.close()


def witnessed_publish_rate(
    pki_template: Path, work: Path, seconds: float
) -> tuple[float, dict[str, object]]:
    """:func:`publish_rate` with two witnesses; then, once a quorum covers the last commit,
    each commit's wait for one."""
    pki = fresh_copy(pki_template, work / "pki-witnessed")
    database = work / "witnessed.db"
    url = _init_database(database)
    with _witnesses(pki, work) as policy:
        flags = ("--witness-policy", str(policy))
        with serve_exchange(pki, url, work, "witnessed", *flags) as (child, address):
            state = work / "witness-witnessed"
            count, elapsed, latencies, cpu = _publish(pki, address, state, child, seconds)
            with closing(sqlite3.connect(database)) as db:
                (last,) = db.execute("SELECT max(size) FROM ledger_checkpoints").fetchone()
            wait_for(lambda: _quorum_covers(database, last, 2), 60, "a quorum over the last commit")
    waits = _commit_to_quorum(database, 2)
    return count / elapsed, {
        "publishes": count,
        "p50_ms": 1000 * percentile(latencies, 50),
        "p99_ms": 1000 * percentile(latencies, 99),
        **cpu,
        "checkpoints": len(waits),
        "commit_to_quorum_p50_ms": 1000 * percentile(waits, 50),
        "commit_to_quorum_p99_ms": 1000 * percentile(waits, 99),
        "commit_to_quorum_max_ms": 1000 * max(waits),
    }


class _Deliveries:
    """What the subscriber process reports: when each agency got each alert."""

    def __init__(self, child: Child) -> None:
        self.child = child
        self.seen: dict[tuple[str, str], int] = {}

    def covers(self, expected: set[tuple[str, str]]) -> bool:
        self.drain()
        return expected <= self.seen.keys()

    def drain(self) -> int:
        while True:
            try:
                line = self.child.lines.get_nowait()
            except Exception:  # queue.Empty
                return len(self.seen)
            if line.startswith("D "):
                _d, agency, alert_id, ns = line.split()
                self.seen.setdefault((agency, alert_id), int(ns))


def _expected(sent: list[dict[str, float]]) -> set[tuple[str, str]]:
    """(agency, alert id) of every delivery due: each alert goes to the three other agencies."""
    return {
        (agency, alert_id)
        for i, ids in enumerate(sent)
        for alert_id in ids
        for agency in AGENCIES
        if agency != AGENCIES[i % 4]
    }


def _open_loop(calls: list[Callable[[], object]], rate: float, seconds: float) -> tuple[int, float]:
    """Publish at ``rate`` per second overall, spread evenly over the threads (each thread sends
    on its own schedule; a late call does not make the next one early)."""
    interval = len(calls) / rate
    began = time.perf_counter() + 0.05
    done = [0] * len(calls)

    def run(i: int) -> None:
        due = began + i / rate
        end = began + seconds
        while due < end:
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)  # pacing an open-loop load, not waiting for a condition
            calls[i]()
            done[i] += 1
            due += interval

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done), time.perf_counter() - began


@dataclass
class Live:
    """A server with every agency subscribed, and 8 publishers ready (:func:`subscribed`)."""

    server: Child
    deliveries: _Deliveries
    calls: Calls
    sent: list[dict[str, float]]


@contextmanager
def subscribed(pki: Path, work: Path, name: str) -> Iterator[Live]:
    """`sinergi serve` on a fresh SQLite database, one subscription per agency in another
    process (bench/_subscribers.py) and 8 publishing clients, once every subscription is live."""
    url = _init_database(work / f"{name}.db")
    with serve_exchange(pki, url, work, name) as (server, address):
        subscribers = Child(
            [sys.executable, "-m", "bench._subscribers", "--pki", str(pki), "--server", address,
             "--agencies", ",".join(AGENCIES)],
            name="subscribers",
        )  # fmt: skip
        deliveries = _Deliveries(subscribers)
        try:
            subscribers.next_line(60)  # "started"
            clients = _clients(pki, address, work / f"witness-{name}")
            calls, sent = _publishers(clients)
            for call in calls[:2]:  # immigration's and police's alerts reach all four agencies
                call()
            wait_for(lambda: deliveries.drain() >= 6, 60, "every subscription to be live")
            yield Live(server, deliveries, calls, sent)
            for client in clients:
                client.close()
        finally:
            subscribers.stop()


def delivery(pki_template: Path, work: Path, seconds: float) -> tuple[float, dict[str, object]]:
    """Publish rate with every agency subscribed, then p99 publish-to-delivery at half of it."""
    pki = fresh_copy(pki_template, work / "pki-deliver")
    with subscribed(pki, work, "deliver") as live:
        server, deliveries, calls, sent = live.server, live.deliveries, live.calls, live.sent
        count, elapsed, latencies, cpu = _measured(calls, seconds, server, "publish")
        max_rate = count / elapsed
        expected = _expected(sent)
        wait_for(lambda: deliveries.covers(expected), 120, "the backlog delivered")

        for ids in sent:
            ids.clear()
        half = max_rate / 2
        sent_count, sent_elapsed = _open_loop(calls, half, seconds)
        expected = _expected(sent)
        wait_for(lambda: deliveries.covers(expected), 120, "every delivery of the paced run")
        starts = {alert_id: t for ids in sent for alert_id, t in ids.items()}
        lag = [(deliveries.seen[key] - starts[key[1]]) / 1e6 for key in expected]
    return max_rate, {
        "publishes": count,
        "publish_p50_ms": 1000 * percentile(latencies, 50),
        "publish_p99_ms": 1000 * percentile(latencies, 99),
        **cpu,
        "paced_rate": sent_count / sent_elapsed,
        "paced_target_rate": half,
        "deliveries_measured": len(lag),
        "delivery_p50_ms": percentile(lag, 50),
        "delivery_p99_ms": percentile(lag, 99),
        "delivery_max_ms": max(lag),
    }


def _memory_run(work: Path, entries: int, name: str, amount: int) -> dict[str, object]:
    """The server on a ledger of ``entries`` entries under a fixed workload: its RSS after."""
    source, key_pki = cached_ledger(entries)
    pki = fresh_copy(key_pki, work / f"pki-{name}")
    database = copy_database(source, work / f"{name}.db")
    rng = random.Random(7)
    with serve_exchange(pki, f"sqlite:///{database}", work, name) as (server, address):
        started = rss_bytes(server.pid)
        clients = _clients(pki, address, work / f"witness-{name}")
        calls, sent = _publishers(clients)
        per_thread = amount
        failures: list[BaseException] = []

        def publish_some(i: int) -> None:
            try:
                for _ in range(per_thread):
                    calls[i]()
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=publish_some, args=(i,)) for i in range(PUBLISHERS)]
        for thread in threads:
            thread.start()
        witness = work / f"witness-auditor-{name}.json"
        with ExchangeClient(pki / "internal-affairs", address, witness_state=witness) as auditor:
            size = auditor.checkpoint().size
            for _ in range(amount):
                auditor.inclusion(rng.randint(1, size))
                first = rng.randint(1, size - 1)
                auditor.consistency(first, auditor.checkpoint().size)
            rows = sum(1 for _ in auditor.entries(max(1, size - 100 * amount), size))
        for thread in threads:
            thread.join()
        if failures:
            raise RuntimeError(f"publishing failed on the {entries:,}-entry ledger: "
                               f"{failures[0]!r} (server log: {work / name}.log)")  # fmt: skip
        due = sum(1 for i, ids in enumerate(sent) if AGENCIES[i % 4] != "police" for _ in ids)
        witness = work / f"witness-police-{name}.json"
        got = [0]

        def backlog() -> None:
            with ExchangeClient(pki / "police", address, witness_state=witness) as police:
                for _delivery in police.subscribe(after=0):
                    got[0] += 1
                    if got[0] >= due:
                        return

        reader = threading.Thread(target=backlog, daemon=True)
        reader.start()
        reader.join(120)
        if got[0] < due:
            raise RuntimeError(f"the subscriber got {got[0]} of {due} deliveries in 120 s")
        for client in clients:
            client.close()
        status = Path(f"/proc/{server.pid}/status").read_text()
        peak = next(int(line.split()[1]) * 1024 for line in status.splitlines()
                    if line.startswith("VmHWM:"))  # fmt: skip
        return {"entries": entries, "rss_start": started, "rss_end": rss_bytes(server.pid),
                "rss_peak": peak, "entries_read": rows, "deliveries": got[0]}  # fmt: skip


def memory(work: Path, small: int, large: int, amount: int) -> Result:
    low = _memory_run(work, small, "memory-small", amount)
    high = _memory_run(work, large, "memory-large", amount)
    for name in ("memory-small", "memory-large"):
        Path(work / f"{name}.db").unlink(missing_ok=True)
    mib = 1024 * 1024
    return Result(
        "6", f"server RSS at {large:,} vs {small:,} entries", "MiB",
        high["rss_peak"] / mib, low["rss_peak"] / mib,  # type: ignore[operator]
        1.2, higher=False,
        notes=f"peak RSS of `sinergi serve` after the same workload ({PUBLISHERS * amount:,} "
        f"publishes, {amount} inclusion and {amount} consistency proofs, {100 * amount:,} "
        "entries streamed to an auditor, a subscriber's backlog)",
        details={"small": low, "large": high},
    )  # fmt: skip


def _cpu(details: dict[str, object], unit: str) -> str:
    client, server = details[f"client_cpu_us_per_{unit}"], details[f"server_cpu_us_per_{unit}"]
    assert isinstance(client, float)
    assert isinstance(server, float)
    return f"CPU per {unit}: client {client:,.0f} µs, server {server:,.0f} µs"


def _witnessed(pki_template: Path, work: Path, sizes: Sizes, plain: float) -> list[Result]:
    """Benchmark 1 with two witnesses: its rate against the runs without just before and just
    after (``plain`` and one more: the machine's speed drifts), and the commit-to-quorum wait
    against the 1 s limit."""
    log("1. publish with two witnesses (each its own process), 8 publishers, SQLite")
    rate, details = witnessed_publish_rate(pki_template, work, sizes.seconds)
    log("1. publish without witnesses again (the baseline is the mean of both runs)")
    again, again_details = publish_rate(pki_template, work, sizes.seconds, "publish-again")
    log(f"   {again:,.0f} publishes/s; {_cpu(again_details, 'publish')}")
    details["runs_without"] = [plain, again]
    plain = (plain + again) / 2
    p50, p99 = details["commit_to_quorum_p50_ms"], details["commit_to_quorum_p99_ms"]
    assert isinstance(p50, float)
    assert isinstance(p99, float)
    log(
        f"   {rate:,.0f} publishes/s ({rate / plain:.3f} of the run without); commit to quorum "
        f"p50 {p50:.0f} ms, p99 {p99:.0f} ms over {details['checkpoints']:,} checkpoints"
    )
    without = "baseline: the same publish runs without witnesses, before and after"
    limit = "baseline: the 1 s limit; from the stored checkpoints' and cosignatures' times"
    return [
        Result(
            "1",
            "publish with 2 witnesses, vs without",
            "calls/s",
            rate,
            plain,
            0.9,
            notes=without,
            details=details,
        ),
        Result(
            "1",
            "commit-to-quorum p50, 2 witnesses",
            "ms",
            p50,
            1000.0,
            1.0,
            higher=False,
            notes=limit,
            details=details,
        ),
        Result(
            "1",
            "commit-to-quorum p99, 2 witnesses",
            "ms",
            p99,
            1000.0,
            1.0,
            higher=False,
            notes=limit,
            details=details,
        ),
    ]


def run(pki_template: Path, sizes: Sizes, only: set[str]) -> list[Result]:
    work = Path(tempfile.mkdtemp(prefix="exchange-", dir=RESULTS))
    results: list[Result] = []
    try:
        if only & {"1", "2"}:
            log("1. bare mTLS echo, 8 client threads")
            echo, echo_details = echo_rate(pki_template, sizes.seconds)
            log(f"   {echo:,.0f} calls/s; {_cpu(echo_details, 'call')}")
        on_echo: list[Result] = []  # rows whose baseline is the echo rate
        if "1" in only:
            log("1. publish end to end, 8 publishers, SQLite")
            publish, details = publish_rate(pki_template, work, sizes.seconds)
            log(f"   {publish:,.0f} publishes/s; {_cpu(details, 'publish')}")
            on_echo.append(Result(
                "1", "publish, 8 publishers, SQLite", "calls/s", publish, echo, 0.5,
                notes="baseline: bare grpc.aio mTLS echo, 8 client threads",
                details={"echo": echo_details, "publish": details},
            ))  # fmt: skip
            results.append(on_echo[-1])
            results += _witnessed(pki_template, work, sizes, publish)
        if "2" in only:
            log("2. publish with 4 agencies subscribed; latency at half that rate")
            subscribed, details = delivery(pki_template, work, sizes.seconds)
            log(f"   {subscribed:,.0f} publishes/s, p99 delivery "
                f"{details['delivery_p99_ms']:.1f} ms")  # fmt: skip
            on_echo.append(Result(
                "2", "publish, 4 agencies subscribed", "calls/s", subscribed, echo, 0.4,
                notes="baseline: the same echo rate", details=details,
            ))  # fmt: skip
            results.append(on_echo[-1])
            p99 = details["delivery_p99_ms"]
            assert isinstance(p99, float)
            results.append(Result(
                "2", "p99 publish-to-delivery at half rate", "ms", p99, 50.0, 1.0, higher=False,
                notes="baseline: the 50 ms limit", details=details,
            ))  # fmt: skip
        if only & {"1", "2"}:
            log("1. bare mTLS echo again (the baseline is the mean of both runs)")
            again, again_details = echo_rate(pki_template, sizes.seconds)
            log(f"   {again:,.0f} calls/s; {_cpu(again_details, 'call')}")
            for result in on_echo:
                result.baseline = (echo + again) / 2
                result.details["echo_runs"] = [echo_details, again_details]
        if "6" in only:
            log("6. server memory at two ledger sizes")
            results.append(memory(work, sizes.memory_small, sizes.memory_large, sizes.memory_work))
    except BaseException:
        log(f"kept {work} (server logs, databases) for a look")
        raise
    shutil.rmtree(work, ignore_errors=True)
    return results
