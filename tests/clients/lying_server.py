"""A lying exchange: a gRPC server with the exchange's own TLS identity (so a client cannot tell
it from the real one) that forwards every unary and server-streaming call of Exchange and
AuditLedger to a real exchange, as the caller's identity (so the caller's signature on a write
still names the TLS peer), and lets a test rewrite each answer before the client sees it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.message import Message

from ledger import WITNESSED_SIZE_HEADER
from sinergi.v1 import exchange_pb2, ledger_pb2

#: Rewrites an answer in place: the response message of the method it is registered for.
Tamper = Callable[[Any], None]
_UNARY = {
    f"/{service.full_name}/{method.name}": message_factory.GetMessageClass(method.output_type)
    for module in (exchange_pb2, ledger_pb2)
    for service in module.DESCRIPTOR.services_by_name.values()
    for method in service.methods
    if not method.client_streaming and not method.server_streaming
}
_STREAMING = {
    f"/{service.full_name}/{method.name}": message_factory.GetMessageClass(method.output_type)
    for module in (exchange_pb2, ledger_pb2)
    for service in module.DESCRIPTOR.services_by_name.values()
    for method in service.methods
    if not method.client_streaming and method.server_streaming
}


def _credentials(directory: Path) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=(directory / "ca.crt").read_bytes(),
        private_key=(directory / "tls.key").read_bytes(),
        certificate_chain=(directory / "tls.crt").read_bytes(),
    )


class LyingServer:
    """Forwards to ``upstream`` as the identity directory ``caller``; serves on 127.0.0.1 with
    ``pki``'s server identity. ``tamper[name]`` rewrites the answers of the method ``name``
    (``Publish``, ``GetCheckpoint``, ...; of ``Subscribe``, each message); ``witnessed``
    records the witnessed size each unary call carried (None: no header). ``late[name]``
    calls of ``name`` are forwarded, and answered only once the caller's deadline passed (an
    exchange too loaded to answer in time, which committed all the same); ``cancel[name]``
    streams of ``name`` are ended CANCELLED after their first message."""

    def __init__(self, upstream: str, pki: Path, caller: Path) -> None:
        self.upstream, self.pki, self.caller = upstream, pki, caller
        self.tamper: dict[str, Tamper] = {}
        self.late: dict[str, int] = {}
        self.cancel: dict[str, int] = {}
        self.witnessed: list[tuple[str, int | None]] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.address = ""

    def start(self) -> str:
        self._thread.start()
        if not self._ready.wait(30):
            raise AssertionError("the lying server did not start within 30 s")
        if self._error is not None:
            raise self._error
        return self.address

    def stop(self) -> None:
        if self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        try:
            channel = grpc.aio.secure_channel(self.upstream, _credentials(self.caller))
            server = grpc.aio.server()
            server.add_generic_rpc_handlers([_Forward(self, channel)])
            server_dir = self.pki / "server"
            identity = (
                (server_dir / "tls.key").read_bytes(),
                (server_dir / "tls.crt").read_bytes(),
            )
            port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([identity]))
            await server.start()
        except BaseException as exc:  # reported to the test's thread
            self._error = exc
            self._ready.set()
            return
        self.address = f"127.0.0.1:{port}"
        self._ready.set()
        await self._stop.wait()
        await server.stop(0.5)
        await channel.close()


class _Forward(grpc.GenericRpcHandler):
    def __init__(self, lying: LyingServer, channel: grpc.aio.Channel) -> None:
        self._lying = lying
        self._channel = channel

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        method: str = handler_call_details.method
        lying, channel = self._lying, self._channel
        if method in _STREAMING:
            return self._stream(method, _STREAMING[method])
        reply_type = _UNARY.get(method)
        if reply_type is None:
            return None

        async def forward(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            header = [
                (key, value)
                for key, value in context.invocation_metadata() or ()
                if key == WITNESSED_SIZE_HEADER
            ]
            lying.witnessed.append((method, int(header[0][1]) if header else None))
            call = channel.unary_unary(method)
            try:
                reply: bytes = await call(request, metadata=header, timeout=10)
            except grpc.aio.AioRpcError as exc:
                await context.abort(exc.code(), exc.details() or "")
            name = method.rsplit("/", 1)[1]
            if lying.late.get(name, 0) > 0:
                lying.late[name] -= 1
                gone = asyncio.Event()
                context.add_done_callback(lambda _context: gone.set())
                await gone.wait()  # the caller's deadline: the answer is lost
            tamper = lying.tamper.get(name)
            if tamper is None:
                return reply
            message: Message = reply_type.FromString(reply)
            tamper(message)
            return message.SerializeToString()

        return grpc.unary_unary_rpc_method_handler(forward)

    def _stream(self, method: str, reply_type: Any) -> grpc.RpcMethodHandler:
        """Forward a server stream message by message, each rewritten by the method's tamper."""
        lying, channel = self._lying, self._channel

        async def forward(
            request: bytes, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[bytes]:
            call = channel.unary_stream(method)(request)
            name = method.rsplit("/", 1)[1]
            cut = lying.cancel.get(name, 0) > 0
            if cut:
                lying.cancel[name] -= 1
            sent = 0
            try:
                async for reply in call:
                    if cut and sent == 1:
                        await context.abort(grpc.StatusCode.CANCELLED, "stream cancelled")
                    sent += 1
                    tamper = lying.tamper.get(name)
                    if tamper is None:
                        yield reply
                        continue
                    message: Message = reply_type.FromString(reply)
                    tamper(message)
                    yield message.SerializeToString()
            except grpc.aio.AioRpcError as exc:
                await context.abort(exc.code(), exc.details() or "")
            finally:
                call.cancel()

        return grpc.unary_stream_rpc_method_handler(forward)
