"""Soak: a real `sinergi serve` (SQLite) at 70% of its measured maximum publish rate, with every
agency subscribed, for ten minutes (issue 10; docs/reliability.md).

    python -m bench._soak [--minutes 10] [--load 0.7]     # make soak

First the maximum rate is measured (8 closed-loop publishers, subscribers attached), then the
paced load runs in windows of 30 s. Per window: publishes, errors, publish p99, publish-to-
delivery p99 (every alert reaches every addressed agency, or the soak fails) and the server's
resident memory. It passes when no call failed, nothing was lost, and memory and both latencies
stay flat: the last third of the windows within 20% (memory) and 50% plus 5 ms (latency p99) of
the first third after the first window, which warms caches. The result is written to
bench/results/<timestamp>-soak.json. Exit status 1 when it fails.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench._common import (
    RESULTS,
    dev_pki,
    fresh_copy,
    log,
    machine,
    percentile,
    rss_bytes,
    write_json,
)
from bench._common import wait_for as bench_wait_for
from bench._exchange import _closed_loop, _expected, _open_loop, subscribed

WINDOW_SECONDS = 30.0
MEMORY_SLACK = 1.20
LATENCY_SLACK = 1.50
LATENCY_FLOOR_MS = 5.0  # below this, a p99 difference is scheduling noise, not a trend


@dataclass
class Window:
    started: float
    publishes: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds
    # Per publisher (as bench._exchange numbers them): alert id -> monotonic ns at send.
    sent: list[dict[str, float]] = field(default_factory=list)
    rss: int = 0


def _timed(calls: list[Callable[[], object]], windows: list[Window]) -> list[Callable[[], object]]:
    """Each call timed into the current window; a failure is counted, never raised."""
    lock = threading.Lock()

    def wrap(call: Callable[[], object]) -> Callable[[], object]:
        def timed() -> object:
            window = windows[-1]
            began = time.perf_counter()
            try:
                result = call()
            except Exception as exc:  # counted and reported: the soak fails on any
                with lock:
                    window.errors += 1
                log(f"publish failed: {type(exc).__name__}: {exc}")
                return None
            with lock:
                window.publishes += 1
                window.latencies.append(time.perf_counter() - began)
            return result

        return timed

    return [wrap(c) for c in calls]


def _flat(values: list[float], slack: float, floor: float = 0.0) -> tuple[float, float, bool]:
    """First third vs last third (window 0 excluded as warm-up): (first, last, flat?)."""
    body = values[1:] if len(values) > 3 else values
    third = max(1, len(body) // 3)
    first, last = statistics.median(body[:third]), statistics.median(body[-third:])
    return first, last, last <= first * slack + floor


def soak(minutes: float, load: float, work: Path) -> dict[str, object]:
    pki = fresh_copy(dev_pki(RESULTS / "cache" / "pki"), work / "pki-soak")
    with subscribed(pki, work, "soak") as live:
        deliveries, sent = live.deliveries, live.sent
        count, elapsed, _ = _closed_loop(live.calls, 15.0)
        maximum = count / elapsed
        bench_wait_for(lambda: deliveries.covers(_expected(sent)), 300, "the backlog")
        rate = load * maximum
        log(f"maximum {maximum:.0f} publishes/s; soaking at {rate:.0f}/s for {minutes} min")
        for ids in sent:
            ids.clear()
        windows: list[Window] = []
        timed = _timed(live.calls, windows)
        for _ in range(max(1, round(minutes * 60 / WINDOW_SECONDS))):
            windows.append(Window(time.monotonic()))
            _open_loop(timed, rate, WINDOW_SECONDS)
            windows[-1].rss = rss_bytes(live.server.pid)
            windows[-1].sent = [dict(ids) for ids in sent]
            for ids in sent:
                ids.clear()
            w = windows[-1]
            log(f"window {len(windows)}: {w.publishes} publishes, {w.errors} errors, "
                f"p99 {1000 * percentile(w.latencies, 99):.1f} ms, "
                f"rss {w.rss / 2**20:.1f} MiB")  # fmt: skip
        expected = set().union(*(_expected(w.sent) for w in windows))
        try:
            bench_wait_for(lambda: deliveries.covers(expected), 300, "every delivery")
        except TimeoutError:
            log("not every delivery arrived within 300 s of the last publish")
    started = {a: (i, t) for i, w in enumerate(windows) for ids in w.sent for a, t in ids.items()}
    lags: list[list[float]] = [[] for _ in windows]
    for agency, alert_id in expected:
        got = deliveries.seen.get((agency, alert_id))
        if got is not None:
            i, at = started[alert_id]
            lags[i].append((got - at) / 1e6)
    rss = [w.rss / 2**20 for w in windows]
    publish_p99 = [1000 * percentile(w.latencies, 99) if w.latencies else 0.0 for w in windows]
    delivery_p99 = [percentile(lag, 99) if lag else 0.0 for lag in lags]
    rows = [
        {"window": i + 1, "publishes": w.publishes, "rate": w.publishes / WINDOW_SECONDS,
         "errors": w.errors, "publish_p99_ms": publish_p99[i],
         "delivery_p99_ms": delivery_p99[i], "rss_mib": rss[i]}
        for i, w in enumerate(windows)
    ]  # fmt: skip
    memory = _flat(rss, MEMORY_SLACK)
    publish = _flat(publish_p99, LATENCY_SLACK, LATENCY_FLOOR_MS)
    delivery = _flat(delivery_p99, LATENCY_SLACK, LATENCY_FLOOR_MS)
    errors = sum(w.errors for w in windows)
    missing = len(expected - deliveries.seen.keys())
    return {
        "minutes": minutes,
        "load": load,
        "maximum_rate": maximum,
        "target_rate": rate,
        "publishes": sum(w.publishes for w in windows),
        "deliveries_due": len(expected),
        "deliveries_missing": missing,
        "errors": errors,
        "memory_mib_first_last": memory[:2],
        "publish_p99_ms_first_last": publish[:2],
        "delivery_p99_ms_first_last": delivery[:2],
        "memory_flat": memory[2],
        "publish_latency_flat": publish[2],
        "delivery_latency_flat": delivery[2],
        "passed": errors == 0 and missing == 0 and memory[2] and publish[2] and delivery[2],
        "windows": rows,
    }


def report(result: dict[str, object]) -> str:
    rows = result["windows"]
    assert isinstance(rows, list)
    header = "| window | publishes/s | errors | publish p99 ms | delivery p99 ms | server RSS MiB |"
    lines = [header, "|---|---|---|---|---|---|"]
    lines += [
        f"| {r['window']} | {r['rate']:.0f} | {r['errors']} | {r['publish_p99_ms']:.1f} "
        f"| {r['delivery_p99_ms']:.1f} | {r['rss_mib']:.1f} |"
        for r in rows
    ]
    verdict = "PASS" if result["passed"] else "FAIL"
    lines.append(
        f"\n{verdict}: {result['publishes']} publishes at {result['target_rate']:.0f}/s "
        f"({result['load']:.0%} of {result['maximum_rate']:.0f}/s), {result['errors']} errors, "
        f"{result['deliveries_missing']} of {result['deliveries_due']} deliveries missing; "
        f"first vs last third: memory {_pair(result['memory_mib_first_last'])} MiB, "
        f"publish p99 {_pair(result['publish_p99_ms_first_last'])} ms, "
        f"delivery p99 {_pair(result['delivery_p99_ms_first_last'])} ms"
    )
    return "\n".join(lines)


def _pair(values: object) -> str:
    assert isinstance(values, tuple | list)
    return " -> ".join(f"{v:.1f}" for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench._soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--load", type=float, default=0.7, help="fraction of the maximum rate")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sinergi-soak-") as work:
        result = soak(args.minutes, args.load, Path(work))
    stamp = time.strftime("%Y%m%dT%H%M%S")
    out = RESULTS / f"{stamp}-soak.json"
    write_json(out, {"started": stamp, "machine": machine(), **result})
    print(report(result))
    print(f"results in {out.relative_to(RESULTS.parent.parent)}")
    sys.exit(0 if result["passed"] else 1)


if __name__ == "__main__":
    main()
