"""The standard gRPC health service (grpc.health.v1), driven by a database probe.

An exchange that cannot reach its database can neither commit nor deliver: it answers NOT_SERVING
so that a load balancer or an agency's client sends traffic to a replica that can, and SERVING
again as soon as the database answers. The probe is a cheap query run in a thread every
``interval`` seconds, so the event loop never waits on the network; a probe still running after
the interval counts as a failure.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer
from sqlalchemy import Engine, text

SERVICES = ("", "sinergi.v1.Exchange", "sinergi.v1.AuditLedger")
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
_log = structlog.get_logger("sinergi.health")


class DatabaseHealth:
    def __init__(self, engine: Engine, interval: float) -> None:
        self.servicer = HealthServicer()
        self._engine = engine
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self.serving = True

    async def start(self) -> None:
        for service in SERVICES:
            await self.servicer.set(service, SERVING)
        self._task = asyncio.create_task(self._run(), name="database-health")

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
            healthy = bool(done) and probe.result()
            if done:
                probe = None
            await self._set(healthy)

    async def _set(self, healthy: bool) -> None:
        if healthy == self.serving:
            return
        self.serving = healthy
        if healthy:
            _log.info("database reachable again: health SERVING")
        else:
            _log.warning("database unreachable: health NOT_SERVING")
        for service in SERVICES:
            await self.servicer.set(service, SERVING if healthy else NOT_SERVING)
