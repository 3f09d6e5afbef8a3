"""Prometheus metrics of one exchange process, served on their own plain-HTTP port.

Each server has its own ``CollectorRegistry``: tests run several servers in one process, and the
global registry would mix their numbers (and refuse a second registration of the same name).
Labels are method names and status codes only, never a principal: cardinality stays bounded and
the metrics reveal nothing the ledger should be asked for. The CRL gauges are labelled by CA: the
identity-issuing CAs of the server's own trust bundle, a few configured names (never a name read
from a CRL file, which anyone who can write it chooses). Tampered alerts are counted by field name,
a fixed set (never an alert id).
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric

from certs import CRL_REFUSALS
from exchange._errors import ConfigError
from exchange._tables import TAMPERED_FIELDS
from ledger.store import BatchStats

_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
#: Per CA: its label, whether its CRL is current, its CRL's nextUpdate (None: no CRL in force).
CrlStatus = tuple[str, bool, datetime | None]
_APPEND_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_LAG_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 30, 60, 300, 3600, 86400)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._rpcs = Counter(
            "sinergi_rpc",
            "RPCs answered, by method and status code.",
            ["method", "code"],
            registry=r,
        )
        self._rpc_seconds = Histogram(
            "sinergi_rpc_duration_seconds",
            "Time to answer an RPC (a stream: its whole life).",
            ["method"],
            registry=r,
        )
        self._denied = Counter(
            "sinergi_denied",
            "Requests refused (authentication, policy, validation).",
            ["method", "reason_code"],
            registry=r,
        )
        self._entries = Gauge(
            "sinergi_ledger_entries",
            "Entries in the ledger after this process's last commit.",
            registry=r,
        )
        self._append_seconds = Histogram(
            "sinergi_ledger_append_seconds",
            "Time of one group commit, signature included.",
            buckets=_APPEND_BUCKETS,
            registry=r,
        )
        self._batch_size = Histogram(
            "sinergi_ledger_batch_size",
            "Works committed together in one group commit.",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self._halted = Gauge(
            "sinergi_ledger_halted",
            "1 while the ledger writer refuses every write because the ledger was rolled back "
            "or rewritten (the reason is in the log), else 0.",
            registry=r,
        )
        self._subscribers = Gauge("sinergi_subscribers", "Open Subscribe streams.", registry=r)
        self._idle = Gauge(
            "sinergi_subscribers_idle",
            "Open Subscribe streams waiting for the next publish to their agency; the others "
            "are reading or sending (many for long: subscribers are lagging).",
            registry=r,
        )
        # Counted for every delivery and every stream's wake-up: on the event loop's thread
        # alone, without prometheus_client's locks (docs/performance.md, "Fan-out").
        self._fanout = _FanOutCollector()
        r.register(self._fanout)
        self._expiry = Gauge(
            "sinergi_certificate_expiry_seconds",
            "Seconds until the certificate expires.",
            ["identity"],
            registry=r,
        )
        self._crl_refused = Counter(
            "sinergi_crl_refused",
            "CRLs not taken into force, and CAs left without a CRL, by reason (the log names the "
            "CA); a CA without a current CRL has its identities refused.",
            ["reason"],
            registry=r,
        )
        for reason in CRL_REFUSALS:
            self._crl_refused.labels(reason)  # every reason shows, at 0, from the start
        self._tampered = Counter(
            "sinergi_alerts_tampered",
            "Alerts refused on a read because a row or stored field disagrees with what the "
            "sender signed, by the first field that does (the log names the alert).",
            ["field"],
            registry=r,
        )
        for name in TAMPERED_FIELDS:
            self._tampered.labels(name)  # every field shows, at 0, from the start
        self._crls = _CrlCollector()
        r.register(self._crls)
        self._http: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def rpc(self, method: str, code: str, seconds: float) -> None:
        self._rpcs.labels(method, code).inc()
        self._rpc_seconds.labels(method).observe(seconds)

    def denied(self, method: str, reason_code: str) -> None:
        self._denied.labels(method, reason_code).inc()

    def ledger_batch(self, stats: BatchStats) -> None:
        """The ledger writer's observer: called on its thread after each commit."""
        self._entries.set(stats.tree_size)
        self._append_seconds.observe(stats.seconds)
        self._batch_size.observe(stats.works)

    def ledger_halted(self, reason: Callable[[], str | None]) -> None:
        """Read at every scrape: 1 while ``reason()`` names why the writer halted. The reason
        is not a label (one series per distinct reason); it is logged at error instead."""
        self._halted.set_function(lambda: 0.0 if reason() is None else 1.0)

    def subscribers(self, count: int) -> None:
        self._subscribers.set(count)

    def idle_subscribers(self, count: Callable[[], int]) -> None:
        """Read at every scrape."""
        self._idle.set_function(count)

    def delivered(self, lag_seconds: float) -> None:
        """One message written to a stream: called on the event loop's thread only."""
        self._fanout.delivered(lag_seconds)

    def page_read(self, shared: bool) -> None:
        """A stream asked for a page: called on the event loop's thread only."""
        self._fanout.page_reads[shared] += 1

    def certificate(self, identity: str, not_after: datetime) -> None:
        """Expiry counts down by itself at every scrape (a value set once would go stale)."""

        def remaining() -> float:
            return (not_after - datetime.now(UTC)).total_seconds()

        self._expiry.labels(identity).set_function(remaining)

    def crl_refused(self, reason: str) -> None:
        """A CRL refused, or a CA without one; ``reason`` is one of :data:`certs.CRL_REFUSALS`."""
        self._crl_refused.labels(reason).inc()

    def tampered(self, field: str) -> None:
        """One alert refused because ``field`` (of :data:`TAMPERED_FIELDS`) disagrees with what
        its sender signed: someone changed the database."""
        self._tampered.labels(field).inc()

    def crls(self, status: Callable[[], Sequence[CrlStatus]]) -> None:
        """Read at every scrape: each identity-issuing CA of the bundle and its CRL."""
        self._crls.status = status

    def serve(self, listen: str) -> int:
        """Serve ``/metrics`` on ``host:port``, or on 127.0.0.1 for a bare port: plain HTTP
        must not face the network unless asked to. Port 0 picks one; returns the port."""
        host, _, port = listen.rpartition(":")
        host = host or "127.0.0.1"
        if not port.isdigit():
            raise ConfigError(f"metrics_listen {listen!r} is not host:port")
        try:
            self._http, self._thread = start_http_server(
                int(port), addr=host.strip("[]"), registry=self.registry
            )
        except OSError as exc:
            raise ConfigError(f"cannot serve metrics on {listen}: {exc.strerror}") from None
        return int(self._http.server_port)

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None


