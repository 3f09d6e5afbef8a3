"""Interoperability: the Node.js example (clients/examples/node), built from the .proto files alone,
publishes over mutual TLS to a real exchange, and the ledger attributes it to the identity used.

Skipped when node or npm is not installed; when they are, a failure (npm ci included) fails the
test under CI and skips it elsewhere only if the packages could not be installed."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from clients import ExchangeClient
from ledger import Action
from tests.conftest import RunningServer

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "clients" / "examples" / "node"


@pytest.fixture(scope="session")
def node_example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the example with its locked packages installed (`npm ci`, once per session)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are not installed; the Node.js example is not tested")
    copy = tmp_path_factory.mktemp("node-example")
    for name in ("package.json", "package-lock.json", "publish.js"):
        shutil.copy2(EXAMPLE / name, copy / name)
    installed = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
        cwd=copy, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    if installed.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"npm ci failed:\n{installed.stderr}")
        pytest.skip(f"npm ci failed (no registry?): {installed.stderr.strip()[-300:]}")
    return copy


def test_node_client_publishes_over_mtls_and_the_ledger_names_it(
    node_example: Path, start_server: Callable[..., RunningServer], sqlite_url: str
) -> None:
    server = start_server(sqlite_url)
    identity = server.pki / "immigration"
    env = {**os.environ, "SINERGI_SERVER": server.address, "SINERGI_IDENTITY": str(identity),
           "SINERGI_PROTO": str(REPO / "proto")}  # fmt: skip
    result = subprocess.run(
        ["node", "publish.js"], cwd=node_example, env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    alert_id = printed["alert_id"]
    assert printed["read_back"] == alert_id
    assert printed["sender"] == "spiffe://sinergi.dev/agency/immigration/system/gateway"

    certificate = x509.load_pem_x509_certificate((identity / "tls.crt").read_bytes())
    fingerprint = hashlib.sha256(certificate.public_bytes(Encoding.DER)).hexdigest()
    entries = server.entries()
    published = [e for e in entries if e.action is Action.PUBLISH]
    assert [e.objects for e in published] == [(f"alert:{alert_id}",)]
    assert published[0].seq == printed["seq"]
    assert published[0].actor.id == printed["sender"]
    assert published[0].actor.cert == fingerprint
    reads = [e for e in entries if e.action is Action.READ and f"alert:{alert_id}" in e.objects]
    assert [e.actor.id for e in reads] == [printed["sender"]]
    # Node signed it with its identity key; the Python library checks that signature on receipt.
    with ExchangeClient(server.pki / "police", server.address) as police:
        signed = police.verify_sender(police.get_alert(alert_id).current)
    assert str(signed.sender) == printed["sender"]
    assert signed.fingerprint == fingerprint


def test_node_client_refusal_is_reported_with_its_status(
    node_example: Path, start_server: Callable[..., RunningServer], sqlite_url: str
) -> None:
    server = start_server(sqlite_url)
    env = {**os.environ, "SINERGI_SERVER": server.address,
           "SINERGI_IDENTITY": str(server.pki / "customs"),
           "SINERGI_PROTO": str(REPO / "proto")}  # fmt: skip
    result = subprocess.run(
        ["node", "publish.js"], cwd=node_example, env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "PERMISSION_DENIED: agency 'customs' may not publish PASSPORT_HOLD" in result.stderr
    assert [e.action for e in server.entries()][-1] is Action.DENIED
