"""`sinergi serve` as operators run it: a configuration file, --check-config, SIGTERM."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.serialization import Encoding

import ledger
import ledger.store
from certs import Pki, build_crl, load_ca
from clients import ClientError, ExchangeClient, new_alert
from exchange import ConfigError, ServerConfig
from ledger import Action
from sinergi.v1 import exchange_pb2, exchange_pb2_grpc
from tests.clients.conftest import SINERGI, last_json, run
from tests.conftest import ORIGIN, RunningServer, ServerThread, wait_for
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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_second_exchange_on_the_same_address_is_refused(
    pki: Path, sqlite_url: str, tmp_path: Path
) -> None:
    """grpc's default SO_REUSEPORT would let both bind, and the kernel split clients between
    two exchanges (two ledgers): the second fails before it records anything, and so does a
    `sinergi serve` started on the address, with exit code 2."""
    address = f"127.0.0.1:{_free_port()}"
    config = ServerConfig(
        identity=pki / "server",
        ledger_key=pki / "ledger.key",
        database=sqlite_url,
        listen=address,
        grace_seconds=0.5,
    )
    first, second = ServerThread(config), ServerThread(config)
    served = RunningServer(address, sqlite_url, pki, first.start(), first)
    try:
        message = f"cannot listen on {address}: the address is in use (another exchange?)"
        with pytest.raises(ConfigError) as refused:
            second.start()
        assert str(refused.value) == message
        other_db = f"sqlite:///{tmp_path / 'other.db'}"
        assert run("db", "init", "--db", other_db).returncode == 0
        serve = ["serve", "--db", other_db, "--pki", str(pki), "--listen", address, "--json"]
        process = subprocess.Popen(
            [*SINERGI, *serve], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert process.stdout is not None
        assert process.stderr is not None
        answer = json.loads(process.stdout.readline())  # it listens, or says why not
        if answer["ok"]:
            process.kill()
        assert answer == {"ok": False, "error": message}
        assert process.wait(30) == 2
        assert f"sinergi: {message}" in process.stderr.read().splitlines()
        # The first one still serves every client, and the others recorded nothing.
        with ExchangeClient(pki / "immigration", address) as client:
            client.publish(new_alert(category="OTHER", recipients=["police"], summary="one"))
        assert [e.action for e in served.entries()] == [Action.START, Action.PUBLISH]
        engine = ledger.store.create_engine(other_db)
        with engine.connect() as connection:
            assert ledger.store.entry_count(connection) == 0
        engine.dispose()
    finally:
        second.stop()
        first.stop()


def test_the_crl_options_come_from_the_file_or_a_flag_and_check_config_checks_the_crls(
    deployment: tuple[Path, str], tmp_path: Path
) -> None:
    """`crl_grace_seconds` and `crl_state` are keys and flags (a flag wins); --check-config
    fails when a CA would be left without a current CRL, or the state file is unreadable, and
    writes no state file itself."""
    root, db = deployment
    fed = Pki.init(tmp_path / "fed", "sinergi.dev")
    fed.create_agency_ca("police")
    server = tmp_path / "server"
    fed.issue_server(server, common_name="exchange", dns_names=["localhost"], ip_addresses=[])
    fed.write_crls()
    # The police CA's next CRL, an hour past its nextUpdate: current only with a grace.
    now = datetime.now(UTC).replace(microsecond=0)
    late = now - timedelta(hours=1)
    police = build_crl(
        load_ca(fed.agency_dir("police")), [], number=2, this_update=now - timedelta(8),
        next_update=late,
    )  # fmt: skip
    crl = tmp_path / "crl.pem"
    crl.write_bytes(
        (fed.directory / "root" / "crl.pem").read_bytes() + police.public_bytes(Encoding.PEM)
    )
    state = tmp_path / "state" / "crl-numbers.json"
    config = tmp_path / "sinergi.toml"
    config.write_text(
        example_for(root, db)
        + f'identity = "{server}"\ncrl = "{crl}"\ncrl_state = "{state}"\ncrl_grace_seconds = 7200\n'
    )
    checked = run("serve", "--config", str(config), "--check-config", "--json")
    assert checked.returncode == 0, checked.stderr
    ca = "spiffe://sinergi.dev/agency/police"
    assert last_json(checked)["crl_next_updates"] == {ca: late.isoformat()}
    assert not state.parent.exists()  # a check writes nothing
    no_grace = run("serve", "--config", str(config), "--check-config", "--crl-grace-seconds", "0")
    assert no_grace.returncode == 2
    assert f"no current CRL for issuing CA {ca}: its identities would be refused" in no_grace.stderr
    assert '"reason": "expired"' in no_grace.stderr  # the log line of the refusal says why
    damaged = tmp_path / "damaged.json"
    damaged.write_text("{")
    unreadable = run(
        "serve", "--config", str(config), "--check-config", "--crl-state", str(damaged)
    )
    assert unreadable.returncode == 2
    assert f"{damaged}: unreadable" in unreadable.stderr
    assert "restore it from a backup" in unreadable.stderr
