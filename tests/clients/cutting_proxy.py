"""A TCP proxy between a client and the exchange that a test can cut, or make lose replies."""

from __future__ import annotations

import asyncio
import contextlib

from tests.integration.tcp_proxy import TcpProxy


class CuttingProxy(TcpProxy):
    """:class:`TcpProxy` that can also swallow what the server sends (``lose_replies``): the
    request arrives and is acted on, the answer never does, which is the case where a client
    cannot know whether its write happened."""

    lose_replies = False

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(
            self._pump(reader, up_writer, reply=False), self._pump(up_reader, writer, reply=True)
        )
        self._writers -= {writer, up_writer}

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, reply: bool
    ) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while data := await reader.read(65536):
                if reply and self.lose_replies:
                    continue
                writer.write(data)
                await writer.drain()
        writer.transport.abort()
