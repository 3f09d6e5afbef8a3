"""The standard gRPC health service (grpc.health.v1), driven by what the exchange can do.

An exchange that cannot reach its database, or whose ledger writer cannot commit, can neither
record nor deliver: it answers NOT_SERVING so that a load balancer or an agency's client sends
traffic to a replica that can, and SERVING again as soon as it can. Every ``interval`` seconds a
thread runs a cheap query; a probe still running after the interval counts as a failure.

A database that answers a query may still refuse the writer's commits (a lock held elsewhere, a
revoked privilege, a connection stuck on an old snapshot), so the writer's own state counts too:
once its last batch failed, health is NOT_SERVING, and every interval a probe goes through the
writer (its connection, lock and transaction; a row inserted and rolled back, no ledger entry)
until one succeeds.

The probe has a thread and a database connection of its own: under load (hundreds of
subscriptions reading pages) a probe queued behind the reads in the shared worker pool, or
waiting for a pooled connection, would report a healthy database unreachable.

A halted ledger writer (the ledger was rolled back or rewritten under it: it refuses to sign)
makes every service NOT_SERVING too, until a restart after the operator acted: a replica that
cannot record anything must not be sent traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog
from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer
from sqlalchemy import Engine, text

from ledger import LedgerError
from ledger.store import Committed, LedgerWriter, create_engine

SERVICES = ("", "sinergi.v1.Exchange", "sinergi.v1.AuditLedger")
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
_log = structlog.get_logger("sinergi.health")


class DatabaseHealth:
    """Health from the database and from ``ledger``, the writer whose commits it watches."""

    def __init__(self, engine: Engine, interval: float, ledger: LedgerWriter) -> None:
        self.servicer = HealthServicer()
        # The same database as ``engine``, with one connection of its own for the probe.
        self._engine = create_engine(
            engine.url.render_as_string(hide_password=False), pool_size=1, max_overflow=0
        )
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="health")
        self._interval = interval
        self._ledger = ledger
        self._halt_logged = False
        self._probe_failed: str | None = None  # why the last write probe failed
        self._task: asyncio.Task[None] | None = None
        self.serving = True
        #: why the exchange does not serve ("" while it does), logged when it changes
        self.reason = ""
        self.probes = 0  #: database probes that have answered

    async def start(self) -> None:
        self.serving = self._writable()
        self.reason = "" if self.serving else "the ledger writer is halted"
        for service in SERVICES:
            await self.servicer.set(service, SERVING if self.serving else NOT_SERVING)
        self._task = asyncio.create_task(self._run(), name="database-health")

    def _writable(self) -> bool:
        """False once the writer halted, its reason logged at error the first time seen."""
        reason = self._ledger.halted
        if reason is None:
            return True
        if not self._halt_logged:
            self._halt_logged = True
            _log.error("ledger halted: health NOT_SERVING until restarted", reason=reason)
        return False

    async def stop(self) -> None:
        """NOT_SERVING for good (the server is shutting down), and no more probes."""
        await self.servicer.enter_graceful_shutdown()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._thread.shutdown(wait=False, cancel_futures=True)
        self._engine.dispose()

    def _probe(self) -> bool:
        try:
            with self._engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception as exc:  # any failure means "cannot serve"; the reason goes to the log
            _log.debug("database probe failed", error=type(exc).__name__)
            return False
        return True

    def _failing(self) -> str | None:
        """Why the writer cannot commit: its last batch failed, or the last probe did."""
        return self._ledger.failing or self._probe_failed

    def _commit_probe(self) -> asyncio.Future[Committed[None]] | None:
        """A write probe through the writer while it fails, to see it commit again."""
        if self._failing() is None or self._ledger.halted is not None:
            return None
        try:
            return asyncio.wrap_future(self._ledger.probe())
        except LedgerError:  # closed: the server is stopping
            return None

    async def _run(self) -> None:
        probe: asyncio.Future[bool] | None = None
        commit: asyncio.Future[Committed[None]] | None = None
        while True:
            await asyncio.sleep(self._interval)
            # What the writer's last batch said counts before the probe that follows it, so
            # that a failure shows for an interval at least.
            failing = self._failing()
            if probe is None:  # a probe stuck on the network is awaited, never stacked up
                probe = asyncio.get_running_loop().run_in_executor(self._thread, self._probe)
            if commit is None:
                commit = self._commit_probe()
            pending: set[asyncio.Future[Any]] = {probe} if commit is None else {probe, commit}
            await asyncio.wait(pending, timeout=max(self._interval, 1.0))
            reachable = probe.done() and probe.result()
            if probe.done():
                probe = None
                self.probes += 1
            if commit is not None and commit.done():
                error = commit.exception()
                self._probe_failed = None if error is None else _reason(error)
                commit = None
            elif commit is not None:  # still waiting (for a lock held elsewhere, say)
                failing = failing or "a write probe is still waiting"
            await self._set(reachable, self._writable(), failing)

    async def _set(self, reachable: bool, writable: bool, failing: str | None) -> None:
        if not reachable:
            reason = "the database is unreachable"
        elif not writable:
            reason = "the ledger writer is halted"
        elif failing is not None:
            reason = f"the ledger writer cannot commit: {failing}"
        else:
            reason = ""
        if reason == self.reason:
            return
        self.reason, self.serving = reason, not reason
        if self.serving:
            _log.info("health SERVING: the database answers and the ledger commits")
        elif writable:  # the halt is logged at error once, by _writable
            _log.warning("health NOT_SERVING", reason=reason)
        for service in SERVICES:
            await self.servicer.set(service, SERVING if self.serving else NOT_SERVING)


def _reason(error: BaseException) -> str:
    """A failed probe's cause in one line (the driver's message; never parameters)."""
    cause = getattr(error, "orig", None) or error
    first = (str(cause).strip().splitlines() or [""])[0]
    return f"{type(cause).__name__}: {first}" if first else type(cause).__name__
