"""Assembling and running the exchange: TLS, ledger writer, guard, services.

The server is grpc.aio: every open subscription is a coroutine, not a worker thread, so long-lived
streams from many offices do not starve unary calls (shared/reference/grpc-python.md, "Streams and
threads"). Database work runs in threads; ledger appends go through the one group-commit writer.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import structlog
from sqlalchemy import inspect

import ledger
from certs import load_identity
from exchange import _store
from exchange._audit import AuditLedgerService
from exchange._errors import ConfigError
from exchange._policy import DEFAULT_POLICY, Policy
from exchange._rpc import Guard
from exchange._service import ExchangeService
from exchange._subscriptions import Hub
from ledger import Action, Actor, EntryDraft, LedgerWriter
from sinergi.v1 import exchange_pb2_grpc, ledger_pb2_grpc

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
    options: tuple[tuple[str, int], ...] = field(default=())

    @property
    def ledger_origin(self) -> str:
        return self.origin or f"{self.trust_domain}/ledger"


def initialise_database(url: str) -> None:
    """Create every table (and the ledger's append-only triggers) if absent."""
    engine = ledger.create_engine(url)
    try:
        ledger.create_schema(engine)
        _store.create_schema(engine)
    finally:
        engine.dispose()


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
        self.engine = ledger.create_engine(config.database)
        tables = set(inspect(self.engine).get_table_names())
        missing = {"ledger_entries", "alerts"} - tables
        if missing:
            self.engine.dispose()
            raise ConfigError(
                f"database {self.engine.url.render_as_string(hide_password=True)} is not "
                "initialised: run `sinergi db init` first"
            )
        self.ledger = LedgerWriter(
            self.engine, self._signers, config.ledger_origin, max_batch=config.max_batch
        )
        self._server: grpc.aio.Server | None = None
        self.port = 0

    async def start(self) -> int:
        server_id = self._identity.spiffe_id
        actor = Actor(
            str(server_id)
            if server_id
            else f"x509:{self._identity.certificate.subject.rfc4514_string()}",
            self._identity.fingerprint,
        )
        start = EntryDraft(
            Action.START,
            actor,
            digest=self.policy.digest,
            meta={"policy_digest": self.policy.digest, "origin": self.config.ledger_origin},
        )
        await asyncio.wrap_future(self.ledger.append(start))
        server = grpc.aio.server(
            interceptors=[Guard(self.ledger, self.config.trust_domain, self.config.stall_seconds)],
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                *self.config.options,
            ],
        )
        exchange_pb2_grpc.add_ExchangeServicer_to_server(
            ExchangeService(self.policy, self.ledger, self.engine, Hub()), server
        )
        ledger_pb2_grpc.add_AuditLedgerServicer_to_server(
            AuditLedgerService(self.policy, self.ledger, self.engine), server
        )
        credentials = grpc.ssl_server_credentials(
            [(self._identity.key_pem, self._identity.cert_pem)],
            root_certificates=self._identity.ca_pem,
            require_client_auth=True,
        )
        self.port = server.add_secure_port(self.config.listen, credentials)
        if self.port == 0:
            raise ConfigError(f"cannot listen on {self.config.listen}")
        await server.start()
        self._server = server
        _log.info(
            "serving",
            listen=self.config.listen,
            port=self.port,
            policy_digest=self.policy.digest,
            origin=self.config.ledger_origin,
        )
        return self.port

    async def wait(self) -> None:
        assert self._server is not None
        await self._server.wait_for_termination()

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(self.config.grace_seconds)
        await asyncio.to_thread(self.ledger.close)
        self.engine.dispose()
