"""Assembling and running the exchange: TLS, ledger writer, guard, services.

The server is grpc.aio: every open subscription is a coroutine, not a worker thread, so long-lived
streams from many offices do not starve unary calls (docs/grpc-python.md, "Streams and
threads"). Database work runs in threads; ledger appends go through the one group-commit writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import grpc
import structlog
from grpc_health.v1 import health_pb2_grpc
from sqlalchemy import Connection, Engine, inspect
from sqlalchemy.exc import SQLAlchemyError

import ledger
import ledger.store
from certs import load_identity
from exchange import _entries
from exchange._audit import AuditLedgerService
from exchange._bodies import with_keyring
from exchange._database import check_revision, upgrade
from exchange._errors import ConfigError
from exchange._health import DatabaseHealth
from exchange._limits import RateLimiter
from exchange._metrics import Metrics
from exchange._policy import DEFAULT_POLICY, Policy
from exchange._reflection import enable_reflection
from exchange._rpc import Guard
from exchange._sealing import Keyring
from exchange._service import ExchangeService
from exchange._subscriptions import Hub, PostgresWakeups
from exchange._tls import ServerTls
from exchange._witnessing import Witnessing
from ledger import Actor, EntryDraft, WitnessPolicy
from ledger.store import (
    BatchStats,
    LedgerWriter,
    RolledBack,
    SignedHistory,
    Work,
    ledger_origin,
)
from sinergi.v1 import exchange_pb2_grpc, ledger_pb2_grpc

#: Services that carry no alert or ledger data: their refusals are logged, not ledger entries.
_UNRECORDED = ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection")

_log = structlog.get_logger("sinergi.server")
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
#: Beside the ledger key: what this exchange signed, per origin (ledger.store.SignedHistory).
SIGNED_HISTORY_FILE = "ledger.signed.json"


@dataclass(frozen=True)
class ServerConfig:
    """What a server needs; `sinergi serve` builds it from flags and the PKI directory."""

    identity: Path  # directory with the server's tls.crt, tls.key and the client CA as ca.crt
    ledger_key: Path  # PEM Ed25519 private key that signs checkpoints (never the TLS key)
    extra_ledger_keys: tuple[Path, ...] = ()  # also sign with these (key rotation)
    database: str = ledger.DEFAULT_DATABASE
    listen: str = "127.0.0.1:50051"
    policy: Path = DEFAULT_POLICY
    trust_domain: str = "sinergi.dev"
    # The name the ledger key signs with (its vkey's name); "<trust domain>/ledger" by default.
    # Each ledger's origin is chosen under it when the ledger is created (ledger.new_origin).
    ledger_key_name: str = ""
    origin: str = ""  # the former name of ledger_key_name, still accepted
    # C2SP tlog-policy file naming the witnesses that cosign checkpoints (docs/witness.md)
    witness_policy: Path | None = None
    max_batch: int = 256
    grace_seconds: float = 5.0
    stall_seconds: float = 30.0  # a stream consumer that reads nothing this long is cut off
    max_message_bytes: int = MAX_MESSAGE_BYTES
    health_interval_seconds: float = 2.0  # how often the health service probes the database
    reflection: bool = True  # gRPC server reflection (the API is public; turn off if unwanted)
    metrics_listen: str = ""  # Prometheus /metrics on plain HTTP, e.g. 127.0.0.1:9464; "" = off
    options: tuple[tuple[str, int], ...] = field(default=())
    crl: Path | None = None  # PEM CRL file(s) (`sinergi pki crl`), re-read when it changes
    crl_grace_seconds: float = 86400.0  # a CA's CRL more than this past nextUpdate: refused
    crl_state: Path | None = None  # highest CRL number per CA; None: <identity>/crl.state.json
    # Requests per second per principal (0 = no limit), and how many at once above that rate:
    # far above what an agency's gateway or an officer sends, far below the 500 to 760
    # publishes per second the whole exchange serves on 2 cores (docs/operations.md, "Limits").
    rate_limit: float = 20.0
    rate_burst: int = 100
    keepalive_seconds: float = 60.0  # ping idle connections, so dead peers free their streams
    max_connection_age_seconds: float = 0.0  # 0 = unlimited; else GOAWAY, then a 5-minute grace
    # Key-encryption keys for bodies at rest (exchange/_sealing.py); None: SINERGI_KEK if set,
    # else bodies are stored in plain (a warning at start).
    kek_file: Path | None = None
    # Start a new ledger on an empty database although this exchange signed another one: an
    # operator's decision (`sinergi serve --new-ledger`), never a default (docs/operations.md).
    new_ledger: bool = False

    @property
    def key_name(self) -> str:
        """The ledger key's name: the origin of ledgers from before per-ledger origins."""
        return self.ledger_key_name or self.origin or f"{self.trust_domain}/ledger"

    @property
    def signed_history(self) -> Path:
        """The exchange's record of what it signed, beside the ledger key, outside the
        database it guards (docs/operations.md)."""
        return self.ledger_key.parent / SIGNED_HISTORY_FILE


