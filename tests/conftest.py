"""Shared fixtures: a real development PKI, real databases, a real mTLS server on 127.0.0.1:0."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy
import structlog
from sqlalchemy.engine import make_url

import ledger
import ledger.store
from certs import create_dev_pki
from exchange import ExchangeServer, ServerConfig, initialise_database

T = TypeVar("T")
PG_URL = os.environ.get("SINERGI_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
ORIGIN = "sinergi.dev/ledger"
# The suite reads the CLI's English, the default language: a developer's Indonesian locale
# (LANG=id_ID.UTF-8) must not change what it reads. tests/clients/test_i18n.py sets the
# language it tests in each command's environment (docs/i18n.md).
os.environ["SINERGI_LANG"] = "en"


def wait_for(condition: Callable[[], T], timeout: float = 10.0, what: str = "condition") -> T:
    """Poll ``condition`` until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def require_tool(*names: str, install: str) -> str:
    """The path of the first of ``names`` on PATH. Under CI (``CI`` set) a missing tool fails the
    test, since .ci/run installs every one; elsewhere it skips, saying how to install it."""
    for name in names:
        found = shutil.which(name)
        if found is not None:
            return found
    message = f"{' or '.join(names)} is not installed ({install})"
    if os.environ.get("CI"):
        pytest.fail(f"{message}: CI must not skip this test (.ci/run installs it)")
    pytest.skip(message)


@pytest.fixture(scope="session", autouse=True)
def _logs_through_logging() -> None:
    """The server's JSON log lines go to stdlib logging, where ``caplog`` sees them."""
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )


@pytest.fixture(scope="session")
def pki_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki") / "dev"
    create_dev_pki(directory)
    ledger.write_signing_key(directory, ORIGIN)
    return directory


@pytest.fixture
def pki(pki_template: Path, tmp_path: Path) -> Path:
    """A development PKI of this test's own: identities keep witness state, and each test's
    ledger is a new ledger under the same key, which a shared witness would rightly call a fork."""
    return Path(shutil.copytree(pki_template, tmp_path / "pki"))


@pytest.fixture(scope="session")
def verifier(pki_template: Path) -> ledger.Verifier:
    return ledger.Verifier.from_vkey((pki_template / "ledger.vkey").read_text().strip())


@pytest.fixture(scope="session")
def signer(pki_template: Path) -> ledger.Signer:
    return ledger.load_signer(pki_template / "ledger.key", ORIGIN)


def _postgres_database() -> Iterator[str]:
    admin = sqlalchemy.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    name = f"sinergi_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sqlalchemy.exc.OperationalError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}: {exc.orig}")
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty, initialised database of each kind Sinergi supports."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'sinergi.db'}"
        initialise_database(url)
        yield url
    else:
        for url in _postgres_database():
            initialise_database(url)
            yield url


@pytest.fixture
def pg_url() -> Iterator[str]:
    """An empty, initialised PostgreSQL database, for what only PostgreSQL has."""
    for url in _postgres_database():
        initialise_database(url)
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'sinergi.db'}"
    initialise_database(url)
    return url


def position_of(url: str, alert_id: str) -> int:
    """The stored position of ``alert_id`` (its subscription cursor), as the database says."""
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            query = sqlalchemy.text("SELECT position FROM alerts WHERE id = :id")
            return int(connection.execute(query, {"id": alert_id}).scalar_one())
    finally:
        engine.dispose()


def as_dba(url: str, *statements: str, restore: bool = False) -> None:
    """What a database administrator can do: drop the guards, rewrite rows, put the guards back."""
    engine = sqlalchemy.create_engine(url)
    postgres = engine.dialect.name == "postgresql"
    with engine.begin() as connection:
        for table in ledger.store.APPEND_ONLY_TABLES:
            for op in ("update", "delete", "truncate"):
                on = f" ON {table}" if postgres else ""
                connection.execute(sqlalchemy.text(f"DROP TRIGGER IF EXISTS {table}_no_{op}{on}"))
        for statement in statements:
            connection.execute(sqlalchemy.text(statement))
        if restore:
            for table in ledger.store.APPEND_ONLY_TABLES:
                ledger.store.install_triggers(connection, table)
    engine.dispose()


@dataclass
class RunningServer:
    address: str
    database: str
    pki: Path
    server: ExchangeServer
    server_thread: ServerThread

    def entries(self) -> list[ledger.Entry]:
        engine = ledger.store.create_engine(self.database)
        try:
            with engine.connect() as connection:
                return [
                    ledger.Entry.decode(body)
                    for _, _, body in ledger.store.iter_entries(connection)
                ]
        finally:
            engine.dispose()


class ServerThread:
    """The real server on its own event loop in a thread, listening on 127.0.0.1:0."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self.server: ExchangeServer | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> ExchangeServer:
        self._thread.start()
        if not self._ready.wait(30):
            raise AssertionError("server did not start within 30s")
        if self._error is not None:
            raise self._error
        assert self.server is not None
        return self.server

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        try:
            self.server = ExchangeServer(self.config)
            self._stop = asyncio.Event()
            await self.server.start()
        except BaseException as exc:  # reported to the test thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        await self._stop.wait()
        await self.server.stop()

    def stop(self) -> None:
        if self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


@pytest.fixture
def start_server(pki: Path) -> Iterator[Callable[..., RunningServer]]:
    threads: list[ServerThread] = []

    def start(database: str, **options: Any) -> RunningServer:
        config = ServerConfig(
            identity=pki / "server",
            ledger_key=pki / "ledger.key",
            database=database,
            listen="127.0.0.1:0",
            grace_seconds=0.5,
            **options,
        )
        thread = ServerThread(config)
        threads.append(thread)
        server = thread.start()
        return RunningServer(f"127.0.0.1:{server.port}", database, pki, server, thread)

    yield start
    for thread in threads:
        thread.stop()


@pytest.fixture
def server(start_server: Callable[[str], RunningServer], db_url: str) -> RunningServer:
    return start_server(db_url)
