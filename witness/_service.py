"""The witness's HTTP API (C2SP tlog-witness) on aiohttp, and its metrics.

``POST /add-checkpoint`` cosigns; ``GET /<origin hash>/checkpoint`` serves the latest cosigned
checkpoint (Monitor Retrieval Mechanism); ``GET /status`` and ``GET /metrics`` are for the
operator. Every refusal names its reason in a text body, but a 409, whose body the protocol
fixes: the witness's size.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import structlog
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)

from ledger import ADD_CHECKPOINT, SIZE_CONTENT_TYPE, AddCheckpoint, WitnessRefusal
from witness._setup import WitnessSetup
from witness._state import State

T = TypeVar("T")
#: An add-checkpoint body: an old size line, at most 63 proof lines and a checkpoint with at
#: most 100 signatures (signed-note) fit easily; anything larger is refused (413) unread.
MAX_BODY = 64 * 1024
_TEXT = "text/plain"
_ORIGIN_HASH = re.compile(r"[0-9a-f]{64}")
_log = structlog.get_logger("witness")


class Metrics:
    """Prometheus metrics in a registry of their own (one per server, so tests run several)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "sinergi_witness_requests",
            "HTTP requests by endpoint and status.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.refusals = Counter(
            "sinergi_witness_refusals",
            "Refused checkpoints that the log's key signed (the alarm): rollback, fork, conflict.",
            ["origin", "status"],
            registry=self.registry,
        )
        self.size = Gauge(
            "sinergi_witness_checkpoint_size",
            "Size of the latest cosigned checkpoint, by origin.",
            ["origin"],
            registry=self.registry,
        )
        self.cosigned_at = Gauge(
            "sinergi_witness_cosigned_timestamp_seconds",
            "Time of the latest cosignature, by origin (POSIX seconds).",
            ["origin"],
            registry=self.registry,
        )


def _submitter(request: web.Request) -> str:
    """Who called, from the verified client certificate: its URI SAN (SPIFFE ID), else its
    subject. The checkpoint's signature is the authorization (tlog-witness); this is for logs."""
    transport = request.transport
    cert: Any = transport.get_extra_info("peercert") if transport is not None else None
    if not cert:
        return "unknown"
    uris = [value for kind, value in cert.get("subjectAltName", ()) if kind == "URI"]
    if uris:
        return ",".join(uris)
    names = [f"{key}={value}" for rdn in cert.get("subject", ()) for key, value in rdn]
    return ",".join(names) or "unknown"