def initialise_database(url: str) -> None:
    """Create every table (and the ledger's append-only triggers), or migrate to the current
    schema: what `sinergi db init` and `db upgrade` do."""
    upgrade(url)


def open_database(url: str) -> Engine:
    """An engine on an initialised database, or a :class:`ConfigError` saying what is wrong."""
    engine = ledger.store.create_engine(url)
    shown = engine.url.render_as_string(hide_password=True)
    name = engine.url.database
    if engine.dialect.name == "sqlite" and name and not Path(name).exists():
        engine.dispose()  # connecting would create an empty file
        raise ConfigError(f"database {shown} does not exist: run `sinergi db init` first")
    try:
        tables = set(inspect(engine).get_table_names())
    except SQLAlchemyError as exc:
        engine.dispose()
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise ConfigError(f"database {shown} is unreachable: {reason}") from None
    if {"ledger_entries", "alerts"} - tables:
        engine.dispose()
        raise ConfigError(f"database {shown} is not initialised: run `sinergi db init` first")
    try:
        check_revision(engine)
    except ConfigError:
        engine.dispose()
        raise
    return engine


def check_config(config: ServerConfig) -> dict[str, object]:
    """Everything `serve` needs, checked without serving: policy, PKI files, keys, database.
    Returns a summary; raises ConfigError, CertsError or LedgerError with the precise problem."""
    if config.listen.rpartition(":")[0] == "" or not config.listen.rpartition(":")[2].isdigit():
        raise ConfigError(f"listen {config.listen!r} is not host:port")
    if config.metrics_listen and not config.metrics_listen.rpartition(":")[2].isdigit():
        raise ConfigError(f"metrics_listen {config.metrics_listen!r} is not host:port")
    try:
        policy = Policy.load(config.policy)
    except OSError as exc:
        raise ConfigError(f"policy {config.policy}: cannot read: {exc.strerror}") from None
    identity = load_identity(config.identity)
    tls = ServerTls(  # the CA bundle, and every CA's CRL current; the CRL state file unwritten
        config.identity,
        config.trust_domain,
        crl=config.crl,
        crl_grace_seconds=config.crl_grace_seconds,
        crl_state=config.crl_state,
        check_only=True,
    )
    crls = tls.crl_summary()
    signers = [
        ledger.load_signer(path, config.key_name)
        for path in (config.ledger_key, *config.extra_ledger_keys)
    ]
    witnesses = None
    if config.witness_policy is not None:
        named = load_witness_policy(config.witness_policy, signers)
        witnesses = {
            "policy": str(config.witness_policy),
            "quorum": named.describe(),
            "witnesses": sorted(w.name for w in named.witnesses.values() if w.url),
        }
    keys = Keyring.configured(config.kek_file)
    engine = open_database(config.database)
    try:
        with engine.connect() as connection:
            size = ledger.store.entry_count(connection)
            origin = stored_origin(connection, config.key_name)
    finally:
        engine.dispose()
    return {
        "origin": origin,
        "witnesses": witnesses,
        "listen": config.listen,
        "database": engine.url.render_as_string(hide_password=True),
        "policy_digest": policy.digest,
        "agencies": len(policy.agencies),
        "certificate_expires": identity.certificate.not_valid_after_utc.isoformat(),
        "ledger_entries": size,
        "metrics_listen": config.metrics_listen,
        "reflection": config.reflection,
        "encryption_at_rest": keys.current_id if keys else None,
        "crl_next_updates": crls or None,
    }


