"""Fixtures of the integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from exchange import initialise_database
from tests.conftest import _postgres_database
from tests.integration.support import Witnesses, start_witnesses
from tests.integration.tcp_proxy import TcpProxy


@pytest.fixture
def proxied_postgres() -> Iterator[tuple[str, TcpProxy]]:
    """An initialised PostgreSQL database, reached through a proxy the test can cut."""
    for url in _postgres_database():
        initialise_database(url)
        parsed = make_url(url)
        proxy = TcpProxy(parsed.host or "127.0.0.1", parsed.port or 5432)
        proxy.open()
        try:
            yield parsed.set(port=proxy.port).render_as_string(hide_password=False), proxy
        finally:
            proxy.shutdown()


@pytest.fixture
def witnesses(pki: Path) -> Iterator[Witnesses]:
    """The two development witnesses of this test's PKI, listening on 127.0.0.1, and a policy
    (``witnesses.policy``) that needs both."""
    running = start_witnesses(pki)
    try:
        yield running
    finally:
        running.stop()
