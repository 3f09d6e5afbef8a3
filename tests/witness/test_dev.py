"""The development PKI's witnesses: TLS identities from certs, keys, logs, state and policy from
the witness package; and the exchange's certificate, which is also a client certificate."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

import ledger
from certs import DEV_WITNESSES, create_dev_pki, load_identity
from witness import DEV_WITNESS_PORTS, POLICY_FILE, ConfigError, create_dev_witnesses, load_setup


def usages(directory: Path) -> list[x509.ObjectIdentifier]:
    certificate = load_identity(directory).certificate
    return list(certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_certs_issues_the_witness_identities_and_a_client_capable_exchange(tmp_path: Path) -> None:
    pki = create_dev_pki(tmp_path / "dev")
    assert set(DEV_WITNESSES.values()) <= set(pki.identities)
    for directory in DEV_WITNESSES.values():
        identity = load_identity(pki.identities[directory])
        assert identity.spiffe_id is None  # a server: no SPIFFE ID
        san = identity.certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value
        assert san.get_values_for_type(x509.DNSName) == ["localhost"]
        assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
        assert usages(pki.identities[directory]) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert usages(pki.identities["server"]) == [
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    ]


def test_create_dev_witnesses(pki: Path) -> None:
    made = create_dev_witnesses(pki)
    ledger_vkey = (pki / "ledger.vkey").read_text().strip()
    for name, directory in made.directories.items():
        assert directory == pki / DEV_WITNESSES[name]
        setup = load_setup(directory)
        assert setup.cosigner.name == f"sinergi.dev/witness/{name}"
        assert setup.logs.vkeys() == [ledger_vkey]
    policy = ledger.WitnessPolicy.load(made.policy)
    assert made.policy == pki / POLICY_FILE
    assert [log.verifier_key() for log in policy.logs] == [ledger_vkey]
    assert {name: w.url for name, w in policy.witnesses.items()} == {
        "internal-affairs": "https://127.0.0.1:50061",
        "police": "https://127.0.0.1:50062",
    }
    assert DEV_WITNESS_PORTS == {"internal-affairs": 50061, "police": 50062}
    for name, witness in policy.witnesses.items():
        vkey = (made.directories[name] / "witness.vkey").read_text().strip()
        assert witness.verifier.verifier_key() == vkey
    assert policy.describe() == "2 of (internal-affairs, police)"
    assert not policy.satisfied({"police"})
    assert policy.satisfied({"police", "internal-affairs"})


def test_create_dev_witnesses_again_changes_nothing(pki: Path) -> None:
    create_dev_witnesses(pki)
    files = {p: p.read_bytes() for p in pki.rglob("*") if p.is_file() and p.suffix != ".db"}
    create_dev_witnesses(pki)
    assert {p: p.read_bytes() for p in pki.rglob("*") if p.is_file() and p.suffix != ".db"} == (
        files
    )


def test_create_dev_witnesses_needs_the_ledger_key(tmp_path: Path) -> None:
    create_dev_pki(tmp_path / "dev")
    with pytest.raises(ConfigError, match="write the ledger key first"):
        create_dev_witnesses(tmp_path / "dev")
