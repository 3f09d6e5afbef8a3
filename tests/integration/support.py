"""Helpers shared by the integration tests: subscribers on threads and raw mTLS stubs."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from clients import ExchangeClient
from sinergi.v1 import exchange_pb2, exchange_pb2_grpc
from tests.conftest import RunningServer


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


def violations(error: grpc.RpcError) -> dict[str, str]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    found: dict[str, str] = {}
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        assert detail.Unpack(bad)
        found.update({v.field: v.description for v in bad.field_violations})
    return found


class Collector:
    """A subscriber on its own thread, collecting deliveries until cancelled."""

    def __init__(self, server: RunningServer, agency: str, after: int = 0) -> None:
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
