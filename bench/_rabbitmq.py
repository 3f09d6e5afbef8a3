"""Publishing through Sinergi beside publishing through a message broker, in the same run.

An agency could push its alerts through RabbitMQ instead. The peer is the RabbitMQ broker at
``SINERGI_BENCH_AMQP`` (default ``amqp://guest:guest@127.0.0.1:5672/%2F``), reached **without
TLS** through pika's blocking client (pika is a development dependency; the broker is no
dependency of the product). Each of 8 publishers, one thread with its own connection and
channel, publishes to one durable queue: persistent messages (delivery mode 2) with publisher
confirms, so that each ``basic_publish`` returns once the broker has taken the message, and
each message has the size of a signed ``PublishRequest`` (what the echo baseline of benchmark 1
sends). Measured before and after Sinergi's own publish, run here as benchmark 1 runs it (8
publishers, ``sinergi serve`` on SQLite, every receipt verified); the baseline is the mean of the
two broker runs.

The broker's fan-out is recorded beside, with no project figure until Sinergi has a fan-out
benchmark of the same shape: a durable fanout exchange bound to 500 durable queues, persistent
messages and confirms, and two consumer processes (``bench/_amqp_consumers.py``), each consuming
250 of the queues on one connection with automatic acknowledgement. Three figures: one message
at a time to the idle queues (publish to the last queue's consumer), 50 messages/s (each
delivery's latency), and 8 publishers as fast as the broker confirms (deliveries/s until every
queue has every message).

If pika is missing or the broker does not answer, the benchmark is skipped with the reason.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

from bench._amqp_consumers import HEADER
from bench._common import RESULTS, Child, Result, Sizes, Skipped, log, percentile
from bench._exchange import PUBLISHERS, _closed_loop, _request_size, publish_rate

AMQP_URL = os.environ.get("SINERGI_BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672/%2F")
FANOUT_QUEUES = 500
CONSUMER_PROCESSES = 2
IDLE_MESSAGES = 20
PACED_RATE = 50.0
TARGET = 0.5


def _pika() -> ModuleType:
    try:
        import pika  # noqa: PLC0415 - a development dependency, for this benchmark only
    except ImportError:
        raise Skipped("pika is not installed (make install)") from None
    return pika


def _where() -> str:
    """The broker's address, without its credentials."""
    pika = _pika()
    parameters = pika.URLParameters(AMQP_URL)
    return f"{parameters.host}:{parameters.port}"


def _connect() -> Any:
    pika = _pika()
    return pika.BlockingConnection(pika.URLParameters(AMQP_URL))


