"""`sinergi witness init` and `sinergi witness serve` as operators run them: subprocesses, JSON,
exit codes, SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
from pathlib import Path

import ledger
from tests.clients.conftest import SINERGI, last_json, run
from tests.witness.conftest import Client, Tree
from witness import STATE_FILE


def test_init_creates_a_witness_and_refuses_a_second_time(dev: Path, tmp_path: Path) -> None:
    directory = tmp_path / "ia-witness"
    args = ["witness", "init", "--dir", str(directory), "--name", "ia.example/witness"]
    made = run(*args, "--log", str(dev / "ledger.vkey"), "--json")
    assert made.returncode == 0, made.stderr
    result = last_json(made)
    assert result["ok"] is True
    assert result["key_created"] is True
    assert str(result["vkey"]).startswith("ia.example/witness+")
    assert (directory / "witness.vkey").read_text().strip() == result["vkey"]
    assert (dev / "ledger.vkey").read_text() in (directory / "logs").read_text()
    again = run(*args)
    assert again.returncode == 1
    assert again.stderr.startswith("sinergi: ")
    assert f"{directory / STATE_FILE} exists" in again.stderr
    usage = run("witness", "init", "--dir", str(directory))
    assert usage.returncode == 2


def test_serve_json_answers_and_stops_on_sigterm(dev: Path, signer: ledger.Signer) -> None:
    process = subprocess.Popen(
        [
            *SINERGI,
            "witness",
            "serve",
            "--dir",
            str(dev / "witness-police"),
            "--listen",
            "127.0.0.1:0",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line, process.stderr.read() if process.stderr else ""
        started = json.loads(line)
        assert started["ok"] is True
        assert started["listen"] == f"127.0.0.1:{started['port']}"
        assert started["name"] == "sinergi.dev/witness/police"
        reply = Client(dev, started["port"]).add(Tree(signer).request(0, 3))
        assert reply.status == 200
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    logged = [json.loads(line) for line in stderr.splitlines()]
    (cosigned,) = [entry for entry in logged if entry["event"] == "checkpoint cosigned"]
    assert (cosigned["level"], cosigned["size"]) == ("info", 3)
    assert cosigned["submitter"] == "commonName=sinergi-exchange"


def test_serve_refusals_exit_non_zero_with_one_line(dev: Path) -> None:
    police = dev / "witness-police"
    (police / STATE_FILE).rename(police / "moved.db")
    missing = run("witness", "serve", "--dir", str(police), "--listen", "127.0.0.1:0", "--json")
    assert missing.returncode == 1
    assert "is missing: a witness without its state" in missing.stderr
    assert last_json(missing)["ok"] is False
    (police / "moved.db").rename(police / STATE_FILE)
    bad = run("witness", "serve", "--dir", str(police), "--listen", "localhost")
    assert bad.returncode == 2
    assert bad.stderr.strip() == "sinergi: --listen 'localhost': want HOST:PORT"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = run("witness", "serve", "--dir", str(police), "--listen", f"127.0.0.1:{port}")
    assert busy.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in busy.stderr
