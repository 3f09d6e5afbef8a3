"""`sinergi ledger` against a real server and database: export, verify (db, file, server),
checkpoint, prove and consistency, as an internal-affairs team would run them."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from tests.clients.conftest import last_json, run


def publish_some(address: str, pki: Path, count: int) -> None:
    env = {**os.environ, "SINERGI_SERVER": address}
    for i in range(count):
        immigration = str(pki / "immigration")
        result = run(
            "alert",
            "publish",
            "--identity",
            immigration,
            "--category",
            "PASSPORT_HOLD",
            "--to",
            "police",
            "--summary",
            f"alert {i}",
            env=env,
        )
        assert result.returncode == 0, result.stderr


def checkpoint_sizes(db: str) -> list[int]:
    with sqlite3.connect(db.removeprefix("sqlite:///")) as connection:
        return [r[0] for r in connection.execute("SELECT size FROM ledger_checkpoints ORDER BY 1")]


def test_export_and_verify_the_file(served: tuple[str, Path, str], tmp_path: Path) -> None:
    address, pki, db = served
    publish_some(address, pki, 3)
    key = ("--ledger-key", str(pki / "ledger.vkey"))
    out = tmp_path / "ledger.jsonl"
    exported = run("ledger", "export", "--db", db, "--out", str(out), "--json")
    assert exported.returncode == 0, exported.stderr
    assert last_json(exported)["entries"] == 4  # START + 3 PUBLISH
    lines = out.read_bytes().splitlines(keepends=True)
    assert len(lines) == 4 + len(checkpoint_sizes(db))
    verified = run("ledger", "verify", "--file", str(out), *key, "--json")
    assert verified.returncode == 0, verified.stderr
    assert last_json(verified)["entries"] == 4
    assert run("ledger", "export", "--db", db, "--out", str(out)).returncode == 2  # no overwrite

    tampered = tmp_path / "tampered.jsonl"
    tampered.write_bytes(b"".join(lines).replace(b"alert:", b"alerT:", 1))
    broken = run("ledger", "verify", "--file", str(tampered), *key, "--json")
    assert broken.returncode == 1
    assert last_json(broken)["seq"] == 2

    # Cut the tail with its checkpoints: consistent on its own, caught by a kept checkpoint.
    kept = tmp_path / "kept.note"
    assert run("ledger", "checkpoint", "--db", db, "--out", str(kept), *key).returncode == 0
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(b"".join(lines[:2]))  # START, its checkpoint
    assert run("ledger", "verify", "--file", str(cut), *key).returncode == 0
    caught = run("ledger", "verify", "--file", str(cut), *key, "--checkpoint", str(kept))
    assert caught.returncode == 1
    assert "entries were removed" in caught.stderr


def test_auditor_verifies_through_the_server(served: tuple[str, Path, str]) -> None:
    address, pki, _ = served
    publish_some(address, pki, 2)
    key = ("--ledger-key", str(pki / "ledger.vkey"))
    auditor = ("--server", address, "--identity", str(pki / "internal-affairs"))
    verified = run("ledger", "verify", *auditor, *key, "--json")
    assert verified.returncode == 0, verified.stderr
    assert last_json(verified)["entries"] >= 3
    proved = run("ledger", "prove", "2", *auditor, *key, "--json")
    assert proved.returncode == 0, proved.stderr
    assert '"action":"PUBLISH"' in str(last_json(proved)["entry"])
    police = ("--server", address, "--identity", str(pki / "police"))
    refused = run("ledger", "verify", *police, *key)
    assert refused.returncode == 1
    assert "PERMISSION_DENIED" in refused.stderr


def test_checkpoint_prove_and_consistency(served: tuple[str, Path, str], tmp_path: Path) -> None:
    address, pki, db = served
    key = ("--ledger-key", str(pki / "ledger.vkey"))
    police = ("--server", address, "--identity", str(pki / "police"))
    publish_some(address, pki, 1)
    kept = tmp_path / "kept.note"
    first = run("ledger", "checkpoint", *police, *key, "--out", str(kept), "--json")
    assert first.returncode == 0, first.stderr
    old = int(last_json(first)["size"])  # type: ignore[call-overload]
    origin, size, *_ = kept.read_bytes().decode().splitlines()
    assert (origin, size) == (last_json(first)["origin"], str(old))
    assert origin.startswith("sinergi.dev/ledger")  # the key's name, or a ledger under it
    publish_some(address, pki, 2)
    sizes = checkpoint_sizes(db)
    new = sizes[-1]
    local = run("ledger", "consistency", str(sizes[0]), str(new), "--db", db, *key, "--json")
    assert local.returncode == 0, local.stderr
    assert last_json(local)["proof"]
    remote = run(
        "ledger", "consistency", str(old), str(new), *police, *key, "--checkpoint", str(kept)
    )
    assert remote.returncode == 0, remote.stderr
    assert f"checkpoint {old} is a prefix of checkpoint {new}" in remote.stdout
    proved = run("ledger", "prove", "1", "--db", db, *key)
    assert proved.returncode == 0
    assert "entry 1 is included in the signed checkpoint" in proved.stdout
    missing = run("ledger", "prove", "999", "--db", db, *key)
    assert missing.returncode == 2
    assert "999" in missing.stderr
