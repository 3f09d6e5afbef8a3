"""The exchange's TLS as any TLS client sees it, with `openssl s_client`."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import RunningServer, require_tool


@pytest.fixture(autouse=True)
def _openssl() -> None:
    require_tool("openssl", install="Debian: apt-get install openssl")


def s_client(
    server: RunningServer, *args: str, who: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Handshake, send the HTTP/2 preface, and close (or, with -ign_eof, read until the server
    hangs up)."""
    identity = (
        ["-cert", str(server.pki / who / "tls.crt"), "-key", str(server.pki / who / "tls.key")]
        if who
        else []
    )
    return subprocess.run(
        ["openssl", "s_client", "-connect", server.address, "-CAfile",
         str(server.pki / "ca.crt"), "-alpn", "h2", "-verify_return_error", *identity, *args],
        input="PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", capture_output=True, encoding="utf-8",
        errors="replace", timeout=10, check=False,
    )  # fmt: skip


def test_without_a_client_certificate_the_handshake_fails(server: RunningServer) -> None:
    # TLS 1.2: the server hangs up in the handshake (PEER_DID_NOT_RETURN_A_CERTIFICATE).
    result = s_client(server, "-tls1_2")
    assert result.returncode != 0
    assert "unexpected eof" in result.stderr or "alert" in result.stderr, result.stderr
    # TLS 1.3: the client finishes first; the server hangs up instead of answering.
    result = s_client(server, "-ign_eof")
    assert result.returncode != 0
    assert "unexpected eof" in result.stderr or "alert" in result.stderr, result.stderr


def test_tls_1_1_is_refused(server: RunningServer) -> None:
    result = s_client(server, "-tls1_1", who="police")
    assert result.returncode != 0
    assert "Cipher is (NONE)" in result.stdout or "alert" in result.stderr, result.stderr


@pytest.mark.parametrize("version", ["-tls1_2", "-tls1_3"])
def test_with_a_valid_client_certificate_it_succeeds(server: RunningServer, version: str) -> None:
    result = s_client(server, version, who="police")
    assert result.returncode == 0, result.stderr
    assert "Verify return code: 0 (ok)" in result.stdout, result.stdout
    assert "ALPN protocol: h2" in result.stdout
    assert "alert" not in result.stderr, result.stderr
