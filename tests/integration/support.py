"""Helpers shared by the integration tests: subscribers on threads, raw mTLS stubs, and the
development witnesses running in-process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol, TypeVar

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from prometheus_client.parser import text_string_to_metric_families

from certs import Signer, SpiffeId, load_identity
from clients import ExchangeClient, sign_request
from sinergi.v1 import exchange_pb2, exchange_pb2_grpc
from tests.conftest import RunningServer
from tests.witness.conftest import WitnessThread
from witness import DEV_WITNESS_PORTS, create_dev_witnesses

#: A metrics scrape: (sample name, its labels) -> value.
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(server: RunningServer) -> Samples:
    """Every sample the server's /metrics endpoint shows now."""
    url = f"http://127.0.0.1:{server.server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def channel(
    server: RunningServer, who: str, options: tuple[tuple[str, int], ...] = ()
) -> grpc.Channel:
    """A bare mutual-TLS channel as identity ``who``: what any gRPC client would open."""
    identity = server.pki / who
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(identity / "ca.crt").read_bytes(),
        private_key=(identity / "tls.key").read_bytes(),
        certificate_chain=(identity / "tls.crt").read_bytes(),
    )
    return grpc.secure_channel(server.address, credentials, options=options)


def stub(
    server: RunningServer, who: str, options: tuple[tuple[str, int], ...] = ()
) -> exchange_pb2_grpc.ExchangeStub:
    return exchange_pb2_grpc.ExchangeStub(channel(server, who, options))


SignedRequest = TypeVar(
    "SignedRequest",
    exchange_pb2.PublishRequest,
    exchange_pb2.UpdateRequest,
    exchange_pb2.CancelRequest,
)


def signed(
    server: Endpoint,
    who: str,
    request: SignedRequest,
    *,
    sender: str | None = None,
    now: datetime | None = None,
) -> SignedRequest:
    """``request`` signed with ``who``'s identity key, as every write must be; as ``who``
    unless ``sender`` names someone else (a forgery)."""
    identity = load_identity(server.pki / who)
    assert identity.spiffe_id is not None
    claimed = SpiffeId.parse(sender) if sender else identity.spiffe_id
    sign_request(request, Signer(identity.key_pem), claimed, now)
    return request


def violations(error: grpc.RpcError) -> dict[str, str]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    found: dict[str, str] = {}
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        assert detail.Unpack(bad)
        found.update({v.field: v.description for v in bad.field_violations})
    return found


class Endpoint(Protocol):
    """Where a client connects: an in-process server, or a `sinergi serve` process."""

    @property
    def address(self) -> str: ...

    @property
    def pki(self) -> Path: ...


@dataclass(frozen=True)
class ServeProcess:
    """A real `sinergi serve` process (a replica, as deployed)."""

    address: str
    pki: Path
    process: subprocess.Popen[str]

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(30)


def serve_process(database: str, pki: Path, *flags: str) -> ServeProcess:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "clients",
            "serve",
            "--db",
            database,
            "--pki",
            str(pki),
            "--listen",
            "127.0.0.1:0",
            "--json",
            *flags,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()  # the first line says where it listens, once it does
    assert line, f"sinergi serve exited with {process.wait(10)}"
    return ServeProcess(json.loads(line)["listen"], pki, process)


class Collector:
    """A subscriber on its own thread, collecting deliveries until cancelled."""

    def __init__(self, server: Endpoint, agency: str, after: int = 0) -> None:
        self.client = ExchangeClient(server.pki / agency, server.address)
        self.deliveries: list[exchange_pb2.Delivery] = []
        self._stream: Iterator[exchange_pb2.Delivery] = self.client.subscribe(after=after)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for delivery in self._stream:
                self.deliveries.append(delivery)
        except Exception:
            return

    def ids(self) -> list[str]:
        return [d.alert.id for d in self.deliveries]

    def stop(self) -> None:
        self.client.close()
        self._thread.join(10)


@dataclass
class Witnesses:
    """The development PKI's two witnesses, running, and a witness policy naming them where
    they listen (the development policy's URLs, with the ports they got)."""

    runners: dict[str, WitnessThread]
    policy: Path

    def stop(self) -> None:
        for runner in self.runners.values():
            runner.stop()


def start_witnesses(pki: Path) -> Witnesses:
    made = create_dev_witnesses(pki)
    runners = {name: WitnessThread(directory) for name, directory in made.directories.items()}
    text = made.policy.read_text()
    for name, runner in runners.items():
        port = runner.start()
        text = text.replace(
            f"https://127.0.0.1:{DEV_WITNESS_PORTS[name]}", f"https://127.0.0.1:{port}"
        )
    policy = pki / "witness-policy-test"
    policy.write_text(text)
    return Witnesses(runners, policy)