class _CrlCollector:
    """``sinergi_crl_current`` and ``sinergi_crl_next_update_seconds`` per CA, computed at each
    scrape (the bundle and the CRLs change while serving)."""

    def __init__(self) -> None:
        self.status: Callable[[], Sequence[CrlStatus]] = list  # none until CRLs are configured

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        current, seconds = self._families()
        now = datetime.now(UTC)
        for ca, ok, next_update in self.status():
            current.add_metric([ca], 1.0 if ok else 0.0)
            if next_update is not None:
                seconds.add_metric([ca], (next_update - now).total_seconds())
        yield current
        yield seconds

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "sinergi_crl_current",
                "1 while the CA has a CRL in force within nextUpdate and the grace, else 0 (its "
                "identities are refused).",
                labels=["ca"],
            ),
            GaugeMetricFamily(
                "sinergi_crl_next_update_seconds",
                "Seconds until the nextUpdate of the CA's CRL in force (negative once passed).",
                labels=["ca"],
            ),
        )


class _FanOutCollector:
    """``sinergi_delivery_lag_seconds`` and ``sinergi_subscription_page_reads_total``, counted by
    the event loop's thread alone and read at each scrape. They change once per delivery, where a
    prometheus_client histogram's locks and bucket loop were 3% of the server's time under fan-out.
    A scrape reads without a lock: it may count a delivery in its bucket and not yet in the sum."""

    def __init__(self) -> None:
        self._lags = [0] * (len(_LAG_BUCKETS) + 1)  # the last: above every bound (+Inf only)
        self._lag_sum = 0.0
        self.page_reads = {True: 0, False: 0}  # joined a read already running, ran its own

    def delivered(self, lag_seconds: float) -> None:
        lag = max(lag_seconds, 0.0)
        self._lags[bisect.bisect_left(_LAG_BUCKETS, lag)] += 1  # le: a bound counts its equal
        self._lag_sum += lag

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        lag, reads = self._families()
        counts, total, cumulative = list(self._lags), self._lag_sum, 0
        buckets: list[tuple[str, float]] = []
        for bound, count in zip([*map(str, map(float, _LAG_BUCKETS)), "+Inf"], counts, strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        lag.add_metric([], buckets, total)
        shared = dict(self.page_reads)
        reads.add_metric(["yes"], shared[True])
        reads.add_metric(["no"], shared[False])
        yield lag
        yield reads

    @staticmethod
    def _families() -> tuple[HistogramMetricFamily, CounterMetricFamily]:
        return (
            HistogramMetricFamily(
                "sinergi_delivery_lag_seconds",
                "Time from publish to delivery: how far behind subscribers are (a resumed "
                "backlog shows as a long tail).",
            ),
            CounterMetricFamily(
                "sinergi_subscription_page_reads",
                "Pages of alerts subscriptions asked for, by whether the subscription joined a "
                "read another one had started at the same cursor (shared=yes) or ran its own (no).",
                labels=["shared"],
            ),
        )
