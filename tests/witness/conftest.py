"""Fixtures for the witness: the development PKI with its two witnesses, a real witness server
on 127.0.0.1:0 in a thread of its own, and an HTTPS client with a certificate of the PKI."""

from __future__ import annotations

import asyncio
import http.client
import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import ledger
from tests.conftest import ORIGIN
from witness import WitnessServer, create_dev_witnesses


@pytest.fixture
def dev(pki: Path) -> Path:
    """This test's development PKI, its ledger key and its two witnesses (keys, logs, state)."""
    create_dev_witnesses(pki)
    return pki


class Clock:
    """The witness's clock, set by the test (POSIX seconds)."""

    def __init__(self, now: int = 1_800_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


class WitnessThread:
    """A WitnessServer on its own event loop in a thread, as `sinergi witness serve` runs it.
    Stopped and started again, it listens on the same port with the state of its directory: a
    witness that was down for a while."""

    def __init__(self, directory: Path, clock: Callable[[], int] | None = None) -> None:
        self.directory = directory
        self.clock = clock or (lambda: int(time.time()))
        self.port = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    def start(self) -> int:
        ready = threading.Event()
        failed: list[BaseException] = []
        self.server = WitnessServer(self.directory, f"127.0.0.1:{self.port}", clock=self.clock)
        server, loop = self.server, asyncio.new_event_loop()

        async def main() -> None:
            self._stop = asyncio.Event()
            try:
                self.port = await server.start()
            except BaseException as exc:  # reported to the test's thread
                failed.append(exc)
                ready.set()
                await server.stop()
                return
            ready.set()
            await self._stop.wait()
            await server.stop()

        self._loop = loop
        self._thread = threading.Thread(target=loop.run_until_complete, args=(main(),))
        self._thread.start()
        assert ready.wait(30), "the witness did not start within 30 s"
        if failed:
            raise failed[0]
        return self.port

    def stop(self) -> None:
        if self._thread is None or self._loop is None or self._stop is None:
            return
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        assert not self._thread.is_alive()
        self._loop.close()
        self._thread = None


@dataclass
class Reply:
    status: int
    content_type: str
    body: bytes


class Client:
    """HTTPS with mutual TLS to a witness, as ``identity`` (a directory of the PKI), or with no
    certificate at all."""

    def __init__(self, pki: Path, port: int, identity: str | None = "server") -> None:
        self.context = ssl.create_default_context(cafile=pki / "ca.crt")
        if identity is not None:
            self.context.load_cert_chain(pki / identity / "tls.crt", pki / identity / "tls.key")
        self.port = port

    def request(self, method: str, path: str, body: bytes | None = None) -> Reply:
        connection = http.client.HTTPSConnection(
            "127.0.0.1", self.port, context=self.context, timeout=30
        )
        try:
            connection.request(method, path, body=body)
            response = connection.getresponse()
            return Reply(response.status, response.getheader("Content-Type", ""), response.read())
        finally:
            connection.close()

    def add(self, request: ledger.AddCheckpoint) -> Reply:
        return self.request("POST", "/add-checkpoint", request.encode())

    def checkpoint(self, origin: str) -> Reply:
        return self.request("GET", f"/{ledger.origin_hash(origin)}/checkpoint")

    def status(self) -> dict[str, object]:
        reply = self.request("GET", "/status")
        assert reply.status == 200, reply
        assert reply.content_type.startswith("application/json")
        return dict(json.loads(reply.body))

    def metrics(self) -> str:
        reply = self.request("GET", "/metrics")
        assert reply.status == 200, reply
        return reply.body.decode()


@dataclass
class Running:
    directory: Path
    port: int
    thread: WitnessThread
    clock: Clock

    @property
    def vkey(self) -> str:
        return self.thread.server.vkey


@pytest.fixture
def start_witness(dev: Path) -> Iterator[Callable[..., Running]]:
    threads: list[WitnessThread] = []

    def start(name: str = "witness-police", clock: Clock | None = None) -> Running:
        clock = clock or Clock()
        thread = WitnessThread(dev / name, clock)
        port = thread.start()
        threads.append(thread)
        return Running(dev / name, port, thread, clock)

    yield start
    for thread in threads:
        thread.stop()


class Tree:
    """A real RFC 6962 tree, grown on demand, and its checkpoints signed by the dev ledger key."""

    def __init__(self, signer: ledger.Signer, origin: str = ORIGIN, salt: bytes = b"") -> None:
        self.signer, self.origin, self.salt = signer, origin, salt
        self.nodes: dict[tuple[int, int], bytes] = {}
        self.frontier = ledger.Frontier()

    def grow(self, size: int) -> None:
        while self.frontier.size < size:
            leaf = ledger.leaf_hash(self.salt + b"entry %d" % self.frontier.size)
            for level, index, h in self.frontier.append(leaf):
                self.nodes[level, index] = h

    def node(self, level: int, index: int) -> bytes:
        return self.nodes[level, index]

    def checkpoint(self, size: int) -> ledger.Checkpoint:
        self.grow(size)
        return ledger.Checkpoint(self.origin, size, ledger.root_at(size, self.node))

    def note(self, size: int, signer: ledger.Signer | None = None) -> bytes:
        return ledger.sign_checkpoint(self.checkpoint(size), [signer or self.signer])

    def request(self, old: int, size: int) -> ledger.AddCheckpoint:
        self.grow(size)
        proof = tuple(ledger.consistency_proof(old, size, self.node)) if old else ()
        return ledger.AddCheckpoint(old, proof, self.note(size))
