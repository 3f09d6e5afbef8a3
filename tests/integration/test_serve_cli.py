"""`sinergi serve` as operators run it: a configuration file, --check-config, SIGTERM."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

import ledger
import ledger.store
from clients import ClientError, ExchangeClient, new_alert
from ledger import Action
from sinergi.v1 import exchange_pb2, exchange_pb2_grpc
from tests.clients.conftest import SINERGI, last_json, run
from tests.conftest import ORIGIN, wait_for
from witness import create_dev_witnesses

EXAMPLE = Path(__file__).parents[2] / "docs" / "sinergi.example.toml"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A generated PKI and an initialised SQLite database, as `make run` leaves them."""
    root = tmp_path_factory.mktemp("deployment")
    assert run("pki", "dev", "--dir", str(root / "certs" / "dev")).returncode == 0
    db = f"sqlite:///{root / 'sinergi.db'}"
    assert run("db", "init", "--db", db).returncode == 0
    return root, db


def example_for(root: Path, db: str) -> str:
    text = EXAMPLE.read_text()
    assert 'pki = "certs/dev"' in text
    assert 'database = "sqlite:///var/sinergi.db"' in text
    return text.replace('pki = "certs/dev"', f'pki = "{root / "certs" / "dev"}"').replace(
        'database = "sqlite:///var/sinergi.db"', f'database = "{db}"'
    )


def test_the_example_configuration_passes_check_config(
    deployment: tuple[Path, str], tmp_path: Path
) -> None:
    root, db = deployment
    config = tmp_path / "sinergi.toml"
    config.write_text(example_for(root, db))
    result = run("serve", "--config", str(config), "--check-config")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("configuration ok: listen 127.0.0.1:50051")
    summary = last_json(run("serve", "--config", str(config), "--check-config", "--json"))
    assert summary["ok"] is True
    assert summary["metrics_listen"] == "127.0.0.1:9464"


def test_a_bad_key_fails_with_its_line(deployment: tuple[Path, str], tmp_path: Path) -> None:
    root, db = deployment
    config = tmp_path / "sinergi.toml"
    config.write_text(example_for(root, db).replace("grace_seconds = 5.0", 'grace_seconds = "5"'))
    line = next(
        n for n, text in enumerate(config.read_text().splitlines(), 1)
        if text.startswith("grace_seconds")
    )  # fmt: skip
    result = run("serve", "--config", str(config), "--check-config", "--json")
    assert result.returncode == 2
    message = f"{config}:{line}: 'grace_seconds' must be a number, not a string"
    assert json.loads(result.stdout.strip().splitlines()[-1])["error"] == message
    assert message in result.stderr


def test_flags_override_the_file_and_problems_are_precise(
    deployment: tuple[Path, str], tmp_path: Path
) -> None:
    root, db = deployment
    config = tmp_path / "sinergi.toml"
    missing = f"sqlite:///{tmp_path / 'missing.db'}"
    config.write_text(example_for(root, db).replace(db, missing))
    result = run("serve", "--config", str(config), "--check-config")
    assert result.returncode == 2
    assert f"database {missing} does not exist: run `sinergi db init` first" in result.stderr
    assert not (tmp_path / "missing.db").exists()  # checking created nothing
    assert run("serve", "--config", str(config), "--check-config", "--db", db).returncode == 0
    no_key = run("serve", "--config", str(config), "--db", db, "--check-config",
                 "--pki", str(tmp_path / "nowhere"))  # fmt: skip
    assert no_key.returncode == 2
    assert str(tmp_path / "nowhere") in no_key.stderr
    not_a_crl = tmp_path / "crl.pem"
    not_a_crl.write_text("not a CRL")
    bad_crl = run("serve", "--config", str(config), "--db", db, "--check-config",
                  "--crl", str(not_a_crl))  # fmt: skip
    assert bad_crl.returncode == 2
    assert str(not_a_crl) in bad_crl.stderr


def test_check_config_checks_the_witness_policy(
    deployment: tuple[Path, str], tmp_path: Path
) -> None:
    """The policy parses (a mistake names its line), its quorum can be asked for, and its log
    keys include this exchange's; from the flag or the configuration file."""
    root, db = deployment
    pki = root / "certs" / "dev"
    made = create_dev_witnesses(pki)
    flags = ("serve", "--db", db, "--pki", str(pki), "--check-config")
    checked = run(*flags, "--json", "--witness-policy", str(made.policy))
    assert checked.returncode == 0, checked.stderr
    summary = last_json(checked)
    assert summary["witnesses"] == {
        "policy": str(made.policy),
        "quorum": "2 of (internal-affairs, police)",
        "witnesses": ["internal-affairs", "police"],
    }
    assert summary["origin"] is None  # chosen at the first start
    config = tmp_path / "sinergi.toml"
    config.write_text(example_for(root, db) + f'witness_policy = "{made.policy}"\n')
    from_file = run("serve", "--config", str(config), "--check-config")
    assert from_file.returncode == 0, from_file.stderr
    assert "witnesses 2 of (internal-affairs, police)" in from_file.stdout
    text = made.policy.read_text()
    lines = text.splitlines()
    stranger = ledger.Signer(ORIGIN, ledger.generate_signing_key()).verifier().verifier_key()
    cases = {
        "twice": (text + "quorum none\n", f"{len(lines) + 1}: a second quorum line"),
        "unknown": (text.replace("quorum dev-witnesses", "quorum nobody"), "is not defined"),
        "no url": (
            re.sub(r" https://127\.0\.0\.1:50062", "", text),
            "needs a witness without a URL",
        ),
        "other log": (
            re.sub(r"^log .*$", f"log {stranger}", text, flags=re.MULTILINE),
            "none of its log keys is this exchange's ledger key",
        ),
    }
    for name, (policy_text, message) in cases.items():
        policy = tmp_path / name.replace(" ", "-")
        policy.write_text(policy_text)
        bad = run(*flags, "--witness-policy", str(policy))
        assert bad.returncode == 2, name
        assert message in bad.stderr, (name, bad.stderr)
        assert str(policy) in bad.stderr