def load_witness_policy(path: Path, signers: list[ledger.Signer]) -> WitnessPolicy:
    """The witness policy at ``path``, checked: it parses (PolicyError names the line), the
    witnesses its quorum needs can be asked (they have URLs), and its log keys, if it lists
    any, include this exchange's (else the witnesses would refuse every checkpoint)."""
    policy = WitnessPolicy.load(path)
    asked = [w.name for w in policy.witnesses.values() if w.url]
    if not policy.satisfied(asked):
        raise ConfigError(
            f"witness policy {path}: its quorum ({policy.describe()}) needs a witness without "
            "a URL, which the exchange cannot ask"
        )
    ours = {signer.verifier().verifier_key() for signer in signers}
    if policy.logs and not ours & {log.verifier_key() for log in policy.logs}:
        raise ConfigError(
            f"witness policy {path}: none of its log keys is this exchange's ledger key"
        )
    return policy


def _emptied(signed: dict[str, tuple[int, bytes]]) -> str:
    origin, (size, root) = max(signed.items(), key=lambda item: item[1][0])
    entries = "1 entry" if size == 1 else f"{size} entries"
    return (
        f"the database holds no ledger, but this exchange signed {entries} of the ledger "
        f"{origin} (root {root.hex()}): the ledger was deleted, or the database replaced "
        "(a new ledger on purpose: start once with --new-ledger)"
    )


def stored_origin(connection: Connection, key_name: str) -> str | None:
    """The origin of the stored ledger (None while it is empty), which must be one the ledger
    key signs for (its name, or under it)."""
    origin = ledger_origin(connection, key_name)
    if origin is not None and not ledger.under_key(origin, key_name):
        raise ConfigError(
            f"the ledger's origin {origin!r} (its first entry) is not under the ledger key's "
            f"name {key_name!r}: another ledger key, or another trust domain"
        )
    return origin


def _bind(server: grpc.aio.Server, listen: str, credentials: grpc.ServerCredentials) -> int:
    """The port ``server`` listens on at ``listen``, or a ConfigError saying why it cannot."""
    try:
        port = server.add_secure_port(listen, credentials)
    except RuntimeError:  # grpcio says only "Failed to bind"; the reason is in its own log
        port = 0
    if port == 0:
        raise ConfigError(f"cannot listen on {listen}: {_why_not_bound(listen)}")
    return port


