"""gRPC server reflection over a descriptor pool that holds only what this server serves.

grpcio-reflection answers symbol and file look-ups from the process-wide pool by default, which
reveals every proto compiled into the process (docs/grpc-python.md, "Health and
reflection"). A dedicated pool of the served files and their imports reveals exactly the API.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2

from sinergi.v1 import exchange_pb2, ledger_pb2

_FILES = (
    exchange_pb2.DESCRIPTOR,
    ledger_pb2.DESCRIPTOR,
    health_pb2.DESCRIPTOR,
    reflection_pb2.DESCRIPTOR,
)
SERVICES = (
    "sinergi.v1.Exchange",
    "sinergi.v1.AuditLedger",
    "grpc.health.v1.Health",
    reflection.SERVICE_NAME,
)


def served_pool(files: tuple[FileDescriptor, ...] = _FILES) -> descriptor_pool.DescriptorPool:
    """A new pool holding ``files`` and, before each, the files it imports."""
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(file: FileDescriptor) -> None:
        if file.name in added:
            return
        for dependency in file.dependencies:
            add(dependency)
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        pool.Add(proto)
        added.add(file.name)

    for file in files:
        add(file)
    return pool


def enable_reflection(server: Any) -> None:  # noqa: ANN401 - grpc.aio.Server, untyped upstream
    reflection.enable_server_reflection(SERVICES, server, pool=served_pool())
