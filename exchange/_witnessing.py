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
checkpoint (through the ledger writer, in its next commit, so they never contend with it for
the database), and the newest checkpoint with its quorum is what GetCheckpoint and receipts
carry. No publish ever waits for a witness.

A witness that answers 409 with a size larger than this ledger holds has cosigned entries the
ledger no longer has; one that answers 422 has cosigned another history at this origin. Either
way the writer halts (``RolledBack``), as it does for its own record of what it signed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import aiohttp
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from sqlalchemy import Connection, Engine

from certs import Identity
from ledger import (
    ADD_CHECKPOINT,
    AddCheckpoint,
    CosignatureVerifier,
    LedgerError,
    NoteError,
    WitnessPolicy,
    add_signatures,
    cosignatures,
)
from ledger.store import (
    BatchStats,
    LedgerWriter,
    RolledBack,
    cached_consistency_proof,
    cosigned_checkpoints,
    iter_entries,
    prove_consistency,
    store_cosignatures,
    witness_heads,
)

_log = structlog.get_logger("sinergi.witnessing")
_QUORUM_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0)
#: A witness's answer is a line or two (or a reason); anything longer is cut here.
_MAX_REPLY = 64 * 1024
#: Commits waiting for a quorum to cover them, for the commit-to-quorum histogram. While no
#: quorum comes (a witness down), the oldest are observed with their age so far and dropped.
_MAX_UNCOVERED = 1 << 16
#: Sizes whose cosignatures are kept while their quorum is incomplete: a round asks every
#: witness for one size, so only the last few can still gather one.
_KEEP_SIZES = 8

#: (size, signed note, monotonic time of its commit)
_Offer = tuple[int, bytes, float]


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
        # Named sinergi_ledger_*: sinergi_witness_* are the witness service's own metrics.
        self.requests = Counter(
            "sinergi_ledger_witness_requests",
            "add-checkpoint requests to witnesses, by witness and outcome.",
            ["witness", "outcome"],
            registry=registry,
        )
        self.cosigned = Gauge(
            "sinergi_ledger_witness_cosigned_size",
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
            "From a checkpoint's commit until a checkpoint with the quorum covers it.",
            buckets=_QUORUM_BUCKETS,
            registry=registry,
        )
        self.alarms = Counter(
            "sinergi_ledger_witness_alarms",
            "Witness answers that mean a ledger or a witness was rolled back or forked.",
            ["witness", "reason"],
            registry=registry,
        )


