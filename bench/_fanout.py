"""Benchmark 9: fan-out, many open subscriptions on one exchange (and on two replicas).

    python -m bench._fanout [--quick]   # this benchmark alone (python -m bench --only 9)

Every immigration office, police resort, customs office and labour unit keeps a ``Subscribe``
stream open. Three shapes, each on a fresh `sinergi serve` (``serve_exchange``: its own process,
no rate limit, JSON logs to a file):

1. **Sustained**: N open subscriptions (0, 100, 500 and 2,000; 0 and 200 in bench-quick) in ONE
   grpc.aio client process (``subscribers`` below), spread evenly over the four agencies'
   system identities, 50 streams per TLS connection; a separate publisher process
   (``publisher`` below: 8 threads, each with its own ``ExchangeClient``, every receipt
   verified) sends 50 alerts/s, open loop, each addressed to all four agencies (category
   OTHER, which every agency may publish and receive), so that every stream receives every
   alert. Delivery latency is from the start of ``publish`` (CLOCK_MONOTONIC, carried in the
   alert's summary) to the message's arrival at a stream; the publisher's process polls the
   grpc.health.v1 service over mTLS every 0.2 s from start to end; CPU from /proc/<pid>/stat,
   server RSS peak from VmHWM.
2. **Idle**: on the server of the largest N, before its sustained run: single alerts one at a
   time, each after the previous reached every stream (publish to the last stream), then a
   burst of publishes sent back to back from one thread. The same burst on the 0-subscription
   server is its baseline.
3. **Scale-out**: `sinergi serve` on a PostgreSQL database of its own, once with one process
   holding all the subscriptions, then with two replicas on the same database holding half each
   (the publisher alternates between them), 50 alerts/s: every delivery of the run over the
   time from its first publish to the last arrival. Enough streams that one process cannot
   keep up, so the figure is what the processes can deliver.

Beside the target shape, the bare primitive: a grpc.aio server (``bare`` below) answering
``Subscribe`` with a plain async generator that streams one pre-serialized ``Delivery`` of the
exchange's size to every stream, 50 times a second, to the same client: the floor of the
server's CPU per delivery in this language and framework.

Each stream's first message is a warm-up alert published before the streams open: an opened
stream is one that received it, which bounds the opens in flight (``--inflight``). A stream that
ends early is counted with its status (before or after its first message) and resumes after its
last cursor, as the client library does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from array import array
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from bench._common import (
    RESULTS,
    Child,
    Result,
    Sizes,
    fresh_copy,
    log,
    percentile,
    postgres_database,
)
from bench._exchange import _init_database, serve_exchange

AGENCIES = ("immigration", "police", "customs", "labour")
RATE = 50.0  # alerts per second in the sustained runs
PUBLISH_THREADS = 8
HEALTH_INTERVAL = 0.2
STREAMS_PER_CHANNEL = 50  # streams per TLS connection in the subscribers' process
INFLIGHT_OPENS = 64
MIB = 1024 * 1024
# The targets (docs/performance.md, "Fan-out").
DELIVERY_P99_MS = 1000.0
PUBLISH_P99_MS = 100.0
RSS_MIB = 300.0
REACH_ALL_MS = 500.0
CPU_PER_DELIVERY_US = 50.0
SCALE_OUT = 1.5


@dataclass(frozen=True)
class FanSizes:
    subscriptions: tuple[int, ...]  # the sustained shapes; the largest also runs the idle one
    seconds: float  # each sustained run publishes for this long
    singles: int  # idle: alerts published one at a time
    burst: int  # idle: publishes sent back to back
    scale_subscriptions: int  # scale-out: subscriptions, split over the replicas
    scale_seconds: float
    target_shape: int  # the N the sustained targets are judged at
    drain_seconds: float  # how long a run's deliveries may take to arrive after its publishes


FULL = FanSizes((0, 100, 500, 2000), 10.0, 10, 50, 1000, 8.0, 500, 120.0)
QUICK = FanSizes((0, 200), 3.0, 5, 20, 400, 3.0, 200, 30.0)


# -- the subscribers' process (grpc.aio) --------------------------------------------------------


class _Streams:
    """``count`` Subscribe streams, and what arrived on them."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.opened = 0
        self.deliveries = 0
        self.latencies: dict[int, array[int]] = {}  # seq -> arrival minus publish start, ns
        self.ended_before_first: Counter[str] = Counter()  # early ends, by status
        self.ended_after_first: Counter[str] = Counter()
        self.why: dict[str, str] = {}  # the first early end's details, by status
        self.began = time.monotonic()
        self.open_seconds = 0.0
        self.stopping = False
        self.last_arrival = 0
        self.delivery_bytes = 0

    def got(self, seq: int, sent: int, now: int) -> None:
        """Count a delivery of alert ``seq``, published at ``sent`` (ns) and here at ``now``."""
        self.deliveries += 1
        self.last_arrival = now
        if seq == 0:  # the warm-up
            return
        got = self.latencies.get(seq)
        if got is None:
            got = self.latencies[seq] = array("q")
        got.append(now - sent)
        if len(got) == self.count:
            sys.stdout.write(f"R {seq} {max(got)}\n")
            sys.stdout.flush()

    def stats(self, first: int, last: int) -> dict[str, Any]:
        every: list[int] = []
        reach: list[int] = []
        for seq in range(first, last + 1):
            got = self.latencies.get(seq)
            if got:
                every.extend(got)
                if len(got) >= self.count:
                    reach.append(max(got))
        return {
            "deliveries": len(every),
            "latency_ns": _summary(every),
            "reach_all_ns": reach,
            "alerts_seen": sum(1 for s in range(first, last + 1) if self.latencies.get(s)),
            **self.state(),
        }

    def state(self) -> dict[str, Any]:
        return {
            "streams": self.count,
            "opened": self.opened,
            "open_seconds": self.open_seconds,
            "delivery_bytes": self.delivery_bytes,
            "deliveries_total": self.deliveries,
            "last_arrival_ns": self.last_arrival,
            "ended_before_first": dict(self.ended_before_first),
            "ended_after_first": dict(self.ended_after_first),
            "ended_why": self.why,
            "t": time.monotonic_ns(),
        }


