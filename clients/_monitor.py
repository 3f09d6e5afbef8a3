"""A recipient's suppression monitor: every entry addressed to your agency must reach it.

The exchange records each PUBLISH, UPDATE and CANCEL in the ledger, numbered for each agency it
is addressed to (``meta.to_index``). The monitor walks the ledger from the checkpoint it checked
last to the newest one its witnesses cosigned (consistency first), fetches the entries addressed
to its agency with their inclusion proofs, and compares them with what the agency received: the
deliveries a watch recorded here, or, without a watch, a GetAlert of each. An entry not received
within the grace period, or a number skipped (an entry kept back from the monitor itself), is a
suppression alarm. Rules for the entries themselves are :func:`ledger.open_envelopes`'; this
module keeps the state and talks to the exchange.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import grpc

from clients._client import ExchangeClient
from clients._errors import Refused, VerificationFailed
from clients._statefile import locked, replace
from clients._witness import ForkDetected
from ledger import Checkpoint, ForkError, VerificationError, advance, open_envelopes
from sinergi.v1 import exchange_pb2

MONITOR_FILE = "monitor.json"
STATE_VERSION = 1
#: How long an entry may go unreceived before it is an alarm: a live watch receives an alert
#: within a second; five minutes covers a restart of the watch or the exchange.
DEFAULT_GRACE = 300.0
#: Received ids kept without a matching entry yet (an entry the monitor has not walked to):
#: dropped after this long, so the state stays small.
RECEIVED_KEPT = 30 * 86400.0
Confirm = Literal["auto", "deliveries", "get"]


@dataclass(frozen=True)
class Pending:
    """An entry addressed to the agency, not yet seen received."""

    seq: int
    number: int
    action: str
    message_id: str
    thread_id: str
    recorded: str  # the entry's time (RFC 3339)

    def age(self, now: float) -> float:
        return now - datetime.fromisoformat(self.recorded).timestamp()

    def alarm(self, raised: float) -> Alarm:
        return Alarm(
            "not-received",
            self.number,
            self.seq,
            self.action,
            self.message_id,
            self.thread_id,
            self.recorded,
            raised,
        )


@dataclass(frozen=True)
class Alarm:
    """``not-received``: an entry addressed to the agency never reached it within the grace
    period; ``withheld-entry``: the exchange kept an entry numbered for the agency from the
    monitor (its number was skipped), so what it records is unknown."""

    kind: str
    number: int
    seq: int | None = None
    action: str | None = None
    message_id: str | None = None
    thread_id: str | None = None
    recorded: str | None = None
    raised: float = 0.0

    def describe(self) -> str:
        if self.kind == "withheld-entry":
            return (
                f"SUPPRESSION: ledger entry number {self.number} addressed to your agency was "
                "kept from the monitor (its number was skipped)"
            )
        return (
            f"SUPPRESSION: {self.action} {self.message_id} (thread {self.thread_id}), recorded "
            f"at ledger entry {self.seq} on {self.recorded} for your agency, never reached it"
        )


@dataclass
class _State:
    origin: str = ""
    size: int = 0
    root: str = ""
    last_number: int = 0
    pending: list[Pending] = field(default_factory=list)
    received: dict[str, float] = field(default_factory=dict)
    alarms: list[Alarm] = field(default_factory=list)
    #: a watch has recorded deliveries here: confirm by them, not by GetAlert
    watched: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "origin": self.origin,
            "size": self.size,
            "root": self.root,
            "last_number": self.last_number,
            "pending": [asdict(p) for p in self.pending],
            "received": self.received,
            "alarms": [asdict(a) for a in self.alarms],
            "watched": self.watched,
        }

    @classmethod
    def from_json(cls, data: Any) -> _State:  # noqa: ANN401 - parsed JSON
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise ValueError("unknown format")
        return cls(
            str(data["origin"]),
            int(data["size"]),
            str(data["root"]),
            int(data["last_number"]),
            [Pending(**p) for p in data["pending"]],
            {str(k): float(v) for k, v in data["received"].items()},
            [Alarm(**a) for a in data["alarms"]],
            bool(data["watched"]),
        )


@dataclass(frozen=True)
class MonitorReport:
    """One check: the cosigned checkpoint it reached, the entries addressed to the agency found
    in this walk, those still inside the grace period, and every alarm standing."""

    checkpoint: Checkpoint
    walked_from: int
    found: int
    received: int
    pending: tuple[Pending, ...]
    alarms: tuple[Alarm, ...]
    #: the witnesses whose cosignatures met the policy's quorum; () without a witness policy,
    #: when the checkpoint is only the exchange's word
    cosigners: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "cosigners": list(self.cosigners),
            "origin": self.checkpoint.origin,
            "size": self.checkpoint.size,
            "root": self.checkpoint.root.hex(),
            "walked_from": self.walked_from,
            "found": self.found,
            "received": self.received,
            "pending": [asdict(p) for p in self.pending],
            "alarms": [{**asdict(a), "message": a.describe()} for a in self.alarms],
        }


class Monitor:
    """The monitor of ``client``'s agency, its progress kept in ``path``.

    ``confirm``: ``deliveries`` counts only what a watch recorded with :meth:`received` (an
    exchange that serves GetAlert but drops the delivery is caught); ``get`` asks GetAlert for
    each entry past its grace (for an agency that runs no watch); ``auto`` is ``deliveries``
    once a watch has recorded here, else ``get``."""

    def __init__(
        self,
        client: ExchangeClient,
        path: str | Path | None = None,
        *,
        grace: float = DEFAULT_GRACE,
        confirm: Confirm = "auto",
    ) -> None:
        self._client = client
        self.agency = client.agency
        self.path = Path(path) if path is not None else client.identity.directory / MONITOR_FILE
        self._lock_path = self.path.with_suffix(".lock")
        self._lock = threading.Lock()
        self.grace = grace
        self.confirm = confirm

    # -- the state --------------------------------------------------------------------------

    def _load(self) -> _State:
        try:
            return _State.from_json(json.loads(self.path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return _State()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise VerificationFailed(f"monitor state {self.path} is unreadable: {exc}") from None

    def _save(self, state: _State) -> None:
        replace(self.path, json.dumps(state.to_json(), sort_keys=True, indent=1) + "\n")

    def received(self, message_ids: Iterable[str], *, now: float | None = None) -> None:
        """Record messages the agency received (a watch calls this on each delivery)."""
        stamp = time.time() if now is None else now
        with locked(self._lock_path, self._lock):
            state = self._load()
            state.watched = True
            for message_id in message_ids:
                state.received[message_id] = stamp
            self._save(state)

    def watching(
        self, deliveries: Iterable[exchange_pb2.Delivery]
    ) -> Iterator[exchange_pb2.Delivery]:
        """``deliveries`` (from :meth:`ExchangeClient.subscribe`), each recorded as received."""
        for delivery in deliveries:
            self.received([delivery.alert.id])
            yield delivery

    def clear_alarms(self) -> list[Alarm]:
        """Drop the standing alarms (after they were investigated); returns them."""
        with locked(self._lock_path, self._lock):
            state = self._load()
            cleared, state.alarms = state.alarms, []
            self._save(state)
        return cleared

    # -- a check ----------------------------------------------------------------------------

    def check(self, *, now: float | None = None) -> MonitorReport:
        """Walk to the newest cosigned checkpoint and compare; the report names every alarm
        standing (the caller decides how loud: the CLI exits 1).

        Raises :class:`QuorumFailed` for a checkpoint without its witnesses' quorum,
        :class:`ForkDetected` for one inconsistent with the checkpoint checked last,
        :class:`VerificationFailed` for a wrong answer (an entry not addressed to this agency,
        a broken proof), and :class:`Refused` or :class:`Unreachable`."""
        newest = self._client.newest(quorum=True)
        cp = newest.checkpoint
        with locked(self._lock_path, self._lock):
            before = self._load()
        kept = self._kept(before)
        if kept is not None and kept.origin != cp.origin:
            raise VerificationFailed(
                f"monitor state {self.path} follows ledger {kept.origin}; the exchange shows "
                f"{cp.origin}: a new ledger must be trusted first (sinergi ledger trust), then "
                "the monitor state moved aside"
            )
        try:
            advance(kept, cp, fetch=self._client.consistency_proof, newest_since=before.size)
        except ForkError as exc:
            raise ForkDetected(str(exc)) from None
        walked_from = before.size
        try:
            opened = open_envelopes(
                self.agency,
                self._fetch(walked_from, cp),
                cp,
                after=walked_from,
                last_number=before.last_number,
            )
        except VerificationError as exc:
            raise VerificationFailed(f"the exchange's envelopes do not verify: {exc}") from None
        found = [
            Pending(e.seq, e.number, e.action.value, e.message_id, e.thread_id, e.time)
            for e in opened.envelopes
        ]
        stamp = time.time() if now is None else now
        with locked(self._lock_path, self._lock):
            state = self._load()
            if state.size != before.size:  # another monitor run moved on meanwhile
                raise VerificationFailed(f"monitor state {self.path} changed during the check")
            state.origin, state.size, state.root = cp.origin, cp.size, cp.root.hex()
            state.last_number = opened.last_number
            state.alarms.extend(Alarm("withheld-entry", n, raised=stamp) for n in opened.missing)
            watched = state.watched
            pending = [*state.pending, *found]
            state.pending = pending
            self._save(state)
        got = self._confirmed(pending, watched, stamp)
        with locked(self._lock_path, self._lock):
            state = self._load()
            got |= {p.message_id for p in state.pending if p.message_id in state.received}
            waiting, overdue = [], []
            for p in state.pending:
                if p.message_id in got:
                    state.received.pop(p.message_id, None)
                elif p.age(stamp) > self.grace:
                    overdue.append(p)
                else:
                    waiting.append(p)
            state.alarms.extend(p.alarm(stamp) for p in overdue)
            state.pending = waiting
            state.received = {k: v for k, v in state.received.items() if stamp - v < RECEIVED_KEPT}
            self._save(state)
            alarms = tuple(state.alarms)
        received = sum(1 for p in found if p.message_id in got)
        cosigners = newest.witnessing.cosigners if newest.witnessing is not None else ()
        return MonitorReport(
            cp, walked_from, len(found), received, tuple(waiting), alarms, cosigners
        )

    @staticmethod
    def _kept(state: _State) -> Checkpoint | None:
        if not state.origin:
            return None
        return Checkpoint(state.origin, state.size, bytes.fromhex(state.root), ())

    def _fetch(self, after: int, cp: Checkpoint) -> Iterator[tuple[int, bytes, Sequence[bytes]]]:
        start = after + 1
        while start <= cp.size:
            reply = self._client.envelopes(start, cp.size)
            if reply.tree_size != cp.size or not start <= reply.end <= cp.size:
                raise VerificationFailed(
                    f"asked for envelopes {start}..{cp.size}, the exchange answered "
                    f"{start}..{reply.end} of size {reply.tree_size}"
                )
            for envelope in reply.envelopes:
                if not start <= envelope.seq <= reply.end:
                    raise VerificationFailed(
                        f"envelope {envelope.seq} is outside the range answered, "
                        f"{start}..{reply.end}"
                    )
                yield envelope.seq, envelope.entry, list(envelope.proof)
            start = reply.end + 1

    def _confirmed(self, pending: Sequence[Pending], watched: bool, now: float) -> set[str]:
        """The pending messages GetAlert shows this agency, asked only when confirming by
        GetAlert and only for those past their grace (each ask is recorded as a READ)."""
        if self.confirm == "deliveries" or (self.confirm == "auto" and watched):
            return set()
        got = set()
        for p in pending:
            if p.age(now) <= self.grace:
                continue
            try:
                view = self._client.get_alert(p.message_id)
            except Refused as exc:
                if exc.code == grpc.StatusCode.NOT_FOUND:
                    continue
                raise
            if p.message_id in {m.id for m in view.history}:
                got.add(p.message_id)
        return got


def metrics_text(report: MonitorReport, agency: str) -> str:
    """The report in Prometheus text format, for node_exporter's textfile collector."""
    label = f'{{agency="{agency}"}}'
    lines = [
        "# HELP sinergi_monitor_suppression_alarms Entries addressed to the agency that did not "
        "reach it (standing alarms).",
        "# TYPE sinergi_monitor_suppression_alarms gauge",
        f"sinergi_monitor_suppression_alarms{label} {len(report.alarms)}",
        "# HELP sinergi_monitor_pending Entries addressed to the agency within their grace.",
        "# TYPE sinergi_monitor_pending gauge",
        f"sinergi_monitor_pending{label} {len(report.pending)}",
        "# HELP sinergi_monitor_checkpoint_size Size of the cosigned checkpoint checked last.",
        "# TYPE sinergi_monitor_checkpoint_size gauge",
        f"sinergi_monitor_checkpoint_size{label} {report.checkpoint.size}",
        "# HELP sinergi_monitor_last_check_timestamp_seconds When the monitor last checked.",
        "# TYPE sinergi_monitor_last_check_timestamp_seconds gauge",
        f"sinergi_monitor_last_check_timestamp_seconds{label} {time.time():.3f}",
    ]
    return "\n".join(lines) + "\n"
