"""The bare primitive of the exchange benchmarks: a grpc.aio unary echo server with mutual TLS.

Same certificates as the exchange (the server identity of the same PKI, client certificates
required), same kind of server (grpc.aio), raw bytes in and out (no protobuf, no handler code).
Run as its own process, as the exchange is deployed::

    python -m bench._echo --identity PKI/server

It prints one JSON line with the port once it serves, and stops when its standard input closes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

import grpc

SERVICE = "bench.Echo"
METHOD = f"/{SERVICE}/Call"


async def _echo(request: bytes, _context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return request


async def _serve(identity: Path, listen: str) -> None:
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        SERVICE, {"Call": grpc.unary_unary_rpc_method_handler(_echo)}
    )
    server.add_generic_rpc_handlers((handler,))
    credentials = grpc.ssl_server_credentials(
        [((identity / "tls.key").read_bytes(), (identity / "tls.crt").read_bytes())],
        root_certificates=(identity / "ca.crt").read_bytes(),
        require_client_auth=True,
    )
    port = server.add_secure_port(listen, credentials)
    await server.start()
    print(json.dumps({"ok": True, "port": port}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until stdin closes
    await server.stop(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--identity", type=Path, required=True)
    parser.add_argument("--listen", default="127.0.0.1:0")
    args = parser.parse_args()
    asyncio.run(_serve(args.identity, args.listen))


if __name__ == "__main__":
    main()