def _summary(values: list[int]) -> dict[str, float] | None:
    if not values:
        return None
    return {"p50": percentile(values, 50), "p99": percentile(values, 99), "max": max(values)}


_MARK = b"fanout "  # the summary of the benchmark's alerts: "fanout <seq> <publish ns> ..."


def _read(raw: bytes) -> tuple[int, int, int]:
    """(cursor, seq, publish time in ns) of a serialized Delivery, without parsing the rest:
    the subscribers' process measures the server, so it does as little per message as it can.
    The cursor is field 1, a varint, serialized first; the numbers are in the alert's summary
    (and the same in the signed statement)."""
    if raw[0] != 0x08:
        raise ValueError("a Delivery that does not start with its cursor")
    cursor, shift, i = 0, 0, 1
    while True:
        byte = raw[i]
        cursor |= (byte & 0x7F) << shift
        i += 1
        if byte < 0x80:
            break
        shift += 7
    start = raw.index(_MARK) + len(_MARK)
    middle = raw.index(b" ", start)
    end = raw.index(b" ", middle + 1)
    return cursor, int(raw[start:middle]), int(raw[middle + 1 : end])


async def _stream(
    streams: _Streams, subscribe: Any, gate: asyncio.Semaphore, ready: asyncio.Event
) -> None:
    """One subscription: opened once the gate lets it, resumed after its cursor if it ends."""
    import grpc  # noqa: PLC0415

    from sinergi.v1 import exchange_pb2  # noqa: PLC0415

    cursor = 0
    opened = False
    await gate.acquire()
    while not streams.stopping:
        call = subscribe(exchange_pb2.SubscribeRequest(after=cursor))
        try:
            async for raw in call:
                cursor, seq, sent = _read(raw)
                streams.got(seq, sent, time.monotonic_ns())
                if seq == 0 and not opened:  # the warm-up alert
                    opened = True
                    streams.delivery_bytes = len(raw)
                    gate.release()
                    streams.opened += 1
                    if streams.opened == streams.count:
                        streams.open_seconds = time.monotonic() - streams.began
                        ready.set()
            status = "OK"  # the server ended the stream
        except grpc.aio.AioRpcError as exc:
            status = exc.code().name
            streams.why.setdefault(status, exc.details() or "")
        if streams.stopping:
            return
        (streams.ended_after_first if opened else streams.ended_before_first)[status] += 1
        await asyncio.sleep(0.1)  # then resume after the last cursor, as the client library does


