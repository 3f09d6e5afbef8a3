"""Fixtures for CLI tests: the development PKI laid out as `make run` leaves it, and a real
`sinergi serve` process on 127.0.0.1:0."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

SINERGI = [sys.executable, "-m", "clients"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SINERGI, *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )


def last_json(result: subprocess.CompletedProcess[str]) -> dict[str, object]:
    lines = result.stdout.strip().splitlines()
    assert lines, result.stderr
    return dict(json.loads(lines[-1]))


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A fresh directory laid out as `make run` leaves the repository: certs/dev and var/."""
    result = run("pki", "dev", "--dir", str(tmp_path / "certs" / "dev"), "--json")
    assert result.returncode == 0, result.stderr
    assert last_json(result)["created"] is True
    again = run("pki", "dev", "--dir", str(tmp_path / "certs" / "dev"), "--json")
    assert last_json(again)["created"] is False  # idempotent: make run may call it every time
    # Most tests run an exchange without witnesses, whose clients must need no cosignature; the
    # tests of witnessing put a policy back.
    (tmp_path / "certs" / "dev" / "witness-policy").unlink()
    return tmp_path


@pytest.fixture
def served(workdir: Path) -> Iterator[tuple[str, Path, str]]:
    db = f"sqlite:///{workdir / 'var' / 'sinergi.db'}"
    (workdir / "var").mkdir()
    assert run("db", "init", "--db", db).returncode == 0
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
