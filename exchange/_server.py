"""Assembling and running the exchange: TLS, ledger writer, guard, services.

The server is grpc.aio: every open subscription is a coroutine, not a worker thread, so long-lived
streams from many offices do not starve unary calls (docs/grpc-python.md, "Streams and
threads"). Database work runs in threads; ledger appends go through the one group-commit writer.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import structlog
from grpc_health.v1 import health_pb2_grpc
from sqlalchemy import Engine, inspect
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
from ledger import Actor
from ledger.store import LedgerWriter
from sinergi.v1 import exchange_pb2_grpc, ledger_pb2_grpc

#: Services that carry no alert or ledger data: their refusals are logged, not ledger entries.
_UNRECORDED = ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection")

_log = structlog.get_logger("sinergi.server")
MAX_MESSAGE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class ServerConfig:
    """What a server needs; `sinergi serve` builds it from flags and the PKI directory."""

    identity: Path  # directory with the server's tls.crt, tls.key and the client CA as ca.crt
    ledger_key: Path  # PEM Ed25519 private key that signs checkpoints (never the TLS key)
    extra_ledger_keys: tuple[Path, ...] = ()  # also sign with these (key rotation)
    database: str = "sqlite:///var/sinergi.db"
    listen: str = "127.0.0.1:50051"
    policy: Path = DEFAULT_POLICY
    trust_domain: str = "sinergi.dev"
    origin: str = ""  # checkpoint origin; defaults to "<trust domain>/ledger"
    max_batch: int = 256
    grace_seconds: float = 5.0
    stall_seconds: float = 30.0  # a stream consumer that reads nothing this long is cut off
    max_message_bytes: int = MAX_MESSAGE_BYTES
    health_interval_seconds: float = 2.0  # how often the health service probes the database
    reflection: bool = True  # gRPC server reflection (the API is public; turn off if unwanted)
    metrics_listen: str = ""  # Prometheus /metrics on plain HTTP, e.g. 127.0.0.1:9464; "" = off
    options: tuple[tuple[str, int], ...] = field(default=())
    crl: Path | None = None  # PEM CRL file(s) (`sinergi pki crl`), re-read when it changes
    rate_limit: float = 0.0  # requests per second per principal; 0 = no limit
    rate_burst: int = 100  # requests a principal may send at once above the rate
    keepalive_seconds: float = 60.0  # ping idle connections, so dead peers free their streams
    max_connection_age_seconds: float = 0.0  # 0 = unlimited; else GOAWAY, then a 5-minute grace
    # Key-encryption keys for bodies at rest (exchange/_sealing.py); None: SINERGI_KEK if set,
    # else bodies are stored in plain (a warning at start).
    kek_file: Path | None = None

    @property
    def ledger_origin(self) -> str:
        return self.origin or f"{self.trust_domain}/ledger"


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
    ServerTls(config.identity, config.trust_domain, crl=config.crl)  # CA bundle and CRL load
    for path in (config.ledger_key, *config.extra_ledger_keys):
        ledger.load_signer(path, config.ledger_origin)
    keys = Keyring.configured(config.kek_file)
    engine = open_database(config.database)
    try:
        with engine.connect() as connection:
            size = ledger.store.entry_count(connection)
    finally:
        engine.dispose()
    return {
        "listen": config.listen,
        "database": engine.url.render_as_string(hide_password=True),
        "policy_digest": policy.digest,
        "agencies": len(policy.agencies),
        "certificate_expires": identity.certificate.not_valid_after_utc.isoformat(),
        "ledger_entries": size,
        "metrics_listen": config.metrics_listen,
        "reflection": config.reflection,
        "encryption_at_rest": keys.current_id if keys else None,
    }


class ExchangeServer:
    """One exchange process. ``await start()``, then ``await wait()`` or ``await stop()``."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.policy = Policy.load(config.policy)
        self._identity = load_identity(config.identity)
        self._signers = [
            ledger.load_signer(path, config.ledger_origin)
            for path in (config.ledger_key, *config.extra_ledger_keys)
        ]
        self.keys = Keyring.configured(config.kek_file)
        self._database = open_database(config.database)
        self.engine = with_keyring(self._database, self.keys)
        self.metrics = Metrics()
        self.metrics.certificate("server", self._identity.certificate.not_valid_after_utc)
        self.ledger = LedgerWriter(
            self.engine,
            self._signers,
            config.ledger_origin,
            max_batch=config.max_batch,
            observe=self.metrics.ledger_batch,
        )
        self.hub = Hub(self.metrics.subscribers, self.metrics.delivered)
        self.wakeups: PostgresWakeups | None = None
        self.health: DatabaseHealth | None = None
        self._server: grpc.aio.Server | None = None
        self.port = 0
        self.metrics_port = 0

    async def start(self) -> int:
        server_id = self._identity.spiffe_id
        actor = Actor(
            str(server_id)
            if server_id
            else f"x509:{self._identity.certificate.subject.rfc4514_string()}",
            self._identity.fingerprint,
        )
        start = _entries.start(actor, self.policy.digest, self.config.ledger_origin)
        await asyncio.wrap_future(self.ledger.append(start))
        if self.config.metrics_listen:
            self.metrics_port = self.metrics.serve(self.config.metrics_listen)
        # Mutual TLS; tls.crt, tls.key, ca.crt and the CRL are reloaded when they change, and
        # the guard checks every peer against this server's CAs and CRL.
        self.tls = ServerTls(self.config.identity, self.config.trust_domain, crl=self.config.crl)
        guard = Guard(
            self.ledger,
            self.tls.trust,
            self.config.stall_seconds,
            metrics=self.metrics,
            unrecorded=_UNRECORDED,
            limiter=RateLimiter(self.config.rate_limit, self.config.rate_burst)
            if self.config.rate_limit > 0
            else None,
        )
        server = grpc.aio.server(interceptors=[guard], options=self._channel_options())
        exchange_pb2_grpc.add_ExchangeServicer_to_server(
            ExchangeService(self.policy, self.ledger, self.engine, self.hub), server
        )
        ledger_pb2_grpc.add_AuditLedgerServicer_to_server(
            AuditLedgerService(self.policy, self.ledger, self.engine), server
        )
        self.health = DatabaseHealth(self.engine, self.config.health_interval_seconds)
        health_pb2_grpc.add_HealthServicer_to_server(self.health.servicer, server)
        if self.config.reflection:
            enable_reflection(server)
        self.port = server.add_secure_port(self.config.listen, self.tls.credentials())
        if self.port == 0:
            raise ConfigError(f"cannot listen on {self.config.listen}")
        await server.start()
        await self.health.start()
        if self.engine.dialect.name == "postgresql":  # other replicas publish too
            url = self.engine.url.set(drivername="postgresql")
            self.wakeups = PostgresWakeups(
                url.render_as_string(hide_password=False), self.hub, asyncio.get_running_loop()
            )
            self.wakeups.start()
        self._server = server
        _log.info(
            "serving",
            listen=self.config.listen,
            port=self.port,
            policy_digest=self.policy.digest,
            origin=self.config.ledger_origin,
            reflection=self.config.reflection,
            metrics_port=self.metrics_port or None,
            kek=self.keys.current_id if self.keys else None,
        )
        if self.keys is None:
            _log.warning("alert bodies are stored unencrypted: no --kek-file and no SINERGI_KEK")
        return self.port

    def _channel_options(self) -> list[tuple[str, int]]:
        """Message size limits, keepalive (a vanished subscriber's stream is freed), and an
        optional maximum connection age (clients reconnect, and resume streams from their
        cursor, so connections can be moved across replicas)."""
        config = self.config
        keepalive = int(config.keepalive_seconds * 1000)
        options = [
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
        then the ledger writer commits what is queued and stops."""
        if self.health is not None:
            await self.health.stop()
        if self.wakeups is not None:
            await asyncio.to_thread(self.wakeups.stop)
        self.hub.close()
        if self._server is not None:
            await self._server.stop(self.config.grace_seconds)
        await asyncio.to_thread(self.ledger.close)
        self.metrics.close()
        self._database.dispose()
