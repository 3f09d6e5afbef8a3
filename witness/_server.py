"""The witness server: HTTPS with mutual TLS on aiohttp, over a loaded directory and state."""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from witness._errors import ConfigError
from witness._service import Metrics, Service
from witness._setup import WitnessSetup, load_setup
from witness._state import State

#: On stop, how long requests in flight get to finish.
SHUTDOWN_SECONDS = 5.0


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) into host and port; port 0 picks a free one."""
    host, sep, port = listen.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isascii() or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"--listen {listen!r}: want HOST:PORT")
    return host, int(port)


def server_tls(setup: WitnessSetup) -> ssl.SSLContext:
    """TLS 1.2 or later; every client must present a certificate of the deployment's PKI.

    Any member may call: the checkpoint's signature is the authorization (tlog-witness: "no
    authentication of requests beyond the validation of the signature on the checkpoint").
    OpenSSL checks the client certificate for the clientAuth usage, so a server-only
    certificate is refused as a client."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    directory = setup.identity.directory
    try:
        context.load_verify_locations(cadata=setup.identity.ca_pem.decode("ascii"))
        context.load_cert_chain(directory / "tls.crt", directory / "tls.key")
    except (ssl.SSLError, OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"TLS identity {directory}: {exc}") from None
    return context


def _now() -> int:
    return int(time.time())


class WitnessServer:
    """One witness: its directory loaded and its state opened on construction (so a missing or
    foreign state stops it before it listens), serving on :meth:`start`."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        listen: str = "127.0.0.1:0",
        *,
        clock: Callable[[], int] = _now,
    ) -> None:
        self.host, self._port = parse_listen(listen)
        self.setup = load_setup(Path(directory))
        self._tls = server_tls(self.setup)
        state = State.open(self.setup.state_path, self.setup.cosigner.verifier_key())
        self.service = Service(self.setup, state, Metrics(), clock)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    @property
    def name(self) -> str:
        return self.setup.cosigner.name

    @property
    def vkey(self) -> str:
        return self.setup.cosigner.verifier_key()

    async def start(self) -> int:
        """Listen; the bound port (useful with port 0)."""
        runner = web.AppRunner(
            self.service.app(), access_log=None, shutdown_timeout=SHUTDOWN_SECONDS
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._port, ssl_context=self._tls)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(
                f"cannot listen on {self.host}:{self._port}: {exc.strerror}"
            ) from None
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        return self.port

    async def stop(self) -> None:
        """Stop listening, let requests in flight finish, close the state."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.service.close()