def check_broker() -> str:
    """The broker's product and version; :class:`Skipped` if pika or the broker is not there."""
    pika = _pika()
    try:
        connection = _connect()
    except (pika.exceptions.AMQPError, OSError) as exc:
        cause = "; ".join(map(repr, exc.args)) or type(exc).__name__
        raise Skipped(f"RabbitMQ unreachable at {_where()}: {cause}") from None
    properties = connection._impl.server_properties  # what the broker announced
    connection.close()
    product = properties.get("product", b"?")
    version = properties.get("version", b"?")
    return f"{_text(product)} {_text(version)}"


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _broker_pids() -> list[int]:
    """The broker's processes when it runs on this machine (beam.smp), for its CPU time."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "beam.smp":
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _persistent() -> Any:
    pika = _pika()
    return pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)


def confirmed_publish_rate(payload: bytes, seconds: float) -> tuple[float, dict[str, object]]:
    """8 publishers, each on its own connection, publish persistent messages with confirms to
    one durable queue for ``seconds``: (confirmed publishes/s, details)."""
    name = f"sinergi-bench-{uuid.uuid4().hex[:12]}"
    admin = _connect()
    channel = admin.channel()
    channel.queue_declare(name, durable=True)
    connections = []
    try:
        calls: list[Callable[[], object]] = []
        for _ in range(PUBLISHERS):
            connection = _connect()
            connections.append(connection)
            publisher = connection.channel()
            publisher.confirm_delivery()
            calls.append(partial(publisher.basic_publish, "", name, payload, _persistent(),
                                 mandatory=True))  # fmt: skip
        pids = _broker_pids()
        broker_cpu, client_cpu = _cpu_seconds(pids), time.process_time()
        count, elapsed, latencies = _closed_loop(calls, seconds)
        broker_cpu = _cpu_seconds(pids) - broker_cpu
        client_cpu = time.process_time() - client_cpu
        queued = channel.queue_declare(name, durable=True, passive=True).method.message_count
    finally:
        for connection in connections:
            connection.close()
        channel.queue_delete(name)
        admin.close()
    assert queued >= count, f"the broker holds {queued} messages of {count} confirmed"
    return count / elapsed, {
        "rate": count / elapsed,
        "publishes": count,
        "message_bytes": len(payload),
        "queued_after": queued,
        "p50_ms": 1000 * percentile(latencies, 50),
        "p99_ms": 1000 * percentile(latencies, 99),
        "broker_cpu_us_per_publish": 1e6 * broker_cpu / count if pids else None,
        "client_cpu_us_per_publish": 1e6 * client_cpu / count,
    }


class _Consumers:
    """The consumer processes: when each message reached all their queues, and their reports.
    Their output lines come together in one queue, so that waiting is waiting on it."""

    def __init__(self, children: list[Child]) -> None:
        self.children = children
        self.reached: dict[int, list[int]] = {}  # number -> ns at which each process had it all
        self.complete: dict[int, int] = {}  # number -> ns at which every queue had it
        self.completed: list[int] = []  # numbers completed since the last look (wait)
        self.reports: list[dict[str, Any]] = []
        self._lines: queue.SimpleQueue[tuple[Child, str]] = queue.SimpleQueue()
        for child in children:
            threading.Thread(target=self._forward, args=(child,), daemon=True).start()

    def _forward(self, child: Child) -> None:
        while True:
            line = child.lines.get()
            self._lines.put((child, line))
            if line == "":
                return

    def _drain(self, timeout: float) -> None:
        """Take what the consumers printed, waiting up to ``timeout`` for the first line."""
        try:
            child, line = self._lines.get(timeout=timeout)
            while True:
                if line.startswith("D "):
                    _d, number, ns = line.split()
                    times = self.reached.setdefault(int(number), [])
                    times.append(int(ns))
                    if len(times) == len(self.children):
                        self.complete[int(number)] = max(times)
                        self.completed.append(int(number))
                elif line.startswith("{"):
                    self.reports.append(json.loads(line))
                elif line == "":
                    raise RuntimeError(f"{child.name} exited (status {child.process.poll()})")
                child, line = self._lines.get_nowait()
        except queue.Empty:
            return

    def wait(self, numbers: list[int], timeout: float) -> list[int]:
        """When each of the messages had reached every queue (ns)."""
        deadline = time.monotonic() + timeout
        remaining = {n for n in numbers if n not in self.complete}
        while remaining:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(remaining)} of {len(numbers)} messages did not reach "
                                   f"every queue within {timeout:.0f} s")  # fmt: skip
            self._drain(0.05)
            remaining.difference_update(self.completed)
            self.completed.clear()
        return [self.complete[n] for n in numbers]

    def report(self) -> tuple[int, list[int]]:
        """Deliveries and their latencies (µs) since the last report, from every process."""
        before = len(self.reports)
        for child in self.children:
            assert child.process.stdin is not None
            child.process.stdin.write(b"report\n")
            child.process.stdin.flush()
        deadline = time.monotonic() + 60
        while len(self.reports) < before + len(self.children):
            if time.monotonic() > deadline:
                raise TimeoutError("the consumers did not report")
            self._drain(0.05)
        mine = self.reports[before:]
        return sum(r["deliveries"] for r in mine), [x for r in mine for x in r["latency_us"]]


@contextmanager
def _fanout_queues() -> Iterator[tuple[str, _Consumers]]:
    """A durable fanout exchange bound to 500 durable queues, their consumers ready."""
    tag = uuid.uuid4().hex[:12]
    exchange = f"sinergi-bench-fanout-{tag}"
    names = [f"{exchange}-{i:03d}" for i in range(FANOUT_QUEUES)]
    admin = _connect()
    channel = admin.channel()
    channel.exchange_declare(exchange, "fanout", durable=True)
    children: list[Child] = []
    try:
        for name in names:
            channel.queue_declare(name, durable=True)
            channel.queue_bind(name, exchange)
        for i in range(CONSUMER_PROCESSES):
            argv = [sys.executable, "-m", "bench._amqp_consumers", "--url", AMQP_URL,
                    "--queues", ",".join(names[i::CONSUMER_PROCESSES])]  # fmt: skip
            children.append(Child(argv, name=f"AMQP consumers {i}"))
        for child in children:
            while (line := child.next_line(120)) != "ready":
                log(f"   {child.name}: {line}")
        yield exchange, _Consumers(children)
    finally:
        for child in children:
            child.stop()
        for name in names:
            channel.queue_delete(name)
        channel.exchange_delete(exchange)
        admin.close()


def _publisher(exchange: str, payload: bytes) -> tuple[Any, Callable[[int], None]]:
    """A connection with confirms, and a call publishing message ``number`` stamped now."""
    connection = _connect()
    channel = connection.channel()
    channel.confirm_delivery()
    properties = _persistent()
    padding = payload[HEADER.size :]

    def publish(number: int) -> None:
        body = HEADER.pack(number, time.monotonic_ns()) + padding
        channel.basic_publish(exchange, "", body, properties)

    return connection, publish


def fanout(payload: bytes, seconds: float) -> dict[str, object]:
    """The broker's fan-out to 500 queues: idle, paced and as fast as 8 publishers go."""
    with _fanout_queues() as (exchange, consumers):
        connection, publish = _publisher(exchange, payload)
        try:
            # One message at a time: publish to the last queue's consumer.
            idle = []
            for number in range(IDLE_MESSAGES):
                began = time.monotonic_ns()
                publish(number)
                (last,) = consumers.wait([number], 60)
                idle.append((last - began) / 1e6)
            consumers.report()  # start the next phase's count afresh

            # 50 messages/s, paced (a late publish does not make the next one early).
            first, interval = IDLE_MESSAGES, 1 / PACED_RATE
            paced = list(range(first, first + round(PACED_RATE * seconds)))
            began = time.perf_counter()
            for i, number in enumerate(paced):
                delay = began + i * interval - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)  # pacing an open-loop load, not waiting for a condition
                publish(number)
            paced_seconds = time.perf_counter() - began
            consumers.wait(paced, 300)
            paced_deliveries, paced_latencies = consumers.report()
        finally:
            connection.close()

        # 8 publishers, each with its own connection, as fast as the broker confirms.
        publishers = [_publisher(exchange, payload) for _ in range(PUBLISHERS)]
        sent: list[list[int]] = [[] for _ in publishers]
        stop_at = [0.0]
        barrier = threading.Barrier(PUBLISHERS + 1)

        def run(i: int) -> None:
            _connection, publish_one = publishers[i]
            barrier.wait()
            number = 10**9 * (i + 1)
            while time.perf_counter() < stop_at[0]:
                publish_one(number)
                sent[i].append(number)
                number += 1

        threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(PUBLISHERS)]
        for thread in threads:
            thread.start()
        pids = _broker_pids()
        broker_cpu = _cpu_seconds(pids)
        consumers_cpu = sum(child.cpu_seconds() for child in consumers.children)
        client_cpu = time.process_time()
        stop_at[0] = time.perf_counter() + seconds
        start_ns = time.monotonic_ns()
        barrier.wait()
        for thread in threads:
            thread.join()
        published = [n for mine in sent for n in mine]
        lasts = consumers.wait(published, 600)
        broker_cpu = _cpu_seconds(pids) - broker_cpu
        consumers_cpu = sum(child.cpu_seconds() for child in consumers.children) - consumers_cpu
        client_cpu = time.process_time() - client_cpu
        busy_deliveries, _latencies = consumers.report()
        for publisher_connection, _publish in publishers:
            publisher_connection.close()
    drained = (max(lasts) - start_ns) / 1e9
    return {
        "queues": FANOUT_QUEUES,
        "consumer_processes": CONSUMER_PROCESSES,
        "message_bytes": len(payload),
        "idle_messages": IDLE_MESSAGES,
        "idle_to_last_p50_ms": percentile(idle, 50),
        "idle_to_last_max_ms": max(idle),
        "paced_rate": len(paced) / paced_seconds,
        "paced_deliveries": paced_deliveries,
        "paced_delivery_p50_ms": percentile(paced_latencies, 50) / 1000,
        "paced_delivery_p99_ms": percentile(paced_latencies, 99) / 1000,
        "busy_publishers": PUBLISHERS,
        "busy_messages": len(published),
        "busy_publish_rate": len(published) / seconds,
        "busy_deliveries": busy_deliveries,
        "busy_seconds_until_delivered": drained,
        "busy_delivery_rate": busy_deliveries / drained,
        "broker_cpu_seconds_busy": broker_cpu if pids else None,
        "consumers_cpu_seconds_busy": consumers_cpu,
        "publishers_cpu_seconds_busy": client_cpu,
    }


