"""Consumers of RabbitMQ queues for benchmark 7's fan-out, in a process of their own.

    python -m bench._amqp_consumers --url URL --queues NAME,NAME,...

One connection and one channel consume every named queue (automatic acknowledgement, so the
broker's delivery is all that is timed). Each message's body starts with its number and the
CLOCK_MONOTONIC time (ns) it was published at, shared by the processes of this machine. Prints
"ready" once every queue is consumed; "D <number> <ns>" when a message has reached every queue
of this process (ns: when the last got it); and, for each "report" line read on stdin, one
JSON line with the deliveries counted since the last report and each one's latency in µs.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import threading
import time
from typing import Any

#: number, publish time (CLOCK_MONOTONIC ns)
HEADER = struct.Struct("!qq")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--queues", required=True, help="comma-separated queue names")
    args = parser.parse_args()
    import pika  # noqa: PLC0415 - a development dependency; bench._rabbitmq imports HEADER only

    names = args.queues.split(",")
    connection = pika.BlockingConnection(pika.URLParameters(args.url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=1000)
    seen: dict[int, int] = {}  # message number -> queues of this process it reached
    latencies: list[int] = []
    wanted = len(names)
    out = sys.stdout

    def on_message(_channel: Any, _method: Any, _props: Any, body: bytes) -> None:
        now = time.monotonic_ns()
        number, sent = HEADER.unpack_from(body)
        latencies.append((now - sent) // 1000)
        count = seen.get(number, 0) + 1
        if count == wanted:
            del seen[number]
            out.write(f"D {number} {now}\n")
            out.flush()
        else:
            seen[number] = count

    for name in names:
        channel.basic_consume(name, on_message, auto_ack=True)
    reports: list[str] = []
    closed = threading.Event()

    def read_stdin() -> None:
        for line in sys.stdin:
            reports.append(line.strip())
        closed.set()

    threading.Thread(target=read_stdin, daemon=True).start()
    print("ready", flush=True)
    while not closed.is_set():
        connection.process_data_events(time_limit=0.05)
        while reports:
            reports.pop(0)
            out.write(json.dumps({"deliveries": len(latencies), "latency_us": latencies}) + "\n")
            out.flush()
            latencies.clear()
    connection.close()


if __name__ == "__main__":
    main()
