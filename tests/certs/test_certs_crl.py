"""CRLs taken into force per issuer: numbers never go back (RFC 5280 5.2.3), a refused CRL keeps
the issuer's previous one, and the highest number accepted is kept in a file."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from certs import (
    CaScope,
    CertsError,
    CrlNumbers,
    CrlRefused,
    CrlSet,
    SpiffeId,
    build_crl,
    create_agency_ca,
    create_ca,
    issue_client,
    verify_crl,
)
from certs._crl import RevocationRecord
from tests.certs.conftest import TD


@pytest.fixture(scope="module")
def immigration(root):
    return create_agency_ca(root, "immigration")


@pytest.fixture(scope="module")
def trusted(root, police, immigration):
    return [root.certificate, police.certificate, immigration.certificate]


@pytest.fixture(scope="module")
def budi(police):
    return issue_client(police, SpiffeId(TD, "police", "officer", "budi")).certificate


def revoked(cert) -> RevocationRecord:
    return RevocationRecord(cert.serial_number, "keyCompromise", cert.not_valid_before_utc, "", "")


def test_a_lower_number_is_refused_and_the_newer_crl_stays(police, immigration, trusted, budi):
    old = build_crl(police, [], number=1)
    new = build_crl(police, [revoked(budi)], number=2)
    other = build_crl(immigration, [], number=5)
    first = CrlSet.load([new, other], trusted)
    assert first.of(police.certificate.subject).revoked == {budi.serial_number: "keyCompromise"}
    again = CrlSet.load([old, other], trusted, previous=first)
    assert [(r.reason, r.issuer) for r in again.refused] == [
        ("rollback", police.certificate.subject)
    ]
    assert again.of(police.certificate.subject) is first.of(police.certificate.subject)
    # After a restart (no previous set), the remembered number refuses it alike: no CRL.
    restarted = CrlSet.load([old, other], trusted, highest=numbers_of(first))
    assert restarted.of(police.certificate.subject) is None
    assert restarted.of(immigration.certificate.subject) is not None


def numbers_of(crls: CrlSet) -> dict[str, int]:
    return {crl.name: crl.number for crl in crls.crls.values()}


def test_the_highest_number_of_one_issuer_wins_and_a_dropped_issuer_has_none(
    police, immigration, trusted
):
    two, three = build_crl(police, [], number=2), build_crl(police, [], number=3)
    loaded = CrlSet.load([three, two, build_crl(immigration, [], number=1)], trusted)
    assert loaded.of(police.certificate.subject).number == 3
    assert [r.reason for r in loaded.refused] == ["rollback"]
    dropped = CrlSet.load([build_crl(immigration, [], number=2)], trusted, previous=loaded)
    assert dropped.of(police.certificate.subject) is None
    assert dropped.refused == ()


def test_a_file_with_nothing_acceptable_keeps_the_previous_set(police, root, trusted):
    first = CrlSet.load([build_crl(police, [], number=4)], trusted)
    impostor = create_agency_ca(root, "police")  # the same name, another key
    forged = CrlSet.load([build_crl(impostor, [], number=9)], trusted, previous=first)
    assert forged.crls == first.crls
    assert [r.reason for r in forged.refused] == ["bad_signature"]


def test_each_refusal_has_its_reason(police, trusted):
    stranger = create_ca("Stranger", scope=CaScope(TD))
    with pytest.raises(CrlRefused) as unknown:
        verify_crl(build_crl(stranger, [], number=1), trusted)
    assert unknown.value.reason == "unknown_issuer"
    now = datetime.now(UTC)
    no_number = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(police.certificate.subject)
        .last_update(now)
        .next_update(now + timedelta(days=1))
        .sign(police.private_key, hashes.SHA256())
    )
    with pytest.raises(CrlRefused, match="has no CRL number") as incomplete:
        verify_crl(no_number, trusted)
    assert incomplete.value.reason == "incomplete"


def test_next_update_and_the_grace(police, trusted):
    now = datetime.now(UTC).replace(microsecond=0)
    late = build_crl(
        police, [], number=1, this_update=now - timedelta(days=9), next_update=now - timedelta(2)
    )
    crl = verify_crl(late, trusted)
    assert crl.next_update == now - timedelta(days=2)
    assert not crl.out_of_date(now, timedelta(days=3))
    assert crl.out_of_date(now, timedelta(days=1))


def test_numbers_are_kept_in_a_file_and_never_lowered(police, immigration, trusted, tmp_path):
    path = tmp_path / "crl.state.json"
    loaded = CrlSet.load(
        [build_crl(police, [], number=7), build_crl(immigration, [], number=3)], trusted
    )
    numbers = CrlNumbers(path)
    assert numbers.highest == {}
    assert len(numbers.remember(loaded.crls.values())) == 2
    assert CrlNumbers(path).highest == {
        police.certificate.subject.rfc4514_string(): 7,
        immigration.certificate.subject.rfc4514_string(): 3,
    }
    # Another process sharing the file raised police to 9 meanwhile: never lowered.
    other = CrlNumbers(path)
    other.remember(CrlSet.load([build_crl(police, [], number=9)], trusted).crls.values())
    numbers.remember(CrlSet.load([build_crl(police, [], number=8)], trusted).crls.values())
    assert CrlNumbers(path).highest[police.certificate.subject.rfc4514_string()] == 9
    assert json.loads(path.read_text())["version"] == 1


def test_an_unreadable_number_file_is_an_error_naming_it(tmp_path):
    path = tmp_path / "crl.state.json"
    path.write_text('{"version": 1, "issuers": {"CN=x": {"number": "many"}}}')
    with pytest.raises(CertsError, match="not a CRL number file"):
        CrlNumbers(path)