async def _subscribers(pki: Path, servers: list[str], count: int, inflight: int) -> None:
    import grpc  # noqa: PLC0415

    from sinergi.v1 import exchange_pb2  # noqa: PLC0415

    streams = _Streams(count)
    gate = asyncio.Semaphore(inflight)
    ready = asyncio.Event()
    channels = []
    tasks = []
    stubs: dict[tuple[str, str, int], Any] = {}
    for i in range(count):
        # every agency's streams on every server, 50 to a connection
        agency, server = AGENCIES[i % 4], servers[(i // 4) % len(servers)]
        key = (agency, server, i // (4 * len(servers) * STREAMS_PER_CHANNEL))
        if key not in stubs:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=(pki / agency / "ca.crt").read_bytes(),
                private_key=(pki / agency / "tls.key").read_bytes(),
                certificate_chain=(pki / agency / "tls.crt").read_bytes(),
            )
            # a connection of its own: a channel with the same arguments would share one
            channel = grpc.aio.secure_channel(
                server, credentials, options=[("grpc.use_local_subchannel_pool", 1)]
            )
            channels.append(channel)
            stubs[key] = channel.unary_stream(  # bytes out: read by _read
                "/sinergi.v1.Exchange/Subscribe",
                request_serializer=exchange_pb2.SubscribeRequest.SerializeToString,
                response_deserializer=None,
            )
        tasks.append(asyncio.ensure_future(_stream(streams, stubs[key], gate, ready)))
    if count == 0:
        ready.set()
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[str] = asyncio.Queue()

    def read_stdin() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(commands.put_nowait, line.strip())
        loop.call_soon_threadsafe(commands.put_nowait, "quit")

    threading.Thread(target=read_stdin, daemon=True).start()

    async def announce() -> None:
        await ready.wait()
        _say({"ready": True, **streams.state()})

    announcer = asyncio.ensure_future(announce())
    while True:
        command, *words = (await commands.get()).split()
        if command == "stats":
            _say(streams.stats(int(words[0]), int(words[1])))
        elif command == "state":
            _say(streams.state())
        elif command == "quit":
            break
    streams.stopping = True
    announcer.cancel()
    for task in tasks:
        task.cancel()
    for channel in channels:
        await channel.close(None)


def _say(value: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


# -- the publisher's process (the client library, threads) --------------------------------------


class _Health:
    """grpc.health.v1 Check every 0.2 s over mTLS, per server, counted by answer."""

    def __init__(self, pki: Path, servers: list[str]) -> None:
        import grpc  # noqa: PLC0415
        from grpc_health.v1 import health_pb2_grpc  # noqa: PLC0415

        identity = pki / "immigration"
        credentials = grpc.ssl_channel_credentials(
            root_certificates=(identity / "ca.crt").read_bytes(),
            private_key=(identity / "tls.key").read_bytes(),
            certificate_chain=(identity / "tls.crt").read_bytes(),
        )
        self._stubs = [
            health_pb2_grpc.HealthStub(grpc.secure_channel(server, credentials))
            for server in servers
        ]
        self.answers: Counter[str] = Counter()
        self.slowest = 0.0
        self._lock = threading.Lock()
        for stub in self._stubs:
            threading.Thread(target=self._poll, args=(stub,), daemon=True).start()

    def _poll(self, stub: Any) -> None:
        import grpc  # noqa: PLC0415
        from grpc_health.v1 import health_pb2  # noqa: PLC0415

        request = health_pb2.HealthCheckRequest(service="")
        while True:
            started = time.monotonic()
            try:
                status = stub.Check(request, timeout=2.0).status
                answer = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
            except grpc.RpcError as exc:
                answer = f"error {exc.code().name}"
            took = time.monotonic() - started
            with self._lock:
                self.answers[answer] += 1
                self.slowest = max(self.slowest, took)
            time.sleep(max(0.0, HEALTH_INTERVAL - took))

    def take(self) -> dict[str, Any]:
        """The answers since the last take, and the slowest."""
        with self._lock:
            answers, slowest = dict(self.answers), self.slowest
            self.answers.clear()
            self.slowest = 0.0
        return {"answers": answers, "slowest_s": slowest}


class _Publisher:
    def __init__(self, pki: Path, servers: list[str], state: Path) -> None:
        from clients import ExchangeClient  # noqa: PLC0415

        state.mkdir(parents=True, exist_ok=True)
        self.clients = [
            ExchangeClient(
                pki / AGENCIES[i % 4],
                servers[i % len(servers)],
                witness_state=state / f"witness-{i}.json",
            )
            for i in range(PUBLISH_THREADS)
        ]

    def publish(self, thread: int, seq: int) -> tuple[float, str]:
        """Publish alert ``seq`` through client ``thread``: (seconds, "" or the error)."""
        from clients import ClientError, new_alert, parse_subjects  # noqa: PLC0415

        started = time.monotonic_ns()
        alert = new_alert(
            category="OTHER",
            recipients=list(AGENCIES),
            summary=f"fanout {seq} {started} alert to every agency",
            details="Reported at the Soekarno-Hatta immigration office; documents held.",
            subjects=parse_subjects([f"passport=C{seq % 10_000_000:07d},nationality=ID"]),
            handling="GREEN",
        )
        error = ""
        try:
            self.clients[thread].publish(alert)
        except ClientError as exc:
            code = getattr(exc, "code", None)
            error = f"{type(exc).__name__} {getattr(code, 'name', '')}".strip()
        return (time.monotonic_ns() - started) / 1e9, error

    def one(self, seq: int) -> dict[str, Any]:
        took, error = self.publish(0, seq)
        return {"seq": seq, "seconds": took, "error": error}

    def burst(self, count: int, first: int) -> dict[str, Any]:
        took, errors = [], Counter[str]()
        for seq in range(first, first + count):
            seconds, error = self.publish(0, seq)
            took.append(seconds)
            if error:
                errors[error] += 1
        return {"first": first, "count": count, "seconds": took, "errors": dict(errors)}

    def paced(self, rate: float, seconds: float, first: int) -> dict[str, Any]:
        """Open loop: publish k (k = 0, 1, ...) is due at k / rate, by thread k % 8; a late
        thread sends at once, and none starts a publish later than ``seconds`` plus as much
        again (then the rest count as not attempted)."""
        scheduled = int(rate * seconds)
        began = time.monotonic() + 0.05
        cutoff = began + 2 * seconds
        took: list[list[float]] = [[] for _ in range(PUBLISH_THREADS)]
        ok: list[list[int]] = [[] for _ in range(PUBLISH_THREADS)]
        errors: list[Counter[str]] = [Counter() for _ in range(PUBLISH_THREADS)]
        finished = [began] * PUBLISH_THREADS

        def run(thread: int) -> None:
            for k in range(thread, scheduled, PUBLISH_THREADS):
                due = began + k / rate
                now = time.monotonic()
                if now > cutoff:
                    return
                if due > now:
                    time.sleep(due - now)  # pacing an open-loop load
                seconds_taken, error = self.publish(thread, first + k)
                took[thread].append(seconds_taken)
                if error:
                    errors[thread][error] += 1
                else:
                    ok[thread].append(first + k)
                finished[thread] = time.monotonic()

        threads = [threading.Thread(target=run, args=(i,)) for i in range(PUBLISH_THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = max(finished) - began
        flat = [x for mine in took for x in mine]
        done = sorted(seq for mine in ok for seq in mine)
        return {
            "first": first,
            "scheduled": scheduled,
            "attempted": len(flat),
            "ok": len(done),
            "ok_seqs": done,
            "errors": dict(sum(errors, Counter())),
            "elapsed": elapsed,
            "achieved_rate": len(done) / elapsed if elapsed > 0 else 0.0,
            "p50_s": percentile(flat, 50) if flat else None,
            "p99_s": percentile(flat, 99) if flat else None,
            "max_s": max(flat) if flat else None,
        }


def _publisher_main(pki: Path, servers: list[str], state: Path) -> None:
    health = _Health(pki, servers)
    publisher = _Publisher(pki, servers, state)
    _say({"ready": True})
    for line in sys.stdin:
        command, *words = line.split()
        if command == "one":
            _say(publisher.one(int(words[0])))
        elif command == "burst":
            _say(publisher.burst(int(words[0]), int(words[1])))
        elif command == "paced":
            _say(publisher.paced(float(words[0]), float(words[1]), int(words[2])))
        elif command == "health":
            _say(health.take())
        elif command == "quit":
            break
    for client in publisher.clients:
        client.close()
    os._exit(0)  # the health threads block in gRPC


# -- the bare primitive: a grpc.aio server streaming the same bytes to every stream ---------------


def _bare_message(cursor: int, seq: int, size: int) -> bytes:
    """A serialized Delivery at ``cursor`` whose alert's summary the subscribers read, padded to
    ``size`` bytes (the size of the exchange's deliveries in the same run)."""
    from sinergi.v1 import alert_pb2, exchange_pb2  # noqa: PLC0415

    alert = alert_pb2.Alert(summary=f"fanout {seq} {time.monotonic_ns()} alert to every agency")
    delivery = exchange_pb2.Delivery(cursor=cursor, alert=alert)
    alert.details = "x" * max(0, size - delivery.ByteSize() - 3)
    return exchange_pb2.Delivery(cursor=cursor, alert=alert).SerializeToString()


async def _bare(identity: Path, size: int) -> None:
    """``Subscribe`` of the exchange's service name, answered by a plain async generator: after
    the request's cursor, every message, each serialized once for all streams; a tick wakes
    every stream, as a publish wakes the exchange's. Same certificates (client certificates
    required), same kind of server, no database, no ledger, no checks."""
    import grpc  # noqa: PLC0415

    from sinergi.v1 import exchange_pb2  # noqa: PLC0415

    messages: list[bytes] = [b"", _bare_message(1, 0, size)]  # cursor 1: the warm-up
    wake = [asyncio.Event()]

    async def subscribe(raw: bytes, _context: Any) -> Any:
        cursor = exchange_pb2.SubscribeRequest.FromString(raw).after
        while True:
            event = wake[0]
            while cursor + 1 < len(messages):
                cursor += 1
                yield messages[cursor]
            await event.wait()

    server = grpc.aio.server()
    handler = grpc.unary_stream_rpc_method_handler(subscribe)  # bytes in, bytes out
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("sinergi.v1.Exchange", {"Subscribe": handler}),)
    )
    credentials = grpc.ssl_server_credentials(
        [((identity / "tls.key").read_bytes(), (identity / "tls.crt").read_bytes())],
        root_certificates=(identity / "ca.crt").read_bytes(),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    _say({"ok": True, "port": port})
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        command, *words = line.split() or ["quit"]
        if command == "one":
            _say({"seq": int(words[0]), "seconds": 0.0, "error": ""})
        elif command == "health":
            _say({"answers": {}, "slowest_s": 0.0})
        elif command == "paced":
            rate, seconds, first = float(words[0]), float(words[1]), int(words[2])
            began = time.monotonic()
            scheduled = int(rate * seconds)
            for k in range(scheduled):
                delay = began + k / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)  # pacing, as the publisher does
                messages.append(_bare_message(len(messages), first + k, size))
                wake[0], event = asyncio.Event(), wake[0]
                event.set()
            elapsed = time.monotonic() - began
            seqs = list(range(first, first + scheduled))
            _say({"first": first, "scheduled": scheduled, "attempted": scheduled,
                  "ok": scheduled, "ok_seqs": seqs, "errors": {}, "elapsed": elapsed,
                  "achieved_rate": scheduled / elapsed, "p50_s": None, "p99_s": None,
                  "max_s": None})  # fmt: skip
        elif command == "quit":
            break
    await server.stop(0.5)


# -- the benchmark -----------------------------------------------------------------------------


class _Talk:
    """A child of the benchmark that answers commands with one JSON line each; the subscribers
    also print ``R <seq> <ns>`` when alert ``seq`` has reached every stream."""

    def __init__(self, child: Child) -> None:
        self.child = child
        self.reached: dict[int, int] = {}  # seq -> ns from its publish to its last stream

    def _line(self, timeout: float) -> dict[str, Any] | None:
        line = self.child.next_line(timeout)
        if line.startswith("R "):
            _, seq, ns = line.split()
            self.reached[int(seq)] = int(ns)
            return None
        if line.startswith("{"):
            value: dict[str, Any] = json.loads(line)
            return value
        return None

    def answer(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            value = self._line(max(0.05, deadline - time.monotonic()))
            if value is not None:
                return value

    def tell(self, command: str) -> None:
        stdin = self.child.process.stdin
        assert stdin is not None
        stdin.write(f"{command}\n".encode())
        stdin.flush()

    def ask(self, command: str, timeout: float = 60.0) -> dict[str, Any]:
        self.tell(command)
        return self.answer(timeout)

    def wait_reached(self, seqs: list[int], timeout: float) -> bool:
        """Whether every alert of ``seqs`` reached every stream within ``timeout``."""
        deadline = time.monotonic() + timeout
        while not all(seq in self.reached for seq in seqs):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                self._line(min(left, 1.0))
        return True


def _child(command: str, pki: Path, servers: list[str], *extra: str, name: str) -> _Talk:
    argv = [sys.executable, "-m", "bench._fanout", command, "--pki", str(pki),
            "--servers", ",".join(servers), *extra]  # fmt: skip
    return _Talk(Child(argv, name=name))


def _vm_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def _page_reads(port: object) -> dict[str, float]:
    """sinergi_subscription_page_reads_total by ``shared``, from the server's /metrics."""
    if not port:
        return {}
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    reads = {}
    for line in text.splitlines():
        if line.startswith("sinergi_subscription_page_reads_total{"):
            labels, value = line.rsplit(" ", 1)
            reads[labels.split("{", 1)[1].rstrip("}")] = float(value)
    return reads


def _machine_busy() -> float:
    """CPU seconds the whole machine has spent busy (every core; /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _postgres_cpu() -> float:
    """CPU seconds of this machine's PostgreSQL processes (the scale-out's database)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "postgres":
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                    total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


@dataclass
class _Run:
    """A server (or two) with its publisher and its subscribers, ready."""

    servers: list[Child]
    publisher: _Talk
    subscribers: _Talk | None
    count: int  # streams
    opened: dict[str, Any] = field(default_factory=dict)
    next_seq: int = 1

    def seqs(self, count: int) -> int:
        first = self.next_seq
        self.next_seq += count
        return first

    def server_cpu(self) -> float:
        return sum(server.cpu_seconds() for server in self.servers)


@contextmanager
def _running(
    pki: Path,
    servers: list[tuple[Child, str, object]],
    count: int,
    work: Path,
    name: str,
    bare: _Talk | None = None,
) -> Iterator[_Run]:
    """The publisher (it publishes the warm-up alert), then ``count`` streams, all opened.
    With ``bare`` (the bare server's own commands) there is no publisher: it ticks itself."""
    addresses = [address for _, address, _ in servers]
    publisher = bare
    subscribers = None
    try:
        if publisher is None:
            state = str(work / f"publisher-{name}")
            publisher = _child("publisher", pki, addresses, "--state", state, name="publisher")
            publisher.answer(60)
        warm_up = publisher.ask("one 0")
        if warm_up["error"]:
            raise RuntimeError(f"the warm-up publish failed: {warm_up['error']}")
        run = _Run([child for child, _, _ in servers], publisher, None, count)
        if count:
            subscribers = _child("subscribers", pki, addresses, "--count", str(count),
                                 name="fan-out subscribers")  # fmt: skip
            run.subscribers = subscribers
            run.opened = subscribers.answer(max(120.0, count / 10))
        yield run
    finally:
        ours = [talk for talk in (subscribers, publisher) if talk is not None and talk is not bare]
        for talk in ours:
            with contextlib.suppress(OSError, ValueError):
                talk.tell("quit")
        for talk in ours:
            talk.child.stop(timeout=10)


def _drained(run: _Run, seqs: list[int], timeout: float) -> bool:
    return run.subscribers is None or run.subscribers.wait_reached(seqs, timeout)


def _idle(run: _Run, fs: FanSizes) -> dict[str, Any]:
    """Single alerts, each after the previous reached every stream; then a burst."""
    singles = []
    reach = []
    for _ in range(fs.singles):
        seq = run.seqs(1)
        one = run.publisher.ask(f"one {seq}")
        singles.append(one)
        if run.subscribers is not None:  # 60 s: a lower bound where it never did
            got = run.subscribers.wait_reached([seq], 60)
            reach.append(run.subscribers.reached[seq] / 1e6 if got else 60_000.0)
    first = run.seqs(fs.burst)
    burst = run.publisher.ask(f"burst {fs.burst} {first}", timeout=600)
    drained = _drained(run, list(range(first, first + fs.burst)), fs.drain_seconds)
    single_s = [float(one["seconds"]) for one in singles]
    burst_s: list[float] = burst["seconds"]
    return {
        "singles_publish_ms": [1000 * s for s in single_s],
        "singles_publish_p99_ms": 1000 * percentile(single_s, 99),
        "singles_errors": [one["error"] for one in singles if one["error"]],
        "reach_all_ms": reach,
        "reach_all_p50_ms": percentile(reach, 50) if reach else None,
        "reach_all_max_ms": max(reach) if reach else None,
        "burst_count": fs.burst,
        "burst_publish_p50_ms": 1000 * percentile(burst_s, 50),
        "burst_publish_p99_ms": 1000 * percentile(burst_s, 99),
        "burst_errors": burst["errors"],
        "burst_drained": drained,
        "load_average": _load(),
    }


def _sustained(run: _Run, fs: FanSizes, seconds: float) -> dict[str, Any]:
    """50 alerts/s for ``seconds``; then until every delivery arrived (or the drain limit)."""
    first = run.seqs(int(RATE * seconds))
    server_cpu = run.server_cpu()
    client_cpu = run.subscribers.child.cpu_seconds() if run.subscribers else 0.0
    publisher_cpu = run.publisher.child.cpu_seconds()
    machine_busy, postgres_cpu = _machine_busy(), _postgres_cpu()
    before = run.subscribers.ask("state") if run.subscribers else {}
    began, began_ns = time.monotonic(), time.monotonic_ns()  # the arrivals' clock
    paced = run.publisher.ask(f"paced {RATE} {seconds} {first}", timeout=4 * seconds + 120)
    publishing = time.monotonic() - began
    mid = run.subscribers.ask("state") if run.subscribers else {}
    ok: list[int] = paced["ok_seqs"]
    drained = _drained(run, ok, fs.drain_seconds)
    wall = time.monotonic() - began
    server_cpu = run.server_cpu() - server_cpu
    client_cpu = (run.subscribers.child.cpu_seconds() - client_cpu) if run.subscribers else 0.0
    publisher_cpu = run.publisher.child.cpu_seconds() - publisher_cpu
    machine_busy, postgres_cpu = _machine_busy() - machine_busy, _postgres_cpu() - postgres_cpu
    last = first + int(paced["scheduled"]) - 1
    stats = run.subscribers.ask(f"stats {first} {last}") if run.subscribers else {}
    deliveries = int(stats.get("deliveries", 0))
    due = len(ok) * run.count
    latency = stats.get("latency_ns") or {}
    last_arrival = int(stats.get("last_arrival_ns", 0))
    in_window = (
        int(mid["deliveries_total"]) - int(before["deliveries_total"]) if run.subscribers else 0
    )
    paced.pop("ok_seqs")
    return {
        "publish": paced,
        "publish_p99_ms": 1000 * float(paced["p99_s"] or 0),
        "publishing_seconds": publishing,
        "drained": drained,
        "wall_seconds": wall,
        "deliveries": deliveries,
        "deliveries_due": due,
        "deliveries_while_publishing": in_window,
        "delivery_rate_while_publishing": in_window / publishing,
        # every delivery of the run over the time from the first publish to the last arrival
        "delivery_rate": deliveries / ((last_arrival - began_ns) / 1e9) if deliveries else 0.0,
        "delivery_p50_ms": latency["p50"] / 1e6 if latency else None,
        "delivery_p99_ms": latency["p99"] / 1e6 if latency else None,
        "delivery_max_ms": latency["max"] / 1e6 if latency else None,
        "server_cpu_s": server_cpu,
        "client_cpu_s": client_cpu,
        "publisher_cpu_s": publisher_cpu,
        "server_cores": server_cpu / wall,
        "client_cores": client_cpu / wall,
        "publisher_cores": publisher_cpu / wall,
        "postgres_cores": postgres_cpu / wall,
        "machine_busy_cores": machine_busy / wall,  # of os.cpu_count(), everything included
        "server_cpu_us_per_delivery": 1e6 * server_cpu / deliveries if deliveries else None,
        "server_cpu_us_per_publish": 1e6 * server_cpu / max(1, int(paced["ok"])),
        "client_cpu_us_per_delivery": 1e6 * client_cpu / deliveries if deliveries else None,
        "streams": {k: v for k, v in stats.items() if k not in ("latency_ns", "reach_all_ns")},
        "load_average": _load(),
    }


def _free_port() -> int:
    import socket  # noqa: PLC0415

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def _server(pki: Path, url: str, work: Path, name: str) -> Iterator[tuple[Child, str, object]]:
    """``serve_exchange`` with its Prometheus metrics on a port of its own (page reads)."""
    port = _free_port()
    metrics = ("--metrics-listen", f"127.0.0.1:{port}")
    with serve_exchange(pki, url, work, name, *metrics) as (child, address):
        yield child, address, port


def _shape(pki_template: Path, work: Path, count: int, fs: FanSizes, idle: bool) -> dict[str, Any]:
    """A fresh server on SQLite with ``count`` streams: the idle shape (if ``idle``), then the
    sustained one."""
    name = f"fanout-{count}"
    pki = fresh_copy(pki_template, work / f"pki-{name}")
    url = _init_database(work / f"{name}.db")
    shape: dict[str, Any] = {"subscriptions": count, "load_average_at_start": _load()}
    with _server(pki, url, work, name) as server, _running(pki, [server], count, work, name) as run:
        shape["opened"] = run.opened
        if idle:
            shape["idle"] = _idle(run, fs)
        shape["sustained"] = _sustained(run, fs, fs.seconds)
        shape["health"] = run.publisher.ask("health")
        shape["server_rss_peak_mib"] = _vm_hwm(server[0].pid) / MIB
        shape["page_reads"] = _page_reads(server[2])
    Path(work / f"{name}.db").unlink(missing_ok=True)
    return shape


def _bare_shape(
    pki_template: Path, work: Path, count: int, fs: FanSizes, size: int
) -> dict[str, Any]:
    """The sustained shape against the bare grpc.aio server: the floor of the fan-out's CPU."""
    pki = fresh_copy(pki_template, work / "pki-bare")
    argv = [sys.executable, "-m", "bench._fanout", "bare", "--pki", str(pki), "--size", str(size)]
    child = Child(argv, stderr=work / "bare.log", name="bare fan-out server")
    try:
        ready = child.ready_json(timeout=60)
        bare = _Talk(child)
        server = (child, f"127.0.0.1:{ready['port']}", None)
        with _running(pki, [server], count, work, "bare", bare=bare) as run:
            sustained = _sustained(run, fs, fs.seconds)
        peak = _vm_hwm(child.pid) / MIB
    finally:
        child.stop()
    return {"subscriptions": count, "opened": run.opened, "sustained": sustained,
            "server_rss_peak_mib": peak, "health": {}, "page_reads": {}}  # fmt: skip


def _scale_out(pki_template: Path, work: Path, fs: FanSizes, processes: int) -> dict[str, Any]:
    """``processes`` replicas on one fresh PostgreSQL database, the streams split over them."""
    from exchange import initialise_database  # noqa: PLC0415

    name = f"scale-{processes}"
    pki = fresh_copy(pki_template, work / f"pki-{name}")
    with postgres_database() as url, contextlib.ExitStack() as stack:
        initialise_database(url)
        servers = [
            stack.enter_context(_server(pki, url, work, f"{name}-{i}")) for i in range(processes)
        ]
        with _running(pki, servers, fs.scale_subscriptions, work, name) as run:
            sustained = _sustained(run, fs, fs.scale_seconds)
            health = run.publisher.ask("health")
        reads = [_page_reads(port) for _, _, port in servers]
        peaks = [_vm_hwm(child.pid) / MIB for child, _, _ in servers]
    return {"processes": processes, "opened": run.opened, "sustained": sustained,
            "health": health, "page_reads": reads, "server_rss_peak_mib": peaks}  # fmt: skip


def _explore(pki: Path, fs: FanSizes, scale: bool = True) -> dict[str, Any]:
    """Every shape of this run: the figures the rows are made of."""
    work = Path(tempfile.mkdtemp(prefix="fanout-", dir=RESULTS))
    found: dict[str, Any] = {"sizes": asdict(fs), "shapes": [], "bare": None, "scale_out": []}
    try:
        largest = max(fs.subscriptions)
        for count in fs.subscriptions:
            began = time.monotonic()
            idle = count in (0, largest)
            log(f"9. fan-out: {count:,} subscriptions, {RATE:g} alerts/s for {fs.seconds:g} s"
                + (" (first: the idle shape)" if idle else ""))  # fmt: skip
            shape = _shape(pki, work, count, fs, idle=idle)
            shape["seconds"] = time.monotonic() - began
            found["shapes"].append(shape)
            log(f"   {json.dumps(_brief(shape))}")
            if count == fs.target_shape:
                size = int(shape["opened"]["delivery_bytes"])
                log(f"9. bare grpc.aio fan-out: {count:,} streams, {RATE:g} messages/s of "
                    f"{size} bytes (the exchange's delivery size)")  # fmt: skip
                found["bare"] = _bare_shape(pki, work, count, fs, size)
                log(f"   {json.dumps(_brief(found['bare']))}")
        for processes in (1, 2) if scale else ():
            began = time.monotonic()
            log(f"9. scale-out: {processes} `sinergi serve` on one PostgreSQL database, "
                f"{fs.scale_subscriptions:,} subscriptions")  # fmt: skip
            replicas = _scale_out(pki, work, fs, processes)
            replicas["seconds"] = time.monotonic() - began
            found["scale_out"].append(replicas)
            log(f"   {json.dumps(_brief(replicas))}")
    except BaseException:
        log(f"kept {work} (server logs, databases) for a look")
        raise
    shutil.rmtree(work, ignore_errors=True)
    return found


def _brief(shape: dict[str, Any]) -> dict[str, Any]:
    """What the log line says about a shape."""
    s = shape["sustained"]
    brief = {
        "open_s": round(shape["opened"].get("open_seconds", 0.0), 2),
        "ok": f"{s['publish']['ok']}/{s['publish']['attempted']}/{s['publish']['scheduled']}",
        "rate": round(s["publish"]["achieved_rate"], 1),
        "publish_p99_ms": round(s["publish_p99_ms"], 1),
        "delivery_p50_p99_ms": [_round(s["delivery_p50_ms"]), _round(s["delivery_p99_ms"])],
        "deliveries": f"{s['deliveries']}/{s['deliveries_due']}",
        "per_s": round(s["delivery_rate"]),
        "cores": [
            round(s[f"{k}_cores"], 2)
            for k in ("server", "client", "publisher", "postgres", "machine_busy")
        ],
        "us_per_delivery": _round(s["server_cpu_us_per_delivery"]),
        "rss_mib": shape["server_rss_peak_mib"],
        "health": shape["health"].get("answers"),
        "ended": [shape["opened"].get("ended_before_first"), s["streams"].get("ended_after_first")],
        "load": s["load_average"],
    }
    if "idle" in shape:
        idle = shape["idle"]
        brief["idle"] = [_round(idle[k]) for k in ("reach_all_p50_ms", "singles_publish_p99_ms",
                                                   "burst_publish_p99_ms")]  # fmt: skip
    return brief


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


# -- the rows -----------------------------------------------------------------------------------


def _loads(*shapes: dict[str, Any]) -> str:
    return "; load average " + ", ".join(f"{s['sustained']['load_average'][0]:.1f}" for s in shapes)


def _rows(found: dict[str, Any], fs: FanSizes) -> list[Result]:
    shapes = {shape["subscriptions"]: shape for shape in found["shapes"]}
    zero, n = shapes[0], shapes[fs.target_shape]
    s, z = n["sustained"], zero["sustained"]
    largest = shapes[max(shapes)]
    big = largest["sustained"]
    idle, idle_zero = largest["idle"], zero["idle"]
    count, top = fs.target_shape, max(shapes)
    at = f"{count:,} subs, {RATE:g}/s"
    publish = s["publish"]
    errors = publish["attempted"] - publish["ok"]
    answers = n["health"]["answers"]
    not_serving = sum(v for k, v in answers.items() if k != "SERVING")
    # early ends while opening, and during the whole shape (the last state counts both)
    ended = {f"{k} before the first message": v for k, v in
             s["streams"]["ended_before_first"].items()}  # fmt: skip
    ended.update({f"{k} after": v for k, v in s["streams"]["ended_after_first"].items()})
    p99 = s["delivery_p99_ms"]
    late = s["deliveries"] < s["deliveries_due"]
    rows = [
        Result(
            "9",
            f"fan-out {at}: delivery p99",
            "ms",
            fs.drain_seconds * 1000 if late or p99 is None else p99,
            DELIVERY_P99_MS,
            1.0,
            higher=False,
            notes=f"baseline: the 1 s limit; publish to arrival, p50 {_ms(s['delivery_p50_ms'])}; "
            f"{s['deliveries']:,} of {s['deliveries_due']:,} deliveries"
            + (f" (not all within {fs.drain_seconds:g} s: a lower bound)" if late else "")
            + f"; streams ended early: {ended or 'none'}"
            + _loads(n),
            details=n,
        ),
        Result(
            "9",
            f"fan-out {at}: publish errors of attempted",
            "calls",
            errors,
            publish["attempted"],
            0.0,
            higher=False,
            notes=f"{publish['ok']} of {publish['attempted']} ok ({publish['scheduled']} "
            f"scheduled), achieved {publish['achieved_rate']:.1f}/s (0 subs: "
            f"{z['publish']['achieved_rate']:.1f}/s)",
        ),
        Result(
            "9",
            f"fan-out {at}: publish p99",
            "ms",
            s["publish_p99_ms"],
            PUBLISH_P99_MS,
            1.0,
            higher=False,
            notes=f"baseline: the 100 ms limit; the same publisher with 0 subs: "
            f"{_ms(z['publish_p99_ms'])}" + _loads(zero, n),
        ),
        Result(
            "9",
            f"fan-out {at}: server RSS peak",
            "MiB",
            n["server_rss_peak_mib"],
            RSS_MIB,
            1.0,
            higher=False,
            notes=f"baseline: the 300 MiB limit; VmHWM; 0 subs: {zero['server_rss_peak_mib']:.0f} "
            f"MiB, {top:,} subs: {largest['server_rss_peak_mib']:.0f} MiB",
        ),
        Result(
            "9",
            f"fan-out {at}: health answers not SERVING",
            "checks",
            not_serving,
            sum(answers.values()),
            0.0,
            higher=False,
            notes=f"grpc.health.v1 Check every {HEALTH_INTERVAL:g} s over mTLS from start to end; "
            f"answers {answers}, slowest {n['health']['slowest_s'] * 1000:.0f} ms",
        ),
    ]
    cpu = s["server_cpu_us_per_delivery"]
    marginal = (s["server_cpu_s"] - publish["ok"] * z["server_cpu_us_per_publish"] / 1e6) / max(
        1, s["deliveries"]
    )
    bare = found["bare"]["sustained"] if found.get("bare") else None
    rows.append(Result(
        "9", f"server CPU per delivery, {at}", "µs", cpu, CPU_PER_DELIVERY_US, 1.0, higher=False,
        notes=f"baseline: the 50 µs limit; /proc utime+stime over the run and its drain / "
        f"deliveries ({1e6 * marginal:.0f} µs less the publishes' own CPU at 0 subs); server "
        f"{s['server_cores']:.2f} cores, client process {s['client_cores']:.2f} "
        f"({s['client_cpu_us_per_delivery']:.0f} µs per delivery); {top:,} subs: "
        f"{_us(big['server_cpu_us_per_delivery'])}",
    ))  # fmt: skip
    if bare is not None:
        rows.append(Result(
            "9", f"server CPU per delivery, {at}, vs bare grpc.aio", "µs", cpu,
            bare["server_cpu_us_per_delivery"], None, higher=False,
            notes="baseline: a grpc.aio server streaming the same bytes to as many streams "
            "(plain async generator; mTLS; no database, ledger or checks); recorded, no target",
        ))  # fmt: skip
    rows += [
        Result(
            "9",
            f"{top:,} idle subs: publish to last stream p50",
            "ms",
            idle["reach_all_p50_ms"],
            REACH_ALL_MS,
            1.0,
            higher=False,
            notes=f"baseline: the 500 ms limit; {fs.singles} alerts one at a time, max "
            f"{_ms(idle['reach_all_max_ms'])}" + _loads(largest),
        ),
        Result(
            "9",
            f"{top:,} idle subs: publish p99, {fs.burst} back to back",
            "ms",
            idle["burst_publish_p99_ms"],
            PUBLISH_P99_MS,
            1.0,
            higher=False,
            notes=f"baseline: the 100 ms limit; the same burst with 0 subs: "
            f"{_ms(idle_zero['burst_publish_p99_ms'])}; the {fs.singles} single publishes: p99 "
            f"{_ms(idle['singles_publish_p99_ms'])} (0 subs: "
            f"{_ms(idle_zero['singles_publish_p99_ms'])})",
        ),
    ]
    if top != count:
        rows.append(Result(
            "9", f"fan-out {top:,} subs, {RATE:g}/s: delivery p99", "ms",
            big["delivery_p99_ms"] or fs.drain_seconds * 1000, DELIVERY_P99_MS, None,
            higher=False,
            notes=f"recorded, no target; p50 {_ms(big['delivery_p50_ms'])}; "
            f"{big['publish']['ok']} of {big['publish']['attempted']} publishes ok "
            f"({big['publish']['scheduled']} scheduled), p99 {_ms(big['publish_p99_ms'])}",
        ))  # fmt: skip
    if len(found["scale_out"]) == 2:
        one, two = (r["sustained"] for r in found["scale_out"])
        rows.append(Result(
            "9", "scale-out: deliveries/s, 2 replicas vs 1, PostgreSQL", "deliveries/s",
            two["delivery_rate"], one["delivery_rate"], SCALE_OUT,
            notes=f"{fs.scale_subscriptions:,} subs split over the replicas, {RATE:g} alerts/s "
            f"published for {fs.scale_seconds:g} s; every delivery over the time to the last; "
            f"server cores {one['server_cores']:.2f} vs {two['server_cores']:.2f}, client "
            f"{one['client_cores']:.2f} vs {two['client_cores']:.2f}"
            + _loads(*found["scale_out"]),
            details={"scale_out": found["scale_out"]},
        ))  # fmt: skip
    rows[0].details = found
    return rows


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms" if value >= 10 else f"{value:.1f} ms"


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} µs"


def run(pki: Path, sizes: Sizes) -> list[Result]:
    """Benchmark 9 at ``sizes.name`` ("quick" or "full")."""
    fs = QUICK if sizes.name == "quick" else FULL
    return _rows(_explore(pki, fs), fs)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench._fanout", description=__doc__)
    parser.add_argument("role", nargs="?", default="bench",
                        choices=("bench", "subscribers", "publisher", "bare"))  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="bench-quick's sizes")
    parser.add_argument("--shapes", help="development: these subscription counts only")
    parser.add_argument("--scale", type=int, help="development: scale-out with this many (0: none)")
    parser.add_argument("--pki", type=Path)
    parser.add_argument("--servers", default="")
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--inflight", type=int, default=INFLIGHT_OPENS)
    parser.add_argument("--state", type=Path)
    parser.add_argument("--size", type=int, default=0)
    args = parser.parse_args()
    servers = args.servers.split(",")
    if args.role == "subscribers":
        asyncio.run(_subscribers(args.pki, servers, args.count, args.inflight))
        os._exit(0)  # the channels' threads
    elif args.role == "bare":
        asyncio.run(_bare(args.pki / "server", args.size))
        os._exit(0)
    elif args.role == "publisher":
        _publisher_main(args.pki, servers, args.state)
    elif args.shapes or args.scale is not None:  # development: the figures, no rows
        from bench._common import dev_pki  # noqa: PLC0415

        fs = QUICK if args.quick else FULL
        if args.shapes:
            fs = replace(fs, subscriptions=tuple(int(n) for n in args.shapes.split(",")))
        if args.scale:
            fs = replace(fs, scale_subscriptions=args.scale)
        found = _explore(dev_pki(RESULTS / "cache" / "pki"), fs, scale=args.scale != 0)
        print(json.dumps(found, indent=1))
    else:  # the benchmark alone, as `python -m bench --only 9` runs it
        from bench.__main__ import main as bench_main  # noqa: PLC0415

        sys.argv = [sys.argv[0], "--only", "9", *(["--quick"] if args.quick else [])]
        bench_main()


if __name__ == "__main__":
    main()
