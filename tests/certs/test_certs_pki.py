import pytest
from cryptography import x509

from certs import (
    CaScope,
    CertificateError,
    SpiffeId,
    build_crl,
    ca_scope_of,
    create_agency_ca,
    create_ca,
    issue_client,
    issue_server,
    load_crls,
    parse_reason,
    verify_crl,
)
from certs._crl import RevocationRecord, crl_pem
from tests.certs.conftest import TD

OFFICER = SpiffeId(TD, "police", "officer", "budi")


@pytest.mark.parametrize(
    "uri", [f"spiffe://{TD}", f"spiffe://{TD}/agency/police", f"spiffe://{TD}/development"]
)
def test_scope_round_trip(uri):
    assert str(CaScope.parse(uri)) == uri


@pytest.mark.parametrize(
    "uri", [f"spiffe://{TD}/agency", f"spiffe://{TD}/agency/Police", "https://x/agency/p"]
)
def test_scope_refuses(uri):
    with pytest.raises(CertificateError):
        CaScope.parse(uri)


def test_agency_ca_profile(root, police):
    cert = police.certificate
    assert ca_scope_of(cert) == CaScope(TD, "police")
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    assert police.chain == ()
    cert.verify_directly_issued_by(root.certificate)


def test_agency_ca_issues_its_agency_only(police):
    leaf = issue_client(police, OFFICER)
    assert leaf.chain == (police.certificate,)
    with pytest.raises(CertificateError, match="may issue for agency 'police' only"):
        issue_client(police, SpiffeId(TD, "immigration", "system", "gateway"))
    with pytest.raises(CertificateError, match="trust domain"):
        issue_client(police, SpiffeId("other.test", "police", "system", "gateway"))
    with pytest.raises(CertificateError, match="does not issue server certificates"):
        issue_server(police, common_name="s", dns_names=["localhost"], ip_addresses=[])


def test_root_issues_no_identities_and_only_roots_make_agency_cas(root, police):
    with pytest.raises(CertificateError, match="deployment root"):
        issue_client(root, OFFICER)
    with pytest.raises(CertificateError, match="not a deployment root"):
        create_agency_ca(police, "customs")
    with pytest.raises(CertificateError, match="not a deployment root"):
        create_agency_ca(create_ca("unscoped"), "customs")


def test_chain_signatures(root, police):
    # cryptography's verifier rejects URI name constraints ("unsupported"); OpenSSL and
    # BoringSSL honour them (tests/clients/test_cli_pki.py runs `openssl verify`).
    leaf = issue_client(police, OFFICER)
    leaf.certificate.verify_directly_issued_by(police.certificate)
    police.certificate.verify_directly_issued_by(root.certificate)


def test_crl_round_trip_and_signature_check(root, police):
    leaf = issue_client(police, OFFICER)
    other = issue_client(police, SpiffeId(TD, "police", "system", "gw"))
    record = RevocationRecord(leaf.certificate.serial_number, "keyCompromise",
                              leaf.certificate.not_valid_before_utc, "", "")  # fmt: skip
    crl = build_crl(police, [record], number=3)
    parsed = load_crls(crl_pem(crl) + crl_pem(build_crl(root, [], number=1)))
    revoked = verify_crl(parsed[0], [root.certificate, police.certificate]).revoked
    assert revoked.get(leaf.certificate.serial_number) == "keyCompromise"
    assert revoked.get(other.certificate.serial_number) is None
    assert verify_crl(parsed[1], [root.certificate, police.certificate]).revoked == {}
    assert parsed[0].extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 3
    with pytest.raises(CertificateError, match="not signed by a trusted CA"):
        verify_crl(parsed[0], [root.certificate])
    impostor = create_agency_ca(root, "police")  # same name, other key
    with pytest.raises(CertificateError, match="not signed by a trusted CA"):
        verify_crl(crl, [impostor.certificate])


def test_parse_reason():
    assert parse_reason("key-compromise") == x509.ReasonFlags.key_compromise
    assert parse_reason("cessationOfOperation") == x509.ReasonFlags.cessation_of_operation
    with pytest.raises(CertificateError, match="not one of"):
        parse_reason("lost")
