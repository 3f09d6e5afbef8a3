import os
import re
import stat
from datetime import UTC, datetime

import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store

from certs import (
    DEV_AGENCIES,
    DEV_AUDITOR_AGENCY,
    DEV_TRUST_DOMAIN,
    DEV_WITNESSES,
    IDENTITY_FILES,
    CertificateError,
    CertsError,
    SpiffeId,
    create_dev_pki,
    load_ca,
    load_identity,
)

SERVERS = {"server", *DEV_WITNESSES.values()}
IDENTITY_DIRS = {*SERVERS, *DEV_AGENCIES, DEV_AUDITOR_AGENCY, "police-officer"}


def tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def pki(tmp_path):
    return create_dev_pki(tmp_path / "dev")


def test_creates_everything(tmp_path, pki):
    root = tmp_path / "dev"
    assert pki.created
    assert pki.directory == root
    assert set(pki.identities) == IDENTITY_DIRS
    assert all(path == root / name for name, path in pki.identities.items())
    expected = {"ca.crt", "ca/ca.crt", "ca/ca.key"} | {
        f"{name}/{file}" for name in IDENTITY_DIRS for file in IDENTITY_FILES
    }
    assert set(tree(root)) == expected

    ca = load_ca(root / "ca")
    assert ca.certificate.subject.rfc4514_string() == "CN=Sinergi Development CA"
    ca_pem = (root / "ca" / "ca.crt").read_bytes()
    assert (root / "ca.crt").read_bytes() == ca_pem
    verifier = PolicyBuilder().store(Store([ca.certificate])).time(datetime.now(UTC))
    for name in IDENTITY_DIRS - SERVERS:
        identity = load_identity(pki.identities[name])
        assert identity.ca_pem == ca_pem
        verifier.build_client_verifier().verify(identity.certificate, [])


def test_principals(pki):
    ids = {name: load_identity(path).spiffe_id for name, path in pki.identities.items()}
    for agency in DEV_AGENCIES:
        assert ids[agency] == SpiffeId(DEV_TRUST_DOMAIN, agency, "system", "gateway")
    assert str(ids[DEV_AUDITOR_AGENCY]) == (
        "spiffe://sinergi.dev/agency/internal-affairs/officer/auditor"
    )
    assert str(ids["police-officer"]) == "spiffe://sinergi.dev/agency/police/officer/investigator"
    assert ids["police-officer"] != ids["police"]
    assert ids["server"] is None
    assert len({load_identity(p).fingerprint for p in pki.identities.values()}) == len(
        IDENTITY_DIRS
    )


def test_server_identity(pki):
    server = load_identity(pki.identities["server"])
    san = server.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    assert server.certificate.subject.rfc4514_string() == "CN=sinergi-exchange"


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_modes(tmp_path, pki):
    root = tmp_path / "dev"
    for path in root.rglob("*"):
        got = stat.S_IMODE(path.stat().st_mode)
        if path.is_dir():
            assert got == 0o700, path
        elif path.suffix == ".key":
            assert got == 0o600, path
        else:
            assert got == 0o644, path
    assert stat.S_IMODE(root.stat().st_mode) == 0o700


def test_second_call_changes_nothing(tmp_path, pki):
    root = tmp_path / "dev"
    before = tree(root)
    again = create_dev_pki(root)
    assert not again.created
    assert again.identities == pki.identities
    assert tree(root) == before


def test_custom_trust_domain(tmp_path):
    pki = create_dev_pki(tmp_path / "dev", trust_domain="test.example")
    spiffe_id = load_identity(pki.identities["customs"]).spiffe_id
    assert spiffe_id == SpiffeId("test.example", "customs", "system", "gateway")


def test_bad_trust_domain_writes_nothing(tmp_path):
    with pytest.raises(CertificateError, match="trust domain"):
        create_dev_pki(tmp_path / "dev", trust_domain="Not Valid")
    assert not (tmp_path / "dev").exists()


@pytest.mark.parametrize("leftover", ["immigration/tls.crt", "ca.crt", "server/tls.key"])
def test_partial_directory_refused(tmp_path, leftover):
    root = tmp_path / "dev"
    (root / leftover).parent.mkdir(parents=True, exist_ok=True)
    (root / leftover).write_bytes(b"left over")
    with pytest.raises(CertsError, match=re.escape(str(root / "ca" / "ca.crt"))) as caught:
        create_dev_pki(root)
    assert str(root / leftover.split("/")[0]) in str(caught.value)
    assert tree(root) == {leftover: b"left over"}


def test_pki_without_its_ca_refused(tmp_path, pki):
    root = tmp_path / "dev"
    for name in ("ca.crt", "ca.key"):
        (root / "ca" / name).unlink()
    before = tree(root)
    with pytest.raises(CertsError, match="refusing to mix"):
        create_dev_pki(root)
    assert tree(root) == before


def test_unrelated_files_allowed(tmp_path):
    root = tmp_path / "dev"
    root.mkdir()
    (root / "ledger.pub").write_bytes(b"ledger key")
    assert create_dev_pki(root).created
    assert (root / "ledger.pub").read_bytes() == b"ledger key"
