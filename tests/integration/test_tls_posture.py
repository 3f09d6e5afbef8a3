"""TLS posture of the exchange's port: TLS 1.2 minimum, 1.3 preferred, AEAD ciphers with forward
secrecy only, and a client certificate required (docs/security.md).

grpcio offers no Python API for protocol versions or ciphers (docs/grpc-python.md), so
this checks what grpc core actually does, from the outside: with Python's ssl module (always), and
with Debian's `sslscan` when it is installed (skipped otherwise, except in CI, where .ci/run
installs it).
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import RunningServer, require_tool

#: What may be offered: TLS 1.3's AEAD suites and TLS 1.2's ECDHE + AES-GCM (grpc core's default
#: list, of which the ECDSA ones apply to the ECDSA server key).
ALLOWED_CIPHERS = {
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES256-GCM-SHA384",
}


@pytest.fixture
def tls_server(start_server: Callable[..., RunningServer], sqlite_url: str) -> RunningServer:
    return start_server(sqlite_url)


def _context(
    pki: Path,
    who: str | None,
    version: ssl.TLSVersion,
    ciphers: str | None = None,
) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(pki / "server" / "ca.crt")
    context.check_hostname = False  # the server certificate names 127.0.0.1; checked by chain
    if who is not None:
        context.load_cert_chain(pki / who / "tls.crt", pki / who / "tls.key")
    if version < ssl.TLSVersion.TLSv1_2:  # OpenSSL 3 refuses old versions at the default level
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.minimum_version = version
    context.maximum_version = version
    if ciphers is not None:
        context.set_ciphers(ciphers)
    context.set_alpn_protocols(["h2"])
    return context


def _handshake(server: RunningServer, context: ssl.SSLContext) -> ssl.SSLSocket:
    """Connect and complete the handshake; in TLS 1.3 the server's verdict on the client
    certificate arrives after it, so read once: an authenticated server sends its HTTP/2
    SETTINGS, a server that refused the client sends an alert or closes."""
    host, port = server.address.rsplit(":", 1)
    raw = socket.create_connection((host, int(port)), timeout=10)
    sock = context.wrap_socket(raw)
    try:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes.fromhex("000000040000000000"))
        if not sock.recv(9):
            raise ConnectionResetError("closed by the server")
    except BaseException:
        sock.close()
        raise
    return sock


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_tls13_is_preferred_and_tls12_is_the_minimum(tls_server: RunningServer) -> None:
    pki = tls_server.pki
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # offers everything it can
    context.load_verify_locations(pki / "server" / "ca.crt")
    context.check_hostname = False
    context.load_cert_chain(pki / "police" / "tls.crt", pki / "police" / "tls.key")
    context.set_alpn_protocols(["h2"])
    host, port = tls_server.address.rsplit(":", 1)
    with context.wrap_socket(socket.create_connection((host, int(port)), timeout=10)) as sock:
        assert sock.version() == "TLSv1.3"
    with _handshake(tls_server, _context(pki, "police", ssl.TLSVersion.TLSv1_2)) as sock:
        assert sock.version() == "TLSv1.2"
        cipher = sock.cipher()
        assert cipher is not None
        assert cipher[0] in ALLOWED_CIPHERS
    for old in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            _handshake(tls_server, _context(pki, "police", old))


def test_weak_tls12_ciphers_are_refused(tls_server: RunningServer) -> None:
    # CBC (no AEAD), static RSA key exchange (no forward secrecy), 3DES: none is accepted.
    for weak in ("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384", "AES128-GCM-SHA256",
                 "DES-CBC3-SHA:@SECLEVEL=0"):  # fmt: skip
        with pytest.raises(ssl.SSLError):
            _handshake(tls_server, _context(tls_server.pki, "police", ssl.TLSVersion.TLSv1_2,
                                            ciphers=weak))  # fmt: skip


def test_a_client_certificate_is_required(tls_server: RunningServer) -> None:
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            _handshake(tls_server, _context(tls_server.pki, None, version))
        with _handshake(tls_server, _context(tls_server.pki, "police", version)):
            pass  # the same connection with a certificate is served


def test_sslscan_finds_no_weak_protocol_or_cipher(tls_server: RunningServer) -> None:
    sslscan = require_tool("sslscan", install="Debian: apt-get install sslscan")
    pki = tls_server.pki
    result = subprocess.run(
        [sslscan, "--no-colour", "--xml=-", "--no-heartbleed",
         f"--certs={pki / 'police' / 'tls.crt'}", f"--pk={pki / 'police' / 'tls.key'}",
         tls_server.address],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    document = ET.fromstring(result.stdout[result.stdout.index("<?xml") :])
    enabled = {
        f"{p.get('type')}{p.get('version')}"
        for p in document.iter("protocol")
        if p.get("enabled") == "1"
    }
    assert enabled == {"tls1.2", "tls1.3"}
    ciphers = {(c.get("sslversion"), c.get("cipher"), c.get("status"))
               for c in document.iter("cipher")}  # fmt: skip
    assert ciphers, "sslscan saw no cipher at all"
    assert {name for _, name, _ in ciphers} <= ALLOWED_CIPHERS
    preferred = {version: name for version, name, status in ciphers if status == "preferred"}
    assert set(preferred) == {"TLSv1.2", "TLSv1.3"}
    renegotiation = document.find(".//renegotiation")
    assert renegotiation is not None
    assert renegotiation.get("supported") == "0"
    # Without a client certificate TLS 1.2 cannot even finish a handshake.
    anonymous = subprocess.run(
        [sslscan, "--no-colour", "--xml=-", "--no-heartbleed", "--no-groups", "--tls12",
         tls_server.address],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    anonymous_doc = ET.fromstring(anonymous.stdout[anonymous.stdout.index("<?xml") :])
    assert list(anonymous_doc.iter("cipher")) == []
