"""Fixtures for CLI tests: the development PKI laid out as `make run` leaves it, and a real
`sinergi serve` process on 127.0.0.1:0."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy

from clients import ExchangeClient
from tests.conftest import RunningServer
from tests.witness.conftest import Clock, WitnessThread
from witness import DEV_WITNESS_PORTS, create_dev_witnesses

SINERGI = [sys.executable, "-m", "clients"]
QUORUM = "2 of (internal-affairs, police)"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SINERGI, *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )


def last_json(result: subprocess.CompletedProcess[str]) -> dict[str, object]:
    lines = result.stdout.strip().splitlines()
    assert lines, result.stderr
    return dict(json.loads(lines[-1]))


@pytest.fixture(scope="session")
def dev_pki_made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`sinergi pki dev`, run as `make run` runs it (twice: it must be idempotent), once per
    worker: each test gets a copy (:func:`workdir`), as the integration tests do, so the two
    CLI runs that make it are not paid by every test."""
    directory = tmp_path_factory.mktemp("made") / "dev"
    result = run("pki", "dev", "--dir", str(directory), "--json")
    assert result.returncode == 0, result.stderr
    assert last_json(result)["created"] is True
    again = run("pki", "dev", "--dir", str(directory), "--json")
    assert last_json(again)["created"] is False  # idempotent: make run may call it every time
    return directory


@pytest.fixture(scope="session")
def initialised_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database as `sinergi db init` leaves it, made once per worker and copied by
    :func:`served` (the CLI run and its migrations cost each test two seconds)."""
    path = tmp_path_factory.mktemp("db") / "sinergi.db"
    made = run("db", "init", "--db", f"sqlite:///{path}")
    assert made.returncode == 0, made.stderr
    return path


@pytest.fixture
def workdir(tmp_path: Path, dev_pki_made: Path) -> Path:
    """A fresh directory laid out as `make run` leaves the repository: certs/dev and var/."""
    shutil.copytree(dev_pki_made, tmp_path / "certs" / "dev")
    # Most tests run an exchange without witnesses, whose clients must need no cosignature; the
    # tests of witnessing put a policy back.
    (tmp_path / "certs" / "dev" / "witness-policy").unlink()
    return tmp_path


@pytest.fixture
def served(workdir: Path, initialised_db: Path) -> Iterator[tuple[str, Path, str]]:
    (workdir / "var").mkdir()
    shutil.copyfile(initialised_db, workdir / "var" / "sinergi.db")
    db = f"sqlite:///{workdir / 'var' / 'sinergi.db'}"
    pki = str(workdir / "certs" / "dev")
    serve = [*SINERGI, "serve", "--db", db, "--pki", pki, "--listen", "127.0.0.1:0", "--json"]
    process = subprocess.Popen(serve, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line, process.stderr.read() if process.stderr else ""
    address = json.loads(line)["listen"]
    try:
        yield address, workdir / "certs" / "dev", db
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0


@dataclass
class Exchange:
    server: RunningServer
    pki: Path
    policy: Path

    def client(self, who: str = "immigration") -> ExchangeClient:
        return ExchangeClient(self.pki / who, self.server.address, witness_policy=self.policy)


@pytest.fixture
def exchange(
    start_server: Callable[..., RunningServer], sqlite_url: str, pki: Path, tmp_path: Path
) -> Iterator[Exchange]:
    made = create_dev_witnesses(pki)
    threads = [WitnessThread(directory, Clock()) for directory in made.directories.values()]
    text = made.policy.read_text()
    for name, thread in zip(made.directories, threads, strict=True):
        port = thread.start()
        text = text.replace(f"127.0.0.1:{DEV_WITNESS_PORTS[name]}", f"127.0.0.1:{port}")
    policy = tmp_path / "witness-policy"
    policy.write_text(text)
    try:
        yield Exchange(start_server(sqlite_url, witness_policy=policy), pki, policy)
    finally:
        for thread in threads:
            thread.stop()


def withhold(database: str, alert_id: str, agency: str) -> None:
    """What an insider with the database does to keep an alert from ``agency``: delete its
    recipient row (docs/threat-model.md, "Database administrator")."""
    engine = sqlalchemy.create_engine(database)
    with engine.begin() as connection:
        connection.execute(
            sqlalchemy.text(
                "DELETE FROM alert_recipients WHERE agency = :agency AND alert_position = "
                "(SELECT position FROM alerts WHERE id = :id)"
            ),
            {"id": alert_id, "agency": agency},
        )
    engine.dispose()