class Witnessing:
    """The witnesses of one ledger origin, fed with each committed checkpoint.

    :meth:`offer` is the writer's observer (any thread); everything else runs on the event
    loop :meth:`start` was awaited on."""

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
        # Offers arrive on the writer's thread: before start (the START entry's checkpoint)
        # they are kept here, after it they are handed to the loop.
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._early: _Offer | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._newest: _Offer | None = None
        self._target: _Offer | None = None  # what the current round asks for
        self._offered = asyncio.Event()  # a checkpoint newer than the target arrived
        self._round_over = asyncio.Event()
        self._asked: set[str] = set()  # witnesses this round still waits for
        self._have: dict[int, dict[str, bytes]] = {}  # size -> policy name -> cosignature line
        self._uncovered: deque[tuple[int, float]] = deque()
        #: the newest checkpoint with its quorum: (size, note with the quorum's cosignatures)
        self.cosigned: tuple[int, bytes] | None = None
        self._changed = asyncio.Condition()

    # -- feeding -------------------------------------------------------------------------

    def offer(self, stats: BatchStats) -> None:
        """The writer's observer (its thread): a new checkpoint was committed."""
        if not stats.entries:
            return
        offer = (stats.tree_size, stats.checkpoint, time.monotonic())
        with self._lock:
            loop = self._loop
            if loop is None:
                if self._early is None or offer[0] > self._early[0]:
                    self._early = offer
                return
        with contextlib.suppress(RuntimeError):  # the loop closed under us: we are stopping
            loop.call_soon_threadsafe(self._take, offer)

    def _take(self, offer: _Offer) -> None:
        if self._newest is not None and offer[0] <= self._newest[0]:
            return
        self._newest = offer
        self._uncovered.append((offer[0], offer[2]))
        if len(self._uncovered) > _MAX_UNCOVERED:
            _, since = self._uncovered.popleft()
            self._metrics.to_quorum.observe(time.monotonic() - since)
        self._offered.set()

    # -- life ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Load what was cosigned before, then start asking, from the newest checkpoint
        committed so far (offered before start: the START entry's)."""
        await asyncio.to_thread(self._load)
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cadata=self._identity.ca_pem.decode("ascii")
        )  # the deployment's CA alone: a witness is a member of the PKI
        context.minimum_version = ssl.TLSVersion.TLSv1_2
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
        with self._lock:
            self._loop = asyncio.get_running_loop()
            early, self._early = self._early, None
        if early is not None:
            self._take(early)

    async def stop(self) -> None:
        with self._lock:
            self._loop = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _load(self) -> None:
        """The largest size each witness cosigned for us, and the newest checkpoint with its
        quorum, from the stored cosignatures."""
        by_key = {witness_key(w.verifier): w for w in self._witnesses}
        with self._engine.connect() as connection:
            for key, size in witness_heads(connection).items():
                if key in by_key:
                    # Also the first guess at its size: right unless a replica asked it since
                    # (then its 409 says the size), and no 409 in its log at every restart.
                    by_key[key].high = by_key[key].size = size
                    self._metrics.cosigned.labels(by_key[key].name).set(size)
            found = self._stored_quorum(connection)
        if found is not None:
            self.cosigned = found
            self._metrics.quorum_size.set(found[0])

    def _stored_quorum(self, connection: Connection) -> tuple[int, bytes] | None:
        """The newest stored checkpoint whose stored cosignatures meet the quorum."""
        for size, note in cosigned_checkpoints(connection):
            try:
                if self.policy.satisfied(self.policy.cosigners(note)):
                    return size, note
            except NoteError as exc:  # a stored line that does not verify: not ours to trust
                _log.error("a stored cosignature does not verify", size=size, error=str(exc))
        return None

    # -- rounds --------------------------------------------------------------------------

    async def _rounds(self) -> None:
        while True:
            await self._offered.wait()
            self._offered.clear()
            newest = self._newest
            if newest is None or (self._target is not None and newest[0] <= self._target[0]):
                continue
            self._target = newest
            self._asked = {witness.name for witness in self._witnesses}
            self._round_over.clear()
            for witness in self._witnesses:
                witness.wake.set()
            began = time.monotonic()
            await self._round_over.wait()  # set by the quorum, or by every witness answering
            await asyncio.sleep(max(0.0, self._min_interval - (time.monotonic() - began)))

    async def _ask(self, witness: _Witness) -> None:
        while True:
            await witness.wake.wait()
            witness.wake.clear()
            target = self._target
            if target is None:
                continue
            size, note, _ = target
            try:
                line = await self._add_checkpoint(witness, size, note)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                failed = str(exc) or type(exc).__name__
            except LedgerError as exc:  # a proof from a ledger changed under us
                failed = str(exc)
            else:
                witness.failures = 0
                if line is not None:
                    await self._cosigned(witness, size, note, line)
                self._answered(witness)
                continue
            witness.failures += 1
            self._metrics.requests.labels(witness.name, "unreachable").inc()
            _log.warning("witness unreachable", witness=witness.name, error=failed)
            self._answered(witness)
            await asyncio.sleep(min(30.0, 0.25 * 2 ** min(witness.failures, 7)))
            witness.wake.set()  # try again, with whatever is newest then

    async def _add_checkpoint(self, witness: _Witness, size: int, note: bytes) -> bytes | None:
        """The witness's answer cosigning the checkpoint of ``size``, or None when it refused
        (logged, counted; the next round tries the newest checkpoint)."""
        assert self._session is not None
        for _ in range(3):  # old size unknown, then the size a 409 names, then give up
            old = witness.size or 0
            if old > size:
                await self._ahead(witness, old, size)
                return None
            proof = await self._proof(old, size) if 0 < old < size else []
            body = AddCheckpoint(old, tuple(proof), note).encode()
            async with self._session.post(f"{witness.url}/{ADD_CHECKPOINT}", data=body) as reply:
                text = await reply.content.read(_MAX_REPLY)
                status = reply.status
            self._metrics.requests.labels(witness.name, str(status)).inc()
            if status == 200:
                witness.size = size
                return text
            told = text.strip()
            if status == 409 and told.isdigit():
                if int(told) < witness.high:
                    self._alarm(
                        witness,
                        "witness-behind",
                        f"witness {witness.name} says its latest cosigned size is {int(told)}, "
                        f"but it cosigned {witness.high} before: it lost its state or was "
                        "rolled back",
                    )
                witness.size = int(told)
                continue
            self._refused(witness, status, size, text[:300].decode("utf-8", "replace").strip())
            return None
        return None

    async def _ahead(self, witness: _Witness, old: int, size: int) -> None:
        """The witness cosigned ``old`` entries, more than our newest checkpoint: another
        replica's checkpoint (the database has it; take its cosignatures from there), or
        entries this ledger lost (halt)."""
        holds, quorum = await asyncio.to_thread(self._stored, old)
        if holds:
            if quorum is not None:
                await self._quorum(*quorum)
            return
        origin = self._writer.origin
        self._alarm(
            witness,
            "ledger-behind",
            f"witness {witness.name} cosigned a tree of {old} entries of {origin}; this "
            f"ledger holds {size}",
        )
        self._writer.halt(
            RolledBack(
                f"witness {witness.name} has cosigned {old} entries of {origin}, more than "
                f"this ledger's {size}: entries were removed, or an older backup restored"
            )
        )

    def _stored(self, size: int) -> tuple[bool, tuple[int, bytes] | None]:
        """Whether the ledger holds entry ``size``, and the newest stored checkpoint with its
        quorum (another replica's witnessing stored its cosignatures)."""
        with self._engine.connect() as connection:
            holds = any(True for _ in iter_entries(connection, size, size))
            return holds, self._stored_quorum(connection)

    def _refused(self, witness: _Witness, status: int, size: int, reason: str) -> None:
        if status == 422:  # it cosigned another history at this origin: ours is not it
            self._alarm(witness, "refused-422", reason)
            self._writer.halt(
                RolledBack(
                    f"witness {witness.name} refused this ledger's checkpoint of {size} entries "
                    f"of {self._writer.origin} as inconsistent with one it cosigned ({reason}): "
                    "the history was rewritten"
                )
            )
            return
        if status == 400:  # a malformed request or a smaller tree: loud, but no proof of a fork
            self._alarm(witness, "refused-400", reason)
            return
        # 403, 404: the witness does not trust our key or origin (its `logs` file); 5xx
        level = _log.error if status in (403, 404) else _log.warning
        level("witness refused", witness=witness.name, status=status, size=size, reason=reason)

    async def _proof(self, old: int, new: int) -> list[bytes]:
        cached = cached_consistency_proof(self._writer.nodes, old, new)
        if cached is not None:
            return cached

        def read() -> list[bytes]:
            with self._engine.connect() as connection:
                return prove_consistency(connection, old, new, self._writer.nodes)

        return await asyncio.to_thread(read)

    async def _cosigned(self, witness: _Witness, size: int, note: bytes, answer: bytes) -> None:
        line = _verified_line(witness.verifier, note, answer)
        if line is None:
            self._alarm(witness, "bad-cosignature", "its answer holds no valid cosignature")
            return
        witness.high = max(witness.high, size)
        self._metrics.cosigned.labels(witness.name).set(witness.high)
        have = self._have.setdefault(size, {})
        have[witness.name] = line
        for old in sorted(self._have)[:-_KEEP_SIZES]:
            del self._have[old]
        if self.policy.satisfied(have):
            await self._quorum(size, add_signatures(note, have.values()))
        lines = [(witness_key(witness.verifier), line)]
        try:
            await asyncio.wrap_future(
                self._writer.submit(lambda c, _seq: (store_cosignatures(c, size, lines), ()))
            )
        except LedgerError as exc:  # kept in memory; a halted ledger stores nothing
            _log.warning("cosignature not stored", witness=witness.name, size=size, error=str(exc))

    async def _quorum(self, size: int, note: bytes) -> None:
        """``note``, of ``size`` entries, has its quorum: the newest cosigned, if it is newer."""
        if self.cosigned is not None and size <= self.cosigned[0]:
            return
        self.cosigned = (size, note)
        self._metrics.quorum_size.set(size)
        now = time.monotonic()
        while self._uncovered and self._uncovered[0][0] <= size:
            self._metrics.to_quorum.observe(now - self._uncovered.popleft()[1])
        for old in [s for s in self._have if s <= size]:
            del self._have[old]
        if self._target is not None and size >= self._target[0]:
            self._round_over.set()
        async with self._changed:
            self._changed.notify_all()

    def _answered(self, witness: _Witness) -> None:
        """End the round once every witness asked has answered (the quorum ends it too)."""
        self._asked.discard(witness.name)
        if not self._asked:
            self._round_over.set()

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

        def covers() -> bool:
            return self.cosigned is not None and self.cosigned[0] >= size

        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait_for(covers), timeout)
        return self.cosigned if covers() else None


def _verified_line(verifier: CosignatureVerifier, note: bytes, answer: bytes) -> bytes | None:
    """The line of ``answer`` that is ``verifier``'s valid cosignature of ``note``, with its
    newline; None if no line is (a witness may answer several, of other key types)."""
    for line in answer.split(b"\n"):
        if not line:
            continue
        try:
            if cosignatures(note + line + b"\n", [verifier]):
                return line + b"\n"
        except NoteError:
            continue
    return None
