"""Server reflection over mutual TLS, revealing exactly the served API and nothing else."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from tests.conftest import RunningServer
from tests.integration.support import channel

SERVED = {
    "sinergi.v1.Exchange",
    "sinergi.v1.AuditLedger",
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
}


def test_reflection_lists_exactly_the_served_services(server: RunningServer) -> None:
    before = len(server.entries())
    database = ProtoReflectionDescriptorDatabase(channel(server, "police"))
    assert set(database.get_services()) == SERVED
    # A client can rebuild the API from the answers alone.
    pool = DescriptorPool(database)
    publish = pool.FindServiceByName("sinergi.v1.Exchange").methods_by_name["Publish"]
    assert publish.input_type.full_name == "sinergi.v1.PublishRequest"
    assert pool.FindMessageTypeByName("sinergi.v1.Alert").fields_by_name["handling"]
    assert len(server.entries()) == before  # reflection carries no alert data: not recorded


def test_reflection_does_not_reveal_other_protos_in_the_process(server: RunningServer) -> None:
    """google.rpc.BadRequest is loaded in the server (error details) but not part of the API."""
    stub = reflection_pb2_grpc.ServerReflectionStub(channel(server, "police"))
    requests = [
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="google.rpc.BadRequest"),
        reflection_pb2.ServerReflectionRequest(file_by_filename="google/rpc/error_details.proto"),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="sinergi.v1.Exchange"),
    ]
    answers = list(stub.ServerReflectionInfo(iter(requests), timeout=5))
    assert [a.error_response.error_code for a in answers[:2]] == [
        grpc.StatusCode.NOT_FOUND.value[0]
    ] * 2
    assert answers[2].file_descriptor_response.file_descriptor_proto


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_reflection_can_be_turned_off(
    start_server: Callable[..., RunningServer], db_url: str
) -> None:
    server = start_server(db_url, reflection=False)
    stub = reflection_pb2_grpc.ServerReflectionStub(channel(server, "police"))
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.ServerReflectionInfo(iter([request]), timeout=5))
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
