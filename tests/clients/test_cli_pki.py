"""`sinergi pki`: a deployment PKI from the command line, as an operator would build one."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509

from certs import Pki, ca_scope_of, load_crls, load_identity, read_certificates
from clients._cli import cli


def sinergi(*args: str, code: int = 0) -> dict[str, object]:
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == code, (result.output, result.stderr)
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


@pytest.fixture
def deployment(tmp_path: Path) -> Path:
    directory = tmp_path / "pki"
    sinergi("pki", "init", "--dir", str(directory), "--trust-domain", "timpora.test")
    sinergi("pki", "agency-ca", "police", "--dir", str(directory))
    return directory


def test_init_agency_ca_issue(deployment: Path, tmp_path: Path) -> None:
    out = tmp_path / "budi"
    result = sinergi(
        "pki",
        "issue",
        "officer",
        "budi",
        "--agency",
        "police",
        "--out",
        str(out),
        "--dir",
        str(deployment),
        "--days",
        "90",
    )
    cert = result["certificate"]
    assert isinstance(cert, dict)
    assert cert["identity"] == "spiffe://timpora.test/agency/police/officer/budi"
    identity = load_identity(out)
    assert str(identity.spiffe_id) == cert["identity"]
    # tls.crt: the leaf, then the agency CA that issued it; ca.crt: root and agency CAs.
    chain = read_certificates(out / "tls.crt")
    assert [str(ca_scope_of(c)) for c in chain[1:]] == ["spiffe://timpora.test/agency/police"]
    agency_ca = chain[1]
    assert (
        agency_ca.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    )
    constraints = agency_ca.extensions.get_extension_for_class(x509.NameConstraints)
    assert constraints.critical
    assert constraints.value.permitted_subtrees == [x509.UniformResourceIdentifier("timpora.test")]
    assert len(read_certificates(out / "ca.crt")) == 2
    assert stat.S_IMODE((out / "tls.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((deployment / "agencies" / "police" / "ca.key").stat().st_mode) == 0o600
    # OpenSSL agrees: the chain verifies against the root alone, name constraint included.
    verified = subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            str(deployment / "root" / "ca.crt"),
            "-untrusted",
            str(out / "tls.crt"),
            str(out / "tls.crt"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verified.returncode == 0, verified.stderr


def test_refuses_to_overwrite(deployment: Path, tmp_path: Path) -> None:
    failed = sinergi("pki", "init", "--dir", str(deployment), "--trust-domain", "x.test", code=2)
    assert "already holds a root CA" in str(failed["error"])
    failed = sinergi("pki", "agency-ca", "police", "--dir", str(deployment), code=2)
    assert "refusing to replace" in str(failed["error"])
    out = str(tmp_path / "gw")
    args = (
        "pki",
        "issue",
        "system",
        "gw",
        "--agency",
        "police",
        "--out",
        out,
        "--dir",
        str(deployment),
    )
    first = sinergi(*args)
    failed = sinergi(*args, code=2)
    assert "refusing to overwrite" in str(failed["error"])
    second = sinergi(*args, "--force")
    assert first["certificate"] != second["certificate"]


def test_agency_without_ca_and_wrong_kind(deployment: Path, tmp_path: Path) -> None:
    failed = sinergi(
        "pki",
        "issue",
        "system",
        "gw",
        "--agency",
        "customs",
        "--out",
        str(tmp_path / "x"),
        "--dir",
        str(deployment),
        code=2,
    )
    assert "sinergi pki agency-ca customs" in str(failed["error"])
    assert not (tmp_path / "x").exists()


def test_revoke_crl_list(deployment: Path, tmp_path: Path) -> None:
    out = tmp_path / "laptop"
    issued = sinergi(
        "pki",
        "issue",
        "officer",
        "sari",
        "--agency",
        "police",
        "--out",
        str(out),
        "--dir",
        str(deployment),
    )
    serial = issued["certificate"]["serial"]  # type: ignore[index]
    revoked = sinergi(
        "pki", "revoke", str(serial), "--reason", "keyCompromise", "--dir", str(deployment)
    )
    assert revoked["newly_revoked"] is True
    again = sinergi("pki", "revoke", str(out), "--reason", "superseded", "--dir", str(deployment))
    assert again["newly_revoked"] is False  # the first record stands
    written = sinergi("pki", "crl", "--dir", str(deployment))
    crls = load_crls(Path(str(written["crl"])).read_bytes())
    assert len(crls) == 2  # root and police
    police = next(c for c in crls if "police" in c.issuer.rfc4514_string())
    entry = police.get_revoked_certificate_by_serial_number(int(str(serial), 16))
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == (
        x509.ReasonFlags.key_compromise
    )
    listed = sinergi("pki", "list", "--dir", str(deployment))
    rows = {c["identity"]: c for c in listed["certificates"]}  # type: ignore[union-attr,index]
    assert rows["spiffe://timpora.test/agency/police/officer/sari"]["revoked"] == "keyCompromise"
    assert rows["spiffe://timpora.test/agency/police"]["revoked"] is None
    unknown = sinergi(
        "pki", "revoke", "abcdef", "--reason", "superseded", "--dir", str(deployment), code=2
    )
    assert "no certificate with serial abcdef" in str(unknown["error"])


def test_list_table_and_expiry_warning(deployment: Path, tmp_path: Path) -> None:
    sinergi(
        "pki",
        "issue",
        "officer",
        "soon",
        "--agency",
        "police",
        "--days",
        "5",
        "--out",
        str(tmp_path / "soon"),
        "--dir",
        str(deployment),
    )
    result = CliRunner().invoke(cli, ["pki", "list", "--dir", str(deployment)])
    assert result.exit_code == 0
    header, *rows = result.stdout.splitlines()
    assert header.split() == [
        "SUBJECT",
        "SAN",
        "IDENTITY",
        "SERIAL",
        "ISSUER",
        "NOT",
        "AFTER",
        "REVOKED",
    ]
    serials = {row[header.index("SERIAL") :].split()[0] for row in rows}  # columns aligned
    assert all(int(serial, 16) for serial in serials)
    assert len(serials) == len(rows)
    assert "warning: spiffe://timpora.test/agency/police/officer/soon expires" in result.stderr
    inspected = sinergi("pki", "inspect", str(tmp_path / "soon"))
    assert inspected["expiring"] == [inspected["certificates"][0]["serial"]]  # type: ignore[index]


def test_renew_keeps_names_and_replaces_key(deployment: Path, tmp_path: Path) -> None:
    out = tmp_path / "server"
    sinergi(
        "pki",
        "issue",
        "server",
        "--dns",
        "localhost",
        "--ip",
        "127.0.0.1",
        "--out",
        str(out),
        "--dir",
        str(deployment),
    )
    before = load_identity(out)
    renewed = sinergi("pki", "renew", str(out), "--dir", str(deployment), "--days", "30")
    after = load_identity(out)
    assert renewed["certificate"]["serial"] == f"{after.certificate.serial_number:x}"  # type: ignore[index]
    assert after.certificate.subject == before.certificate.subject
    assert after.key_pem != before.key_pem
    san = x509.SubjectAlternativeName
    assert (
        after.certificate.extensions.get_extension_for_class(san).value
        == before.certificate.extensions.get_extension_for_class(san).value
    )


def test_passphrase_protected_ca(tmp_path: Path) -> None:
    secret = tmp_path / "pass"
    secret.write_text("correct horse\n")
    wrong = tmp_path / "wrong"
    wrong.write_text("battery staple\n")
    directory = str(tmp_path / "pki")
    sinergi(
        "pki",
        "init",
        "--dir",
        directory,
        "--trust-domain",
        "t.test",
        "--passphrase-file",
        str(secret),
    )
    assert b"ENCRYPTED" in (tmp_path / "pki" / "root" / "ca.key").read_bytes()
    failed = sinergi("pki", "agency-ca", "police", "--dir", directory, code=2)
    assert "--passphrase-file" in str(failed["error"])
    failed = sinergi(
        "pki",
        "agency-ca",
        "police",
        "--dir",
        directory,
        "--root-passphrase-file",
        str(wrong),
        code=2,
    )
    assert "wrong passphrase" in str(failed["error"])
    sinergi("pki", "agency-ca", "police", "--dir", directory, "--root-passphrase-file", str(secret))
    assert Pki.open(directory).agencies() == ["police"]


def test_scope_of_ca_certificates(deployment: Path) -> None:
    root = read_certificates(deployment / "root" / "ca.crt")[0]
    assert str(ca_scope_of(root)) == "spiffe://timpora.test"
    bundle = read_certificates(deployment / "ca.crt")
    assert [str(ca_scope_of(c)) for c in bundle] == [
        "spiffe://timpora.test",
        "spiffe://timpora.test/agency/police",
    ]
    assert os.path.exists(deployment / "root" / "issued")