def _serve(root: Path, db: str, *extra: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [*SINERGI, "serve", "--db", db, "--pki", str(root / "certs" / "dev"),
         "--listen", "127.0.0.1:0", "--json", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line, process.stderr.read() if process.stderr else ""
    return process, json.loads(line)["listen"]


def _raw_subscription(identity: Path, address: str) -> tuple[grpc.Channel, Iterator[Any]]:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(identity / "ca.crt").read_bytes(),
        private_key=(identity / "tls.key").read_bytes(),
        certificate_chain=(identity / "tls.crt").read_bytes(),
    )
    channel = grpc.secure_channel(address, credentials)
    stub = exchange_pb2_grpc.ExchangeStub(channel)
    return channel, stub.Subscribe(exchange_pb2.SubscribeRequest(after=0))


def test_sigterm_drains_and_loses_no_acknowledged_publish(tmp_path: Path) -> None:
    root = tmp_path
    assert run("pki", "dev", "--dir", str(root / "certs" / "dev")).returncode == 0
    db = f"sqlite:///{root / 'sinergi.db'}"
    assert run("db", "init", "--db", db).returncode == 0
    pki = root / "certs" / "dev"
    process, address = _serve(root, db, "--grace-seconds", "5")
    channel, stream = _raw_subscription(pki / "police", address)
    ended: list[grpc.RpcError] = []
    received: list[int] = []

    def subscribe() -> None:
        try:
            received.extend(delivery.cursor for delivery in stream)
        except grpc.RpcError as exc:
            ended.append(exc)

    published: list[str] = []
    stop = threading.Event()

    def publish() -> None:
        with ExchangeClient(pki / "immigration", address, timeout=5) as client:
            while not stop.is_set():
                alert = new_alert(category="PASSPORT_HOLD", recipients=["police"], summary="x")
                try:
                    published.append(client.publish(alert).alert_id)
                except ClientError:
                    return  # the server is going away

    threads = [threading.Thread(target=subscribe)] + [
        threading.Thread(target=publish) for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: len(published) >= 10 and received, what="publishes and a delivery")
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0, process.stderr.read() if process.stderr else ""
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
        channel.close()
        if process.poll() is None:
            process.kill()

    assert [e.code() for e in ended] == [grpc.StatusCode.UNAVAILABLE]
    assert ended[0].details() == "server shutting down; resume from your last cursor"
    # Every publish that succeeded was committed with its ledger entry, and the chain holds
    # across the restart.
    restarted, address = _serve(root, db)
    try:
        with ExchangeClient(pki / "immigration", address) as client:
            client.publish(new_alert(category="OTHER", recipients=["police"], summary="after"))
    finally:
        restarted.send_signal(signal.SIGTERM)
        assert restarted.wait(10) == 0
    engine = ledger.store.create_engine(db)
    with engine.connect() as connection:
        recorded = {
            obj
            for _, _, body in ledger.store.iter_entries(connection)
            for entry in [ledger.Entry.decode(body)]
            if entry.action == Action.PUBLISH
            for obj in entry.objects
        }
        stored = {row[0] for row in connection.exec_driver_sql("SELECT id FROM alerts")}
    engine.dispose()
    assert {f"alert:{alert_id}" for alert_id in published} <= recorded
    assert set(published) <= stored
    verified = run("ledger", "verify", "--db", db, "--ledger-key", str(pki / "ledger.vkey"))
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_the_log_is_json_lines_without_alembic_chatter(tmp_path: Path) -> None:
    """Migrating at start (`--upgrade`) and serving: every stderr line is one JSON object, and
    Alembic's routine INFO lines ("Context impl SQLiteImpl.") are debug, so not shown."""
    assert run("pki", "dev", "--dir", str(tmp_path / "certs" / "dev")).returncode == 0
    process, _ = _serve(tmp_path, f"sqlite:///{tmp_path / 'new.db'}", "--upgrade")
    process.send_signal(signal.SIGTERM)
    assert process.wait(10) == 0
    assert process.stderr is not None
    lines = process.stderr.read().splitlines()
    events = [json.loads(line) for line in lines]  # fails on any line that is not JSON
    assert "serving" in {event["event"] for event in events}
    assert not [line for line in lines if "Context impl" in line or "DDL" in line]