def _why_not_bound(listen: str) -> str:
    """Why ``listen`` cannot be bound, found by binding it as grpc does (SO_REUSEADDR, so a
    closed connection's TIME_WAIT is no reason) and reading the system's answer."""
    host, _, port = listen.rpartition(":")
    try:
        found = socket.getaddrinfo(
            host.strip("[]") or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (OSError, ValueError) as exc:
        return f"not an address this host has ({exc})"
    for family, kind, protocol, _, address in found:
        with socket.socket(family, kind, protocol) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return "the address is in use (another exchange?)"
                return exc.strerror or str(exc)
    return "grpc could not bind it (its log says why)"


def _observers(observers: list[Callable[[BatchStats], None]]) -> Callable[[BatchStats], None]:
    """One writer observer calling each of ``observers`` (those added later too: the
    witnesses need the writer first), so that a failing one (logged) does not keep the batch
    from the others."""

    def observe(stats: BatchStats) -> None:
        for observer in observers:
            try:
                observer(stats)
            except Exception:
                _log.exception("ledger observer failed", observer=repr(observer))

    return observe


class ExchangeServer:
    """One exchange process. ``await start()``, then ``await wait()`` or ``await stop()``."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.policy = Policy.load(config.policy)
        self._identity = load_identity(config.identity)
        self._signers = [
            ledger.load_signer(path, config.key_name)
            for path in (config.ledger_key, *config.extra_ledger_keys)
        ]
        witness_policy = (
            load_witness_policy(config.witness_policy, self._signers)
            if config.witness_policy
            else None
        )
        self.keys = Keyring.configured(config.kek_file)
        self._database = open_database(config.database)
        self.engine = with_keyring(self._database, self.keys)
        try:
            with self.engine.connect() as connection:
                found = stored_origin(connection, config.key_name)
            self.history = SignedHistory(config.signed_history)
        except BaseException:
            self._database.dispose()
            raise
        #: the ledger's origin: read from its first entry, or chosen now for a new ledger (its
        #: START entry, the first, records it)
        self.origin = found or ledger.new_origin(config.key_name, datetime.now(UTC).date())
        self.new_ledger = found is None
        #: ledgers this exchange signed before, which a new ledger replaces: an emptied database
        #: looks like a new one, so a new ledger needs the operator's word (config.new_ledger)
        self.replaces = (
            {
                origin: head
                for origin, head in self.history.origins().items()
                if ledger.under_key(origin, config.key_name)
            }
            if self.new_ledger
            else {}
        )
        self.metrics = Metrics()
        self.metrics.certificate("server", self._identity.certificate.not_valid_after_utc)
        observers: list[Callable[[BatchStats], None]] = [self.metrics.ledger_batch]
        self.ledger = LedgerWriter(
            self.engine,
            self._signers,
            self.origin,
            max_batch=config.max_batch,
            observe=_observers(observers),
            history=self.history,
        )
        self.witnessing: Witnessing | None = None
        if witness_policy is not None:
            self.witnessing = Witnessing(
                witness_policy, self._identity, self.engine, self.ledger, self.metrics.registry
            )
            observers.append(self.witnessing.offer)
        self.metrics.ledger_halted(lambda: self.ledger.halted)
        self.hub = Hub(self.metrics.subscribers, self.metrics.delivered, self.metrics.page_read)
        self.metrics.idle_subscribers(self.hub.idle)
        self.wakeups: PostgresWakeups | None = None
        self.health: DatabaseHealth | None = None
        self.actor = Actor("", "")  # the exchange's own identity, known once it starts
        self._server: grpc.aio.Server | None = None
        self.port = 0
        self.metrics_port = 0

    async def start(self) -> int:
        """Listen, record START, then serve. A ledger that was rolled back or rewritten under
        the exchange (its START refused with RolledBack) is still served, halted: health
        NOT_SERVING, every write refused with the reason; anything else stops the start."""
        try:
            return await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> int:
        server_id = self._identity.spiffe_id
        actor = self.actor = Actor(
            str(server_id)
            if server_id
            else f"x509:{self._identity.certificate.subject.rfc4514_string()}",
            self._identity.fingerprint,
        )
        if self.replaces and not self.config.new_ledger:
            self.ledger.halt(RolledBack(_emptied(self.replaces)))
        elif self.replaces:
            _log.warning(
                "a new ledger replaces ledgers this exchange signed",
                origin=self.origin,
                replaces=sorted(self.replaces),
            )
        # The address first: an exchange that cannot listen (another one holds it) must stop
        # before its START entry says it served.
        server = self._server = self._grpc_server()
        self.port = _bind(server, self.config.listen, self.tls.credentials())
        start = _entries.start(actor, self.policy.digest, self.origin)
        with contextlib.suppress(RolledBack):  # the writer halted: reported below
            await asyncio.wrap_future(self.ledger.submit(self._start_work(start)))
        if self.ledger.halted is not None:
            _log.error(
                "the ledger was rolled back or rewritten: serving with every write refused "
                "until an operator acts (docs/operations.md)",
                origin=self.origin,
                reason=self.ledger.halted,
            )
        if self.config.metrics_listen:
            self.metrics_port = self.metrics.serve(self.config.metrics_listen)
        await server.start()
        assert self.health is not None
        await self.health.start()
        if self.engine.dialect.name == "postgresql":  # other replicas publish too
            url = self.engine.url.set(drivername="postgresql")
            self.wakeups = PostgresWakeups(
                url.render_as_string(hide_password=False), self.hub, asyncio.get_running_loop()
            )
            self.wakeups.start()
        if self.witnessing is not None:
            await self.witnessing.start()
        _log.info(
            "serving",
            listen=self.config.listen,
            port=self.port,
            policy_digest=self.policy.digest,
            origin=self.origin,
            new_ledger=self.new_ledger,
            witnesses=self.witnessing.policy.describe() if self.witnessing else None,
            halted=self.ledger.halted is not None,
            reflection=self.config.reflection,
            rate_limit=self.config.rate_limit or None,
            metrics_port=self.metrics_port or None,
            kek=self.keys.current_id if self.keys else None,
        )
        if self.keys is None:
            _log.warning("alert bodies are stored unencrypted: no --kek-file and no SINERGI_KEK")
        return self.port

    def _grpc_server(self) -> grpc.aio.Server:
        """The gRPC server with every service behind the guard, not yet listening."""
        # Mutual TLS; tls.crt, tls.key, ca.crt and the CRL are reloaded when they change, and
        # the guard checks every peer against this server's CAs and CRL.
        self.tls = ServerTls(
            self.config.identity,
            self.config.trust_domain,
            crl=self.config.crl,
            crl_grace_seconds=self.config.crl_grace_seconds,
            crl_state=self.config.crl_state,
            metrics=self.metrics,
        )
        guard = Guard(
            self.ledger,
            self.tls.trust,
            self.config.stall_seconds,
            metrics=self.metrics,
            unrecorded=_UNRECORDED,
            limiter=RateLimiter(self.config.rate_limit, self.config.rate_burst)
            if self.config.rate_limit > 0
            else None,
            policy=self.policy,
        )
        cosigned = self.witnessing.newest_cosigned if self.witnessing is not None else None
        server = grpc.aio.server(interceptors=[guard], options=self._channel_options())
        exchange_pb2_grpc.add_ExchangeServicer_to_server(
            ExchangeService(
                self.policy,
                self.ledger,
                self.engine,
                self.hub,
                cosigned,
                actor=self.actor,
                metrics=self.metrics,
            ),
            server,
        )
        ledger_pb2_grpc.add_AuditLedgerServicer_to_server(
            AuditLedgerService(self.policy, self.ledger, self.engine, cosigned), server
        )
        self.health = DatabaseHealth(self.engine, self.config.health_interval_seconds, self.ledger)
        health_pb2_grpc.add_HealthServicer_to_server(self.health.servicer, server)
        if self.config.reflection:
            enable_reflection(server)
        return server

    def _start_work(self, draft: EntryDraft) -> Work[None]:
        """The START entry. Two exchanges started at once on one empty ledger each chose an
        origin; the second to commit finds entry 1 naming the other's, and fails its start
        (started again, it reads the stored origin)."""
        key_name = self.config.key_name

        def work(connection: Connection, seq: int) -> tuple[None, list[EntryDraft]]:
            if seq > 1:
                stored = ledger_origin(connection, key_name)
                if stored != self.origin:
                    raise ConfigError(
                        f"another exchange created this ledger at the same moment, with origin "
                        f"{stored}; this one chose {self.origin}: start it again, and it takes "
                        "the stored origin"
                    )
            return None, [draft]

        return work

    def _channel_options(self) -> list[tuple[str, int]]:
        """Message size limits, keepalive (a vanished subscriber's stream is freed), and an
        optional maximum connection age (clients reconnect, and resume streams from their
        cursor, so connections can be moved across replicas)."""
        config = self.config
        keepalive = int(config.keepalive_seconds * 1000)
        options = [
            # grpc's default SO_REUSEPORT lets a second exchange bind the same port, and the
            # kernel then splits clients between two ledgers: one exchange per address.
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", config.max_message_bytes),
            ("grpc.max_send_message_length", config.max_message_bytes),
            ("grpc.keepalive_time_ms", keepalive),
            ("grpc.keepalive_timeout_ms", 20_000),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ("grpc.keepalive_permit_without_calls", 1),
        ]
        if config.max_connection_age_seconds > 0:
            options += [
                ("grpc.max_connection_age_ms", int(config.max_connection_age_seconds * 1000)),
                ("grpc.max_connection_age_grace_ms", 300_000),
            ]
        return [*options, *config.options]

    async def wait(self) -> None:
        assert self._server is not None
        await self._server.wait_for_termination()

    async def stop(self) -> None:
        """Graceful: health NOT_SERVING, subscriptions end with UNAVAILABLE (clients resume from
        their cursor elsewhere), no new calls, in-flight calls get ``grace_seconds`` to finish,
        then the ledger writer commits what is queued and stops, and the record of what it
        signed is written. Safe after a start that failed midway."""
        if self.health is not None:
            await self.health.stop()
        if self.witnessing is not None:
            await self.witnessing.stop()
        if self.wakeups is not None:
            await asyncio.to_thread(self.wakeups.stop)
        self.hub.close()
        if self._server is not None:
            await self._server.stop(self.config.grace_seconds)
        await asyncio.to_thread(self.ledger.close)
        await asyncio.to_thread(self.history.close)
        self.metrics.close()
        self._database.dispose()
