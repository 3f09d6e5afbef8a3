"""The `sinergi` CLI as a user runs it: a real `sinergi serve` process and real subprocesses."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
from pathlib import Path

import click
from click.testing import CliRunner

from certs import create_dev_pki
from clients._cli import cli
from tests.clients.conftest import SINERGI, last_json, run


def test_walkthrough_publish_watch_ack_verify_and_tamper(
    served: tuple[str, Path, str],
) -> None:
    address, pki, db = served
    env = {**os.environ, "SINERGI_SERVER": address}
    watcher = subprocess.Popen(
        [*SINERGI, "alert", "watch", "--identity", str(pki / "police"), "--count", "1", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    published = run(
        "alert",
        "publish",
        "--identity",
        str(pki / "immigration"),
        "--category",
        "PASSPORT_HOLD",
        "--to",
        "police,labour",
        "--subject",
        "passport=C1234567",
        "--summary",
        "Applicant held",
        "--json",
        env=env,
    )
    assert published.returncode == 0, published.stderr
    alert_id = last_json(published)["alert_id"]
    out, err = watcher.communicate(timeout=30)
    assert watcher.returncode == 0, err
    delivery = json.loads(out.strip().splitlines()[-1])
    assert delivery["alert"]["id"] == alert_id
    assert delivery["alert"]["subjects"] == [{"person": {"passport_number": "C1234567"}}]

    human = run(
        "alert",
        "ack",
        str(alert_id),
        "--identity",
        str(pki / "police"),
        "--response",
        "ACCEPTED",
        env=env,
    )
    assert human.returncode == 0, human.stderr
    assert human.stdout.startswith(f"acknowledged {alert_id}: ACCEPTED")

    key = str(pki / "ledger.vkey")
    verified = run("ledger", "verify", "--db", db, "--ledger-key", key, "--json")
    assert verified.returncode == 0
    assert last_json(verified)["entries"] == 4

    # Someone edits a ledger row by hand (after dropping the guard, as a DBA could).
    path = db.removeprefix("sqlite:///")
    with sqlite3.connect(path) as connection:
        connection.execute("DROP TRIGGER ledger_entries_no_update")
        connection.execute(
            "UPDATE ledger_entries SET body = CAST(REPLACE(CAST(body AS TEXT), "
            "'ACCEPTED', 'NOT_RELEVANT') AS BLOB) WHERE seq = 4"
        )
        connection.execute(
            "CREATE TRIGGER ledger_entries_no_update BEFORE UPDATE ON ledger_entries "
            "BEGIN SELECT RAISE(ABORT, 'append-only'); END"
        )
    broken = run("ledger", "verify", "--db", db, "--ledger-key", key)
    assert broken.returncode == 1
    assert "ledger BROKEN: entry 4: content does not match its hash" in broken.stderr


def test_refusals_exit_non_zero_with_one_line_reasons(served: tuple[str, Path, str]) -> None:
    address, pki, _ = served
    env = {**os.environ, "SINERGI_SERVER": address}
    customs = str(pki / "customs")
    denied = run(
        "alert",
        "publish",
        "--identity",
        customs,
        "--category",
        "PASSPORT_HOLD",
        "--to",
        "police",
        "--summary",
        "x",
        "--json",
        env=env,
    )
    assert denied.returncode == 1
    assert last_json(denied) == {
        "ok": False,
        "code": "PERMISSION_DENIED",
        "error": "PERMISSION_DENIED: agency 'customs' may not publish PASSPORT_HOLD alerts",
    }
    invalid = run(
        "alert",
        "publish",
        "--identity",
        str(pki / "immigration"),
        "--category",
        "PASSPORT_HOLD",
        "--to",
        "police",
        "--subject",
        "nik=123",
        "--summary",
        "x",
        env=env,
    )
    assert invalid.returncode == 1
    assert "alert.subjects[0].person.nik: must be 16 digits" in invalid.stderr


def test_usage_errors_exit_2_and_name_the_problem(workdir: Path) -> None:
    pki = workdir / "certs" / "dev"
    missing = run("alert", "watch", "--identity", str(workdir / "nowhere"))
    assert missing.returncode == 2
    assert f"{workdir / 'nowhere'}" in missing.stderr
    assert "Traceback" not in missing.stderr
    shutil.copytree(pki / "police", workdir / "partial")
    (workdir / "partial" / "tls.key").unlink()
    partial = run("alert", "watch", "--identity", str(workdir / "partial"))
    assert partial.returncode == 2
    assert "tls.key" in partial.stderr
    category = run(
        "alert",
        "publish",
        "--identity",
        str(pki / "immigration"),
        "--category",
        "NOPE",
        "--to",
        "police",
        "--summary",
        "x",
    )
    assert category.returncode == 2
    assert "unknown category 'NOPE'" in category.stderr
    flag = run("alert", "publish", "--bogus")
    assert flag.returncode == 2


def test_unreachable_exchange_exits_3(workdir: Path) -> None:
    pki = workdir / "certs" / "dev"
    result = run(
        "alert",
        "ack",
        "00000000-0000-4000-8000-000000000000",
        "--identity",
        str(pki / "police"),
        "--response",
        "RECEIVED",
        "--server",
        "127.0.0.1:1",
        "--json",
    )
    assert result.returncode == 3
    assert str(last_json(result)["error"]).startswith("exchange unreachable")


def test_a_refused_certificate_is_told_apart_from_an_exchange_not_listening(
    served: tuple[str, Path, str], tmp_path: Path
) -> None:
    """grpcio gives the client UNAVAILABLE in every case here; its details tell them apart."""
    address, pki, _ = served
    other = create_dev_pki(tmp_path / "other").directory  # a CA neither side trusts

    def identity(name: str, certificate_of: Path, trusting: Path) -> str:
        directory = shutil.copytree(certificate_of, tmp_path / name)
        shutil.copy(trusting / "ca.crt", directory / "ca.crt")
        shutil.copy(pki / "ledger.vkey", directory / "ledger.vkey")
        return str(directory)

    # The exchange refuses the client's certificate: the connection closes after the handshake,
    # which a proxy with nothing behind it would do too, so it stays exit 3 naming both.
    stranger = identity("stranger", other / "police", trusting=pki)
    refused = run("alert", "list", "--identity", stranger, "--server", address, "--json")
    assert refused.returncode == 3, refused.stderr
    error = str(last_json(refused)["error"])
    assert error.startswith("exchange unreachable, or it refused this identity's certificate")
    assert error.endswith("Socket closed)")
    # This client refuses the exchange's certificate: certain, so a failed verification (1),
    # and a subscription does not resume for ever.
    doubter = identity("doubter", pki / "police", trusting=other)
    for command in (["alert", "list"], ["alert", "watch"]):
        distrust = run(*command, "--identity", doubter, "--server", address, "--json")
        assert distrust.returncode == 1, distrust.stderr
        error = str(last_json(distrust)["error"])
        assert error.startswith("the exchange's TLS certificate was refused: it does not verify")
        assert "CERTIFICATE_VERIFY_FAILED" in error
    # So is an address its certificate does not name (on Linux 0.0.0.0 reaches 127.0.0.1).
    police, port = str(pki / "police"), address.rsplit(":", 1)[1]
    misnamed = run("alert", "list", "--identity", police, "--server", f"0.0.0.0:{port}", "--json")
    assert misnamed.returncode == 1, misnamed.stderr
    assert "Hostname Verification Check failed" in str(last_json(misnamed)["error"])
    # Nothing listens: unreachable, and no word of certificates.
    nowhere = f"127.0.0.1:{_free_port()}"
    absent = run("alert", "list", "--identity", police, "--server", nowhere, "--json")
    assert absent.returncode == 3, absent.stderr
    error = str(last_json(absent)["error"])
    assert error.startswith("exchange unreachable: ")
    assert "certificate" not in error
    assert "Connection refused" in error


def _free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_verify_without_key_file_is_a_usage_error(tmp_path: Path) -> None:
    result = run(
        "ledger",
        "verify",
        "--db",
        f"sqlite:///{tmp_path / 'x.db'}",
        "--ledger-key",
        str(tmp_path / "missing.vkey"),
    )
    assert result.returncode == 2
    assert "missing.vkey" in result.stderr


def test_serve_refuses_an_uninitialised_database(workdir: Path) -> None:
    result = run(
        "serve",
        "--db",
        f"sqlite:///{workdir / 'empty.db'}",
        "--pki",
        str(workdir / "certs" / "dev"),
        "--listen",
        "127.0.0.1:0",
    )
    assert result.returncode == 2
    assert "sinergi db init" in result.stderr


def _leaf_commands() -> list[list[str]]:
    """Every runnable command of the tree, lazily loaded groups included."""
    ctx = click.Context(cli)
    found: list[list[str]] = []

    def walk(group: click.Group, path: list[str]) -> None:
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            assert command is not None, name
            if isinstance(command, click.Group):
                walk(command, [*path, name])
            else:
                found.append([*path, name])

    walk(cli, [])
    return found


def test_every_command_has_help_with_an_example() -> None:
    commands = _leaf_commands()
    assert ["ledger", "verify"] in commands
    assert ["serve"] in commands
    # In process (and one run through the console script below): a subprocess per command
    # cost 45 s of the suite.
    runner = CliRunner()
    for command in commands:
        result = runner.invoke(cli, [*command, "--help"], env={"SINERGI_CONFIG": ""})
        assert result.exit_code == 0, (command, result.output)
        assert re.search(r"^\s+Examples?:$", result.output, re.MULTILINE), command
        assert "--json" in result.output, command
    installed = run("ledger", "verify", "--help")
    assert installed.returncode == 0
    assert installed.stdout.startswith("Usage: sinergi ledger verify [OPTIONS]")
    assert re.search(r"^\s+Examples?:$", installed.stdout, re.MULTILINE)