class Service:
    """The handlers. State calls run on one worker thread, one at a time: SQLite's fsync never
    blocks the event loop, and the server's own requests never contend for the write lock."""

    def __init__(
        self, setup: WitnessSetup, state: State, metrics: Metrics, clock: Callable[[], int]
    ) -> None:
        self.setup = setup
        self.state = state
        self.metrics = metrics
        self.clock = clock
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="witness-state")
        for log in state.logs():
            metrics.size.labels(log.origin).set(log.size)
            metrics.cosigned_at.labels(log.origin).set(log.cosigned_at)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._count])
        app.router.add_post(f"/{ADD_CHECKPOINT}", self.add_checkpoint, name=ADD_CHECKPOINT)
        app.router.add_get("/status", self.status, name="status")
        app.router.add_get("/metrics", self.metrics_text, name="metrics")
        app.router.add_get("/{origin_hash}/checkpoint", self.checkpoint, name="checkpoint")
        return app

    async def _run(self, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, call)

    @web.middleware
    async def _count(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        route = request.match_info.route.name or "other"
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            self.metrics.requests.labels(route, str(exc.status)).inc()
            raise
        self.metrics.requests.labels(route, str(response.status)).inc()
        return response

    async def add_checkpoint(self, request: web.Request) -> web.Response:
        """tlog-witness, add-checkpoint: 200 with the cosignature line, or 400, 403, 404, 409
        (with the latest size, text/x.tlog.size), 422."""
        body = await request.read()
        submitter = _submitter(request)
        try:
            parsed = AddCheckpoint.parse(body)
            origin = parsed.origin()
            keys = self.setup.logs.for_origin(origin)
            if not keys:
                raise WitnessRefusal(404, f"unknown origin {origin!r}")
        except WitnessRefusal as refusal:
            _log.warning(
                "request refused", status=refusal.status, reason=str(refusal), submitter=submitter
            )
            return _refusal(refusal)
        cosigner, now = self.setup.cosigner, self.clock()
        try:
            done = await self._run(
                lambda: self.state.add_checkpoint(
                    origin,
                    parsed,
                    keys=keys,
                    cosigner=cosigner,
                    now=now,
                    submitter=submitter,
                    body=body,
                )
            )
        except WitnessRefusal as refusal:
            if refusal.status == 403:
                _log.warning(
                    "request refused",
                    origin=origin,
                    status=403,
                    reason=str(refusal),
                    submitter=submitter,
                )
            else:
                # Signed by the log and still refused: the log contradicts what this witness
                # saw (or raced another submitter). The state recorded it; the alarm is here.
                self.metrics.refusals.labels(origin, str(refusal.status)).inc()
                _log.error(
                    "checkpoint refused",
                    origin=origin,
                    status=refusal.status,
                    reason=str(refusal),
                    old_size=parsed.old_size,
                    latest_size=refusal.size,
                    submitter=submitter,
                )
            return _refusal(refusal)
        self.metrics.size.labels(origin).set(done.checkpoint.size)
        self.metrics.cosigned_at.labels(origin).set(done.timestamp)
        _log.info(
            "checkpoint cosigned",
            origin=origin,
            old_size=done.old_size,
            size=done.checkpoint.size,
            cosigned_at=done.timestamp,
            submitter=submitter,
        )
        return web.Response(body=done.lines, content_type=_TEXT, charset="utf-8")

    async def checkpoint(self, request: web.Request) -> web.Response:
        """tlog-witness, Monitor Retrieval Mechanism: the note as submitted and this witness's
        cosignature; 404 if it never cosigned for that origin."""
        hashed = request.match_info["origin_hash"]
        note = (
            await self._run(lambda: self.state.checkpoint(hashed))
            if _ORIGIN_HASH.fullmatch(hashed)
            else None
        )
        if note is None:
            return web.Response(status=404, text="no checkpoint cosigned for this origin\n")
        return web.Response(body=note, content_type=_TEXT, charset="utf-8")

    async def status(self, request: web.Request) -> web.Response:
        logs, (count, last) = await self._run(lambda: (self.state.logs(), self.state.refusals()))
        cosigner = self.setup.cosigner
        summary = {
            "name": cosigner.name,
            "vkey": cosigner.verifier_key(),
            "trusted_logs": self.setup.logs.vkeys(),
            "logs": [
                {
                    "origin": log.origin,
                    "size": log.size,
                    "root": log.root.hex(),
                    "cosigned_at": log.cosigned_at,
                }
                for log in logs
            ],
            "refusals": count,
            "last_refusal": None if last is None else last.to_json(),
        }
        return web.Response(
            text=json.dumps(summary, sort_keys=True) + "\n", content_type="application/json"
        )

    async def metrics_text(self, request: web.Request) -> web.Response:
        payload = generate_latest(self.metrics.registry)
        return web.Response(body=payload, headers={"Content-Type": CONTENT_TYPE_LATEST})

    def close(self) -> None:
        self.executor.shutdown(wait=True)
        self.state.close()


def _refusal(refusal: WitnessRefusal) -> web.Response:
    if refusal.status == 409 and refusal.size is not None:
        # tlog-witness: the latest cosigned size in decimal and a newline, text/x.tlog.size.
        body = b"%d\n" % refusal.size
        return web.Response(status=409, body=body, content_type=SIZE_CONTENT_TYPE)
    return web.Response(status=refusal.status, text=f"{refusal}\n", content_type=_TEXT)
