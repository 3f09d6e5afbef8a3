import hashlib
import os
import re
import stat

import pytest
from cryptography.hazmat.primitives import serialization

from certs import (
    IDENTITY_FILES,
    CertificateError,
    IdentityError,
    SpiffeId,
    create_ca,
    issue_client,
    issue_server,
    load_ca,
    load_identity,
    write_ca,
    write_identity,
)

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")

GATEWAY = SpiffeId("sinergi.dev", "customs", "system", "gateway")


@pytest.fixture(scope="module")
def ca():
    return create_ca("Test CA")


@pytest.fixture(scope="module")
def issued(ca):
    return issue_client(ca, GATEWAY)


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def snapshot(directory):
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.fixture(params=[0o000, 0o022, 0o077], ids=["umask000", "umask022", "umask077"])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def test_write_identity_modes(tmp_path, ca, issued, umask):
    directory = write_identity(tmp_path / "a" / "customs", issued, ca.certificate)
    assert directory == tmp_path / "a" / "customs"
    assert mode(directory) == 0o700
    assert mode(directory / "tls.key") == 0o600
    assert mode(directory / "tls.crt") == 0o644
    assert mode(directory / "ca.crt") == 0o644
    assert sorted(p.name for p in directory.iterdir()) == sorted(IDENTITY_FILES)


def test_write_ca_modes(tmp_path, ca, umask):
    directory = write_ca(tmp_path / "ca", ca)
    assert mode(directory) == 0o700
    assert mode(directory / "ca.key") == 0o600
    assert mode(directory / "ca.crt") == 0o644
    assert sorted(p.name for p in directory.iterdir()) == ["ca.crt", "ca.key"]


def test_identity_round_trip(tmp_path, ca, issued):
    directory = write_identity(tmp_path / "customs", issued, ca.certificate)
    identity = load_identity(str(directory))
    assert identity.directory == directory
    assert identity.certificate == issued.certificate
    assert identity.cert_pem == issued.cert_pem()
    assert identity.key_pem == issued.key_pem()
    assert identity.ca_pem == ca.cert_pem()
    assert identity.spiffe_id == GATEWAY
    der = issued.certificate.public_bytes(serialization.Encoding.DER)
    assert identity.fingerprint == hashlib.sha256(der).hexdigest()
    assert b"PRIVATE KEY" not in repr(identity).encode()


def test_server_identity_has_no_spiffe_id(tmp_path, ca):
    server = issue_server(ca, common_name="s", dns_names=["localhost"], ip_addresses=[])
    identity = load_identity(write_identity(tmp_path / "server", server, ca.certificate))
    assert identity.spiffe_id is None


def test_write_identity_refuses_to_overwrite(tmp_path, ca, issued):
    directory = write_identity(tmp_path / "customs", issued, ca.certificate)
    before = snapshot(directory)
    other = issue_client(ca, GATEWAY)
    with pytest.raises(IdentityError, match=re.escape(str(directory / "tls.key"))):
        write_identity(directory, other, ca.certificate)
    assert snapshot(directory) == before


def test_write_identity_overwrite(tmp_path, ca, issued):
    directory = write_identity(tmp_path / "customs", issued, ca.certificate)
    other = issue_client(ca, GATEWAY)
    write_identity(directory, other, ca.certificate, overwrite=True)
    assert load_identity(directory).certificate == other.certificate
    assert mode(directory / "tls.key") == 0o600
    assert sorted(p.name for p in directory.iterdir()) == sorted(IDENTITY_FILES)  # no temp files


def test_write_ca_refuses_to_overwrite(tmp_path, ca):
    directory = write_ca(tmp_path / "ca", ca)
    before = snapshot(directory)
    with pytest.raises(IdentityError, match=re.escape(str(directory / "ca.key"))):
        write_ca(directory, create_ca("Another CA"))
    assert snapshot(directory) == before
    write_ca(directory, create_ca("Another CA"), overwrite=True)
    assert snapshot(directory) != before


def test_write_ca_refuses_a_leaf(tmp_path, issued):
    with pytest.raises(CertificateError, match="not a CA"):
        write_ca(tmp_path / "ca", issued)
    assert not (tmp_path / "ca").exists()


