"""Collecting witnesses' cosignatures on the ledger's checkpoints, off the publish path.

Every commit batch ends with a checkpoint the exchange signs; alone, it cannot stop whoever holds
the database or the key from rewriting history nobody has seen yet. So checkpoints go to the
witnesses the witness policy names (C2SP tlog-witness, ``add-checkpoint``), each of which
cosigns only a tree consistent with the last one it cosigned (docs/witness.md).

A *round* sends the newest checkpoint to every witness at once, and ends when the policy's
quorum has cosigned it (or every witness has answered); the next round takes the newest
checkpoint then. Rounds start at most every ``min_interval`` seconds, so witnesses see a few
checkpoints a second, whatever the publish rate, while a checkpoint still has its quorum well
within a second of its commit. Each witness has at most one request in flight; one that was
busy gets the newest checkpoint when it is free. Cosignatures are verified, stored beside their
checkpoint, and the newest checkpoint with its quorum is what GetCheckpoint and receipts carry.

A witness that answers 409 with a size larger than this ledger holds has cosigned entries the
ledger no longer has: the writer halts (``RolledBack``), as it does for its own record.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from dataclasses import dataclass, field

import aiohttp
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from sqlalchemy import Engine

from certs import Identity
from ledger import (
    ADD_CHECKPOINT,
    AddCheckpoint,
    CosignatureVerifier,
    NoteError,
    WitnessPolicy,
    cosignatures,
)
from ledger.store import (
    BatchStats,
    LedgerWriter,
    RolledBack,
    cached_consistency_proof,
    cosigned_checkpoints,
    prove_consistency,
    store_cosignatures,
    witness_heads,
)

_log = structlog.get_logger("sinergi.witnessing")
_QUORUM_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def witness_key(verifier: CosignatureVerifier) -> str:
    """How a witness key is named in the cosignature table: ``<name>+<hex key ID>``."""
    return f"{verifier.name}+{verifier.key_id.hex()}"


@dataclass
class _Witness:
    name: str  # the policy's name
    url: str
    verifier: CosignatureVerifier
    #: the size this witness cosigned last for our origin, as it told us (None: not asked yet)
    size: int | None = None
    #: the largest size it ever cosigned for us (stored cosignatures): it may never go lower
    high: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    failures: int = 0


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "sinergi_witness_requests",
            "add-checkpoint requests to witnesses, by witness and outcome.",
            ["witness", "outcome"],
            registry=registry,
        )
        self.cosigned = Gauge(
            "sinergi_witness_cosigned_size",
            "The largest tree each witness cosigned for this ledger.",
            ["witness"],
            registry=registry,
        )
        self.quorum_size = Gauge(
            "sinergi_ledger_cosigned_size",
            "The newest checkpoint with the witness policy's quorum.",
            registry=registry,
        )
        self.to_quorum = Histogram(
            "sinergi_ledger_commit_to_quorum_seconds",
            "From a checkpoint's commit to its quorum of cosignatures.",
            buckets=_QUORUM_BUCKETS,
            registry=registry,
        )
        self.alarms = Counter(
            "sinergi_witness_alarms",
            "Witness answers that mean a ledger or a witness was rolled back or forked.",
            ["witness", "reason"],
            registry=registry,
        )


class Witnessing:
    """The witnesses of one ledger origin, fed with each committed checkpoint."""

    def __init__(
        self,
        policy: WitnessPolicy,
        identity: Identity,
        engine: Engine,
        writer: LedgerWriter,
        registry: CollectorRegistry,
        *,
        min_interval: float = 0.1,
        timeout: float = 10.0,
    ) -> None:
        self.policy = policy
        self._identity = identity
        self._engine = engine
        self._writer = writer
        self._metrics = _Metrics(registry)
        self._min_interval = min_interval
        self._timeout = timeout
        self._witnesses = [
            _Witness(w.name, w.url.rstrip("/"), w.verifier)
            for w in policy.witnesses.values()
            if w.url
        ]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._newest: tuple[int, bytes, float] | None = None  # size, note, commit time
        self._target: tuple[int, bytes, float] | None = None  # what this round asks for
        self._round_done = asyncio.Event()
        self._asked: set[str] = set()  # witnesses this round still waits for
        self._have: dict[int, dict[str, bytes]] = {}  # size -> policy name -> cosignature line
        #: the newest checkpoint with its quorum: (size, note with the quorum's cosignatures)
        self.cosigned: tuple[int, bytes] | None = None
        self._changed = asyncio.Condition()

    # -- feeding -------------------------------------------------------------------------

    def offer(self, stats: BatchStats) -> None:
        """The writer's observer (its thread): a new checkpoint was committed."""
        loop = self._loop
        if loop is not None and stats.entries:
            loop.call_soon_threadsafe(self._offered, stats.tree_size, stats.checkpoint)

    def _offered(self, size: int, note: bytes) -> None:
        if self._newest is None or size > self._newest[0]:
            self._newest = (size, note, time.monotonic())
            self._round_done.set()  # the round loop looks again

    # -- life ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Load what was cosigned before, then start asking."""
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self._load)
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_verify_locations(cadata=self._identity.ca_pem.decode("ascii"))
        directory = self._identity.directory
        context.load_cert_chain(directory / "tls.crt", directory / "tls.key")
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context, limit_per_host=1),
            timeout=aiohttp.ClientTimeout(total=self._timeout),
        )
        self._tasks = [asyncio.create_task(self._rounds(), name="witness-rounds")]
        self._tasks += [
            asyncio.create_task(self._ask(witness), name=f"witness-{witness.name}")
            for witness in self._witnesses
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()

    def _load(self) -> None:
        """The largest size each witness cosigned for us, and the newest checkpoint with its
        quorum, from the stored cosignatures."""
        by_key = {witness_key(w.verifier): w for w in self._witnesses}
        with self._engine.connect() as connection:
            for key, size in witness_heads(connection).items():
                if key in by_key:
                    by_key[key].high = size
                    self._metrics.cosigned.labels(by_key[key].name).set(size)
            for found in cosigned_checkpoints(connection):
                if self.policy.satisfied(self.policy.cosigners(found[1])):
                    self.cosigned = found
                    self._metrics.quorum_size.set(found[0])
                    break

    # -- rounds --------------------------------------------------------------------------

    async def _rounds(self) -> None:
        while True:
            await self._round_done.wait()
            self._round_done.clear()
            newest = self._newest
            if newest is None or (self._target is not None and newest[0] <= self._target[0]):
                continue
            self._target = newest
            self._asked = {witness.name for witness in self._witnesses}
            for witness in self._witnesses:
                witness.wake.set()
            began = time.monotonic()
            await self._round_done.wait()  # set by quorum, or by every witness answering
            self._round_done.clear()
            await asyncio.sleep(max(0.0, self._min_interval - (time.monotonic() - began)))
            self._round_done.set()  # look for a newer checkpoint

    async def _ask(self, witness: _Witness) -> None:
        while True:
            await witness.wake.wait()
            witness.wake.clear()
            target = self._target
            if target is None:
                continue
            size, note, committed = target
            try:
                line = await self._add_checkpoint(witness, size, note)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                witness.failures += 1
                self._metrics.requests.labels(witness.name, "unreachable").inc()
                _log.warning("witness unreachable", witness=witness.name, error=repr(exc))
                self._answered(witness)
                await asyncio.sleep(min(30.0, 0.5 * 2 ** min(witness.failures, 6)))
                witness.wake.set()  # try again, with whatever is newest then
                continue
            if line is not None:
                witness.failures = 0
                await self._cosigned(witness, size, note, line, committed)
            self._answered(witness)

    async def _add_checkpoint(self, witness: _Witness, size: int, note: bytes) -> bytes | None:
        """The witness's cosignature line on the checkpoint of ``size``, or None when it refused
        (logged, counted; the next round tries the newest checkpoint)."""
        assert self._session is not None
        for _ in range(3):  # old size unknown, then the size a 409 names, then give up
            old = witness.size or 0
            if old > size:
                self._alarm(
                    witness,
                    "ledger-behind",
                    f"witness {witness.name} cosigned a tree of {old} entries for "
                    f"{self._writer.origin}; this ledger's newest checkpoint has {size}",
                )
                self._writer.halt(
                    RolledBack(
                        f"witness {witness.name} has cosigned {old} entries of "
                        f"{self._writer.origin}, more than this ledger's {size}: entries were "
                        "removed, or an older backup restored"
                    )
                )
                return None
            proof = await self._proof(old, size) if 0 < old < size else []
            body = AddCheckpoint(old, tuple(proof), note).encode()
            async with self._session.post(f"{witness.url}/{ADD_CHECKPOINT}", data=body) as reply:
                text = await reply.read()
                status = reply.status
            self._metrics.requests.labels(witness.name, str(status)).inc()
            if status == 200:
                witness.size = size
                return text
            if status == 409 and text.strip().isdigit():
                told = int(text.strip())
                if told < witness.high:
                    self._alarm(
                        witness,
                        "witness-behind",
                        f"witness {witness.name} says its latest cosigned size is {told}, but it "
                        f"cosigned {witness.high} before: it lost its state or was rolled back",
                    )
                witness.size = told
                continue
            level = _log.error if status in (400, 422) else _log.warning
            level(
                "witness refused a checkpoint",
                witness=witness.name,
                status=status,
                size=size,
                reason=text[:300].decode("utf-8", "replace"),
            )
            if status in (400, 422):
                self._alarm(witness, f"refused-{status}", text[:300].decode("utf-8", "replace"))
            return None
        return None

    async def _proof(self, old: int, new: int) -> list[bytes]:
        cached = cached_consistency_proof(self._writer.nodes, old, new)
        if cached is not None:
            return cached

        def read() -> list[bytes]:
            with self._engine.connect() as connection:
                return prove_consistency(connection, old, new, self._writer.nodes)

        return await asyncio.to_thread(read)

    async def _cosigned(
        self, witness: _Witness, size: int, note: bytes, line: bytes, committed: float
    ) -> None:
        try:
            found = cosignatures(note + line, [witness.verifier])
        except NoteError as exc:
            found = []
            _log.error("witness cosignature does not verify", witness=witness.name, error=str(exc))
        if not found:
            self._alarm(witness, "bad-cosignature", "its answer holds no valid cosignature")
            return
        lines = [ln + b"\n" for ln in line.split(b"\n") if ln]
        key = witness_key(witness.verifier)
        own = [ln for ln in lines if ln.startswith(f"\u2014 {witness.verifier.name} ".encode())]
        await asyncio.to_thread(self._store, size, [(key, own[0] if own else lines[0])])
        witness.high = max(witness.high, size)
        self._metrics.cosigned.labels(witness.name).set(witness.high)
        have = self._have.setdefault(size, {})
        have[witness.name] = own[0] if own else lines[0]
        if self.policy.satisfied(have) and (self.cosigned is None or size > self.cosigned[0]):
            self.cosigned = (size, note + b"".join(have.values()))
            self._metrics.quorum_size.set(size)
            self._metrics.to_quorum.observe(time.monotonic() - committed)
            for old in [s for s in self._have if s < size]:
                del self._have[old]
            async with self._changed:
                self._changed.notify_all()

    def _store(self, size: int, lines: list[tuple[str, bytes]]) -> None:
        with self._engine.begin() as connection:
            store_cosignatures(connection, size, lines)

    def _answered(self, witness: _Witness) -> None:
        """End the round once every witness asked has answered, or the quorum is there."""
        self._asked.discard(witness.name)
        target = self._target
        quorum = target is not None and self.cosigned is not None and self.cosigned[0] >= target[0]
        if not self._asked or quorum:
            self._round_done.set()

    def _alarm(self, witness: _Witness, reason: str, message: str) -> None:
        self._metrics.alarms.labels(witness.name, reason).inc()
        _log.error("witness alarm", witness=witness.name, reason=reason, detail=message)

    # -- readers -------------------------------------------------------------------------

    def newest_cosigned(self) -> tuple[int, bytes] | None:
        """The newest checkpoint with its quorum (size, cosigned note), or None yet."""
        return self.cosigned

    async def wait_cosigned(self, size: int, timeout: float) -> tuple[int, bytes] | None:
        """The newest cosigned checkpoint once it covers ``size`` entries, or None after
        ``timeout`` seconds (for tests and benchmarks measuring commit-to-quorum)."""
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._changed.wait_for(
                        lambda: self.cosigned is not None and self.cosigned[0] >= size
                    ),
                    timeout,
                )
        return self.cosigned if self.cosigned and self.cosigned[0] >= size else None
