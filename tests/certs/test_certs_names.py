import pytest

from certs import KINDS, CertificateError, CertsError, SpiffeId

GATEWAY = "spiffe://sinergi.dev/agency/immigration/system/gateway"


@pytest.mark.parametrize(
    "uri",
    [
        GATEWAY,
        "spiffe://sinergi.dev/agency/internal-affairs/officer/auditor",
        "spiffe://a/agency/b/system/c",
        "spiffe://prod.sinergi.go.id/agency/police-7/officer/x1-2",
        f"spiffe://{'a' * 253}/agency/{'b' * 63}/system/{'c' * 63}",
    ],
)
def test_parse_str_round_trip(uri):
    parsed = SpiffeId.parse(uri)
    assert str(parsed) == uri
    assert SpiffeId.parse(str(parsed)) == parsed


def test_fields():
    assert SpiffeId.parse(GATEWAY) == SpiffeId("sinergi.dev", "immigration", "system", "gateway")
    assert KINDS == ("system", "officer")


def test_constructor_validates():
    with pytest.raises(CertificateError, match="kind 'robot'"):
        SpiffeId("sinergi.dev", "police", "robot", "x")
    with pytest.raises(CertificateError, match="name ''"):
        SpiffeId("sinergi.dev", "police", "system", "")


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("https://sinergi.dev/agency/police/system/gateway", "must start with 'spiffe://'"),
        ("SPIFFE://sinergi.dev/agency/police/system/gateway", "must start with 'spiffe://'"),
        ("spiffe:/sinergi.dev/agency/police/system/gateway", "must start with 'spiffe://'"),
        ("spiffe://sinergi.dev/agency/police/system/gateway/extra", "expected exactly"),
        ("spiffe://sinergi.dev/agency/police/system", "expected exactly"),
        ("spiffe://sinergi.dev/org/police/system/gateway", "expected exactly"),
        ("spiffe://Sinergi.dev/agency/police/system/gateway", "trust domain 'Sinergi.dev'"),
        ("spiffe://sinergi.dev/agency/Police/system/gateway", "agency 'Police'"),
        ("spiffe://sinergi.dev/agency/police/system/Gateway", "name 'Gateway'"),
        ("spiffe://sinergi.dev/agency/police/robot/gateway", "kind 'robot'"),
        ("spiffe://sinergi.dev/agency/police/System/gateway", "kind 'System'"),
        ("spiffe://sinergi.dev/agency/police/system/", "empty path segment"),
        ("spiffe://sinergi.dev/agency/police/system/gateway/", "empty path segment"),
        ("spiffe://sinergi.dev//agency/police/system/gateway", "empty path segment"),
        ("spiffe://sinergi.dev/agency/police/system/gateway?x=1", "a query"),
        ("spiffe://sinergi.dev/agency/police/system/gateway#f", "a fragment"),
        ("spiffe://sinergi.dev:8443/agency/police/system/gateway", "a port"),
        ("spiffe://svc@sinergi.dev/agency/police/system/gateway", "userinfo"),
        ("spiffe://sinergi.dev/agency/pol%69ce/system/gateway", "percent-encoding"),
        ("spiffe:///agency/police/system/gateway", "no trust domain"),
        ("spiffe://sinergi.dev", "no path"),
        ("spiffe://-sinergi.dev/agency/police/system/gateway", "trust domain"),
        (f"spiffe://{'a' * 254}/agency/police/system/gateway", "trust domain"),
        ("spiffe://sinergi.dev/agency/-police/system/gateway", "agency '-police'"),
        ("spiffe://sinergi.dev/agency/police-/system/gateway", "agency 'police-'"),
        (f"spiffe://sinergi.dev/agency/police/system/{'a' * 64}", "name 'a"),
        ("spiffe://sinergi.dev/agency/police/system/gate_way", "name 'gate_way'"),
        ("spiffe://sinergi.dev/agency/police/system/..", "name '..'"),
        ("spiffe://sinergi.dev/agency/police/system/gateway\n", "name 'gateway\\\\n'"),
        ("spiffe://sinergi.dev/agency/pol\u0131ce/system/gateway", "agency"),
        (" spiffe://sinergi.dev/agency/police/system/gateway", "must start with"),
    ],
)
def test_bad_uri_rejected(uri, reason):
    with pytest.raises(CertificateError, match=reason) as caught:
        SpiffeId.parse(uri)
    assert isinstance(caught.value, CertsError)
