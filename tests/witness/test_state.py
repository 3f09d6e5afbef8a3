"""The witness's state: it survives a restart, and losing it (or swapping it) is loud."""

from __future__ import annotations

import re
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

import ledger
from tests.conftest import ORIGIN
from tests.witness.conftest import Client, Clock, Running, Tree
from witness import (
    STATE_FILE,
    ConfigError,
    StateError,
    WitnessServer,
    create_state,
    init_witness,
)


def test_the_state_survives_a_restart(
    start_witness: Callable[..., Running], dev: Path, signer: ledger.Signer
) -> None:
    tree = Tree(signer)
    first = start_witness()
    client = Client(dev, first.port)
    cosigned = client.add(tree.request(0, 8))
    assert client.add(ledger.AddCheckpoint(8, (), Tree(signer, salt=b"x").note(8))).status == 422
    first.thread.stop()

    again = start_witness(clock=Clock(first.clock.now - 3600))  # and a clock set back
    client = Client(dev, again.port)
    assert client.checkpoint(ORIGIN).body == tree.note(8) + cosigned.body
    reply = client.add(tree.request(0, 9))
    assert (reply.status, reply.body) == (409, b"8\n")
    grown = client.add(tree.request(8, 9))
    assert grown.status == 200
    verifier = ledger.CosignatureVerifier.from_vkey(again.vkey)
    (cosignature,) = ledger.cosignatures(tree.note(9) + grown.body, [verifier])
    assert cosignature.timestamp == first.clock.now  # never before the last one
    status = client.status()
    assert status["refusals"] == 2
    assert 'sinergi_witness_checkpoint_size{origin="sinergi.dev/ledger"} 9.0' in client.metrics()


def test_serve_refuses_a_missing_state(dev: Path) -> None:
    directory = dev / "witness-police"
    (directory / STATE_FILE).unlink()
    with pytest.raises(StateError, match="is missing: a witness without its state") as caught:
        WitnessServer(directory)
    assert "sinergi witness init" in str(caught.value)
    assert not (directory / STATE_FILE).exists()  # and it created nothing


def test_serve_refuses_the_state_of_another_witness_key(dev: Path) -> None:
    police, ia = dev / "witness-police", dev / "witness-internal-affairs"
    shutil.copy(ia / STATE_FILE, police / STATE_FILE)
    with pytest.raises(
        StateError, match=re.escape("belongs to the witness key sinergi.dev/witness/internal")
    ):
        WitnessServer(police)


def test_serve_refuses_a_file_that_is_not_a_state(dev: Path) -> None:
    state = dev / "witness-police" / STATE_FILE
    state.write_bytes(b"")
    with pytest.raises(StateError, match="not a witness state"):
        WitnessServer(dev / "witness-police")
    state.write_bytes(b"not sqlite at all, and long enough to be read as a header....." * 2)
    with pytest.raises(StateError):
        WitnessServer(dev / "witness-police")


def test_init_refuses_an_existing_state_and_keeps_it(dev: Path) -> None:
    directory = dev / "witness-police"
    before = (directory / STATE_FILE).read_bytes()
    with pytest.raises(StateError, match="initialised already"):
        init_witness(directory, "sinergi.dev/witness/police")
    with pytest.raises(StateError, match="exists"):
        create_state(directory / STATE_FILE, "x", 0)
    assert (directory / STATE_FILE).read_bytes() == before


def test_init_keeps_a_key_and_refuses_another_name(tmp_path: Path, dev: Path) -> None:
    directory = tmp_path / "w"
    vkey = (dev / "ledger.vkey").read_text().strip()
    made = init_witness(directory, "agency.example/witness", logs=[vkey, vkey])
    assert made.key_created
    assert (directory / "logs").read_text().count("\nlog ") == 1
    assert oct((directory / STATE_FILE).stat().st_mode & 0o777) == "0o600"
    (directory / STATE_FILE).unlink()
    again = init_witness(directory, "agency.example/witness")
    assert (again.vkey, again.key_created) == (made.vkey, False)
    (directory / STATE_FILE).unlink()
    with pytest.raises(ConfigError, match=re.escape("is the key of 'agency.example/witness'")):
        init_witness(directory, "other.example/witness")
    with pytest.raises(ConfigError, match="key id"):
        init_witness(tmp_path / "v", "agency.example/witness", logs=[vkey[:-2] + "AA"])


def test_serve_refuses_bad_setup_files(dev: Path) -> None:
    directory = dev / "witness-police"
    logs = (directory / "logs").read_bytes()
    (directory / "logs").write_bytes(b"# nothing trusted\n")
    with pytest.raises(ConfigError, match="lists no log key"):
        WitnessServer(directory)
    (directory / "logs").write_bytes(logs + b"quorum none\n")
    with pytest.raises(ConfigError, match=r"logs:4: not a `log"):
        WitnessServer(directory)
    (directory / "logs").write_bytes(logs)
    (directory / "witness.key").chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        WitnessServer(directory)
    (directory / "witness.key").chmod(0o600)
    (directory / "tls.key").unlink()
    with pytest.raises(ConfigError, match=re.escape("tls.key")):
        WitnessServer(directory)
    with pytest.raises(ConfigError, match="HOST:PORT"):
        WitnessServer(dev / "witness-internal-affairs", "127.0.0.1")


def test_refusals_are_append_only(
    start_witness: Callable[..., Running], dev: Path, signer: ledger.Signer
) -> None:
    witness = start_witness()
    assert Client(dev, witness.port).add(Tree(signer).request(3, 5)).status == 409
    db = sqlite3.connect(witness.directory / STATE_FILE)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute("DELETE FROM refusals")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute("UPDATE refusals SET status = 200")
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        db.close()
