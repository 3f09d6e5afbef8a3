"""Run the benchmarks, each beside its bare primitive, and print the table.

    python -m bench            # make bench: full sizes (1,000,000-entry ledgers)
    python -m bench --quick    # make bench-quick: smaller sizes, under two minutes
    python -m bench --only 4,5 # some benchmarks only

Results go to bench/results/<timestamp>-<sizes>.json with a description of the machine.
Exit status 0 even when a target is missed: the table says which. A benchmark that cannot run
here (7 without a reachable RabbitMQ, say) is reported as skipped, with the reason.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from bench import _append, _correlation, _exchange, _fanout, _ledger, _merkle, _rabbitmq
from bench._common import FULL, QUICK, RESULTS, Result, Skipped, dev_pki, log, machine, write_json

ALL = ("1", "2", "3", "4", "5", "6", "7", "8", "9", "10")


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:,.2f}" if value >= 1 else f"{value:.3f}"


def table(results: list[Result]) -> str:
    """The results as a Markdown table; "-" where a row has no project figure or no target."""
    header = ("#", "figure", "unit", "project", "baseline", "ratio", "target", "pass")
    rows = [
        (
            r.benchmark,
            r.figure,
            r.unit,
            "-" if r.project is None else _fmt(r.project),
            _fmt(r.baseline),
            "-" if r.project is None else f"{r.ratio:.3f}",
            "-" if r.target is None else f"{'>=' if r.higher else '<='} {r.target:g}",
            {True: "PASS", False: "miss", None: "-"}[r.passed],
        )
        for r in results
    ]
    widths = [max(len(str(row[i])) for row in (header, *rows)) for i in range(len(header))]
    lines = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += [
        "| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in rows
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (make bench-quick)")
    parser.add_argument("--only", default=",".join(ALL), help="comma-separated benchmarks")
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    only = set(args.only.split(","))
    began = time.monotonic()
    load_before = list(os.getloadavg())
    RESULTS.mkdir(parents=True, exist_ok=True)
    pki = dev_pki(RESULTS / "cache" / "pki")
    results: list[Result] = []
    skipped: dict[str, str] = {}
    if only & {"3"}:
        results += _append.run(sizes)
    if only & {"4", "5"}:
        results += _ledger.run(sizes, only)
    if only & {"1", "2", "6"}:
        results += [r for r in _exchange.run(pki, sizes, only) if r.benchmark in only]
    for number, peer in (
        ("7", lambda: _rabbitmq.run(pki, sizes)),
        ("8", lambda: _merkle.run(sizes)),
        ("9", lambda: _fanout.run(pki, sizes)),
        ("10", lambda: _correlation.run(pki, sizes)),
    ):
        if number in only:
            try:
                results += peer()
            except Skipped as exc:
                log(f"{number}. skipped: {exc}")
                skipped[number] = str(exc)
    results.sort(key=lambda r: int(r.benchmark))  # 10 after 9
    elapsed = time.monotonic() - began
    stamp = time.strftime("%Y%m%dT%H%M%S")
    out = RESULTS / f"{stamp}-{sizes.name}.json"
    write_json(out, {
        "sizes": sizes.name,
        "started": stamp,
        "seconds": elapsed,
        "machine": machine(),
        "load_average_at_start": load_before,
        "results": [r.to_json() for r in results],
        "skipped": skipped,
    })  # fmt: skip
    print(table(results))
    for number, reason in skipped.items():
        print(f"\nbenchmark {number} skipped: {reason}")
    shown = Path(out).relative_to(RESULTS.parent.parent)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\n{sizes.name} run: {elapsed:.0f} s (load average now {load}); results in {shown}")


if __name__ == "__main__":
    main()
