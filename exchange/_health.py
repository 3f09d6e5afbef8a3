"""The standard gRPC health service (grpc.health.v1), driven by a database probe.

An exchange that cannot reach its database can neither commit nor deliver: it answers NOT_SERVING
so that a load balancer or an agency's client sends traffic to a replica that can, and SERVING
again as soon as the database answers. The probe is a cheap query run in a thread every
``interval`` seconds, so the event loop never waits on the network; a probe still running after
the interval counts as a failure.

A halted ledger writer (the ledger was rolled back or rewritten under it: it refuses to sign)
makes every service NOT_SERVING too, until a restart after the operator acted: a replica that
cannot record anything must not be sent traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog
from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer
from sqlalchemy import Engine, text

SERVICES = ("", "sinergi.v1.Exchange", "sinergi.v1.AuditLedger")
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
_log = structlog.get_logger("sinergi.health")


class DatabaseHealth:
    """``halted`` says why the ledger writer refuses every write, or None while it writes."""

    def __init__(
        self,
        engine: Engine,
        interval: float,
        halted: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.servicer = HealthServicer()
        self._engine = engine
        self._interval = interval
        self._halted = halted
        self._halt_logged = False
        self._task: asyncio.Task[None] | None = None
        self.serving = True

    async def start(self) -> None:
        self.serving = self._writable()
        for service in SERVICES:
            await self.servicer.set(service, SERVING if self.serving else NOT_SERVING)
        self._task = asyncio.create_task(self._run(), name="database-health")

    def _writable(self) -> bool:
        """False once the writer halted, its reason logged at error the first time seen."""
        reason = self._halted()
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

    def _probe(self) -> bool:
        try:
            with self._engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception as exc:  # any failure means "cannot serve"; the reason goes to the log
            _log.debug("database probe failed", error=type(exc).__name__)
            return False
        return True

    async def _run(self) -> None:
        probe: asyncio.Future[bool] | None = None
        while True:
            await asyncio.sleep(self._interval)
            if probe is None:  # a probe stuck on the network is awaited, never stacked up
                probe = asyncio.ensure_future(asyncio.to_thread(self._probe))
            done, _ = await asyncio.wait({probe}, timeout=max(self._interval, 1.0))
            reachable = bool(done) and probe.result()
            if done:
                probe = None
            await self._set(reachable, self._writable())

    async def _set(self, reachable: bool, writable: bool = True) -> None:
        healthy = reachable and writable
        if healthy == self.serving:
            return
        self.serving = healthy
        if healthy:
            _log.info("database reachable again: health SERVING")
        elif not reachable:
            _log.warning("database unreachable: health NOT_SERVING")
        for service in SERVICES:
            await self.servicer.set(service, SERVING if healthy else NOT_SERVING)