def test_ca_round_trip(tmp_path, ca):
    loaded = load_ca(write_ca(tmp_path / "ca", ca))
    assert loaded.certificate == ca.certificate
    assert loaded.private_key.private_numbers() == ca.private_key.private_numbers()
    issue_client(loaded, GATEWAY).certificate.verify_directly_issued_by(ca.certificate)


@pytest.mark.parametrize("name", IDENTITY_FILES)
def test_load_identity_names_the_missing_file(tmp_path, ca, issued, name):
    directory = write_identity(tmp_path / "customs", issued, ca.certificate)
    (directory / name).unlink()
    with pytest.raises(IdentityError) as caught:
        load_identity(directory)
    message = str(caught.value)
    assert str(directory / name) in message
    for other in set(IDENTITY_FILES) - {name}:
        assert str(directory / other) not in message


@pytest.mark.parametrize("name", ["ca.crt", "ca.key"])
def test_load_ca_names_the_missing_file(tmp_path, ca, name):
    directory = write_ca(tmp_path / "ca", ca)
    (directory / name).unlink()
    with pytest.raises(IdentityError, match=re.escape(str(directory / name))):
        load_ca(directory)


def test_load_identity_missing_directory(tmp_path):
    with pytest.raises(IdentityError, match=re.escape(str(tmp_path / "nowhere"))):
        load_identity(tmp_path / "nowhere")


@pytest.mark.parametrize("bad_mode", [0o644, 0o640, 0o604, 0o620])
def test_load_refuses_a_readable_key(tmp_path, ca, issued, bad_mode):
    directory = write_identity(tmp_path / "customs", issued, ca.certificate)
    key = directory / "tls.key"
    key.chmod(bad_mode)
    with pytest.raises(IdentityError, match=re.escape(f"chmod 600 {key}")):
        load_identity(directory)
    key.chmod(0o600)
    assert load_identity(directory).spiffe_id == GATEWAY


def test_load_ca_refuses_a_readable_key(tmp_path, ca):
    directory = write_ca(tmp_path / "ca", ca)
    (directory / "ca.key").chmod(0o644)
    with pytest.raises(IdentityError, match=re.escape(f"chmod 600 {directory / 'ca.key'}")):
        load_ca(directory)


def test_load_refuses_a_mismatched_key(tmp_path, ca, issued):
    directory = write_identity(tmp_path / "customs", issued, ca.certificate)
    other = write_identity(tmp_path / "other", issue_client(ca, GATEWAY), ca.certificate)
    (directory / "tls.key").write_bytes((other / "tls.key").read_bytes())
    with pytest.raises(IdentityError, match="does not match"):
        load_identity(directory)


def test_load_ca_refuses_a_mismatched_key(tmp_path, ca):
    directory = write_ca(tmp_path / "ca", ca)
    (directory / "ca.key").write_bytes(create_ca("Other").key_pem())
    with pytest.raises(IdentityError, match="does not match"):
        load_ca(directory)


@pytest.mark.parametrize(("name", "content"), [("tls.crt", b"junk"), ("ca.crt", b"")])
def test_load_refuses_garbage_certificates(tmp_path, ca, issued, name, content):
    directory = write_identity(tmp_path / "customs", issued, ca.certificate)
    (directory / name).write_bytes(content)
    with pytest.raises(IdentityError, match=re.escape(str(directory / name))):
        load_identity(directory)


def test_load_refuses_an_encrypted_key(tmp_path, ca, issued):
    directory = write_identity(tmp_path / "customs", issued, ca.certificate)
    encrypted = issued.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    (directory / "tls.key").write_bytes(encrypted)
    with pytest.raises(IdentityError, match="not an unencrypted PEM private key"):
        load_identity(directory)


def test_load_ca_refuses_a_leaf(tmp_path, ca, issued):
    directory = write_identity(tmp_path / "customs", issued, ca.certificate)
    (directory / "ca.crt").write_bytes(issued.cert_pem())
    (directory / "ca.key").write_bytes(issued.key_pem())
    (directory / "ca.key").chmod(0o600)
    with pytest.raises(IdentityError, match="not a CA certificate"):
        load_ca(directory)