def run(pki_template: Path, sizes: Sizes) -> list[Result]:
    broker = check_broker()
    log(f"7. RabbitMQ ({broker}, {_where()}, no TLS): 8 publishers, durable queue, "
        "persistent messages, confirms")  # fmt: skip
    payload = os.urandom(_request_size(pki_template))
    before, before_details = confirmed_publish_rate(payload, sizes.seconds)
    log(f"   {before:,.0f} confirmed publishes/s")
    work = Path(tempfile.mkdtemp(prefix="peer-", dir=RESULTS))
    try:
        log("7. Sinergi publish end to end, 8 publishers, SQLite (as benchmark 1)")
        publish, details = publish_rate(pki_template, work, sizes.seconds, "publish-peer")
        log(f"   {publish:,.0f} publishes/s")
    except BaseException:
        log(f"kept {work} (server logs, databases) for a look")
        raise
    shutil.rmtree(work, ignore_errors=True)
    log("7. RabbitMQ again (the baseline is the mean of both runs)")
    after, after_details = confirmed_publish_rate(payload, sizes.seconds)
    log(f"   {after:,.0f} confirmed publishes/s")
    baseline = (before + after) / 2
    log(f"7. RabbitMQ fan-out to {FANOUT_QUEUES} queues")
    spread = fanout(payload, sizes.seconds)
    log(
        f"   idle: p50 {spread['idle_to_last_p50_ms']:.1f} ms to the last queue; "
        f"{PACED_RATE:.0f}/s: p99 {spread['paced_delivery_p99_ms']:.1f} ms; "
        f"{PUBLISHERS} publishers: {spread['busy_delivery_rate']:,.0f} deliveries/s"
    )
    peer = f"RabbitMQ {broker} on this machine, without TLS"
    return [
        Result(
            "7", "publish, 8 publishers: Sinergi vs RabbitMQ (no TLS)", "calls/s",
            publish, baseline, TARGET,
            notes=f"baseline: {peer}; a durable queue, persistent messages, publisher "
            "confirms, 8 publishers (pika), before and after",
            details={"sinergi": details, "rabbitmq_runs": [before_details, after_details],
                     "broker": broker},
        ),
        Result(
            "7", f"RabbitMQ fan-out to {FANOUT_QUEUES} queues, {PUBLISHERS} publishers (no TLS)",
            "deliveries/s", None, float(spread["busy_delivery_rate"]), None,  # type: ignore[arg-type]
            notes=f"peer alone: {peer}; Sinergi's fan-out benchmark is to come",
            details=spread,
        ),
        Result(
            "7", f"RabbitMQ one message to {FANOUT_QUEUES} idle queues, to the last, p50",
            "ms", None, float(spread["idle_to_last_p50_ms"]), None,  # type: ignore[arg-type]
            higher=False, notes=f"peer alone: {peer}", details=spread,
        ),
        Result(
            "7", f"RabbitMQ {PACED_RATE:.0f} messages/s to {FANOUT_QUEUES} queues, delivery p99",
            "ms", None, float(spread["paced_delivery_p99_ms"]), None,  # type: ignore[arg-type]
            higher=False, notes=f"peer alone: {peer}", details=spread,
        ),
    ]  # fmt: skip
