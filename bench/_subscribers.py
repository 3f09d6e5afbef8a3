"""Recipient agencies for the delivery benchmark: one subscription per agency, in its own process.

    python -m bench._subscribers --pki PKI --server ADDR --agencies police,customs,...
        [--after CURSOR] [--related]

For each delivery it prints ``D <agency> <alert id> <CLOCK_MONOTONIC ns>`` (the clock is the
machine's, so the publisher's process can subtract its own readings). It stops when its standard
input closes.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from clients import ExchangeClient


def _subscribe(
    pki: Path,
    server: str,
    agency: str,
    witness: Path,
    lock: threading.Lock,
    after: int = 0,
    related: bool = False,
) -> None:
    with ExchangeClient(pki / agency, server, witness_state=witness) as client:
        for delivery in client.subscribe(after=after, related=related):
            now = time.monotonic_ns()
            with lock:
                sys.stdout.write(f"D {agency} {delivery.alert.id} {now}\n")
                sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pki", type=Path, required=True)
    parser.add_argument("--server", required=True)
    parser.add_argument("--agencies", required=True)
    parser.add_argument("--after", type=int, default=0, help="resume after this cursor")
    parser.add_argument("--related", action="store_true", help="ask for related alerts")
    args = parser.parse_args()
    lock = threading.Lock()
    state = Path(tempfile.mkdtemp(prefix="sinergi-bench-subscribers-"))
    for agency in args.agencies.split(","):
        threading.Thread(
            target=_subscribe,
            args=(args.pki, args.server, agency, state / f"{agency}.json", lock),
            kwargs={"after": args.after, "related": args.related},
            daemon=True,
        ).start()
    print("started", flush=True)
    sys.stdin.read()  # until the benchmark closes our stdin
    sys.stdout.flush()
    os._exit(0)  # the subscription threads block in gRPC; do not wait for them


if __name__ == "__main__":
    main()
