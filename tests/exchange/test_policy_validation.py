"""Policy parsing (deny by default, precise errors) and request validation (every bad field)."""

from __future__ import annotations

import re

import pytest

from certs import SpiffeId
from exchange import DEFAULT_POLICY, ConfigError, InvalidArgument, PermissionDenied, Policy
from exchange._policy import ACTIONS, ROLES
from exchange._validate import luhn_ok, validate_acknowledge, validate_publish
from sinergi.v1 import alert_pb2, exchange_pb2, ledger_pb2


def test_development_policy_loads_and_has_a_stable_digest() -> None:
    policy = Policy.load(DEFAULT_POLICY)
    assert set(policy.agencies) == {
        "immigration",
        "police",
        "customs",
        "labour",
        "internal-affairs",
    }
    assert len(policy.digest) == 64
    assert Policy.load(DEFAULT_POLICY).digest == policy.digest


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"version": 2, "agencies": {"a": {}}}, "'version' must be 1"),
        ({"version": 1}, "must name at least one agency"),
        ({"version": 1, "agencies": {"Bad_Name": {}}}, "not a valid agency name"),
        ({"version": 1, "agencies": {"a": {"rolez": []}}}, "unknown key 'rolez'"),
        ({"version": 1, "agencies": {"a": {"roles": ["admin"]}}}, "unknown value 'admin'"),
        ({"version": 1, "agencies": {"a": {"publish": ["SPAM"]}}}, "agencies.a.publish"),
        ({"version": 1, "agencies": {}, "extra": 1}, "unknown key 'extra'"),
    ],
)
def test_policy_errors_name_the_bad_key(doc: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Policy.parse(doc, "0" * 64)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"officers": ["admin"]}, "agencies.a.officers: unknown value 'admin'"),
        ({"systems": "publisher"}, "agencies.a.systems: must be a list of strings"),
        ({"principals": ["officer/budi"]}, "agencies.a.principals: must be a table"),
        ({"principals": {"budi": ["read"]}}, "'budi' is not <kind>/<name>"),
        ({"principals": {"robot/budi": ["read"]}}, "'robot/budi' is not <kind>/<name>"),
        ({"principals": {"officer/Budi": ["read"]}}, "'officer/Budi' is not <kind>/<name>"),
        ({"principals": {"officer/budi": ["root"]}}, "principals.'officer/budi': unknown value"),
    ],
)
def test_grant_errors_name_the_bad_key(entry: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        Policy.parse({"version": 1, "agencies": {"a": {"roles": ["searcher"], **entry}}}, "0")


def _calls(policy: Policy, who: str) -> set[str]:
    """The methods of both services that ``who`` is not refused by its grant."""
    allowed = set()
    for service in (exchange_pb2.DESCRIPTOR, ledger_pb2.DESCRIPTOR):
        for described in service.services_by_name.values():
            for method in described.methods:
                try:
                    path = f"/{described.full_name}/{method.name}"
                    policy.authorize_call(SpiffeId.parse(who), path)
                except PermissionDenied:
                    continue
                allowed.add(method.name)
    return allowed


WITNESSING = {"GetCheckpoint", "GetConsistencyProof"}
EVERY_EXCHANGE_METHOD = set(exchange_pb2.DESCRIPTOR.services_by_name["Exchange"].methods_by_name)


def test_a_policy_without_grants_gives_officers_reading_and_systems_their_roles() -> None:
    """Policy files from before per-identity grants stay valid and get the safe defaults: an
    officer reads, searches, acknowledges (and audits in an auditing agency); a system does
    whatever its agency's roles allow (a method the roles do not allow is the servicer's to
    refuse, naming the role)."""
    agencies = {
        "police": {"roles": ["publisher", "recipient", "searcher"]},
        "ia": {"roles": ["auditor"]},
    }
    policy = Policy.parse({"version": 1, "agencies": agencies}, "0" * 64)
    td = "spiffe://sinergi.dev/agency"
    audit = {"GetEntries", "GetEntryPages", "GetInclusionProof"}
    ledger_reads = {"GetAlertProof", "GetEnvelopes"}  # read (a proof), monitor (a recipient's)
    reading = {
        "GetAlertProof",
        "GetAlert",
        "ListAlerts",
        "ListAcknowledgements",
        "GetRelatedAlerts",
        "SearchAlerts",
        "Acknowledge",
    }
    assert _calls(policy, f"{td}/police/officer/budi") == reading | audit | WITNESSING
    every = EVERY_EXCHANGE_METHOD | audit | ledger_reads | WITNESSING
    assert _calls(policy, f"{td}/police/system/gateway") == every
    assert _calls(policy, f"{td}/ia/officer/auditor") == every
    with pytest.raises(PermissionDenied, match="'nobody' is not a member"):
        policy.authorize_call(SpiffeId.parse(f"{td}/nobody/system/gateway"), "/x/GetAlert")


def test_every_method_of_the_services_is_granted_by_some_action_or_to_every_member() -> None:
    """Deny by default must never meet a method of ours by accident: each names an action."""
    policy = Policy.parse(
        {"version": 1, "agencies": {"a": {"roles": sorted(ROLES), "officers": []}}}, "0" * 64
    )
    officer, system = (
        "spiffe://sinergi.dev/agency/a/officer/x",
        "spiffe://sinergi.dev/agency/a/system/x",
    )
    assert _calls(policy, officer) == WITNESSING
    methods = {
        method.name
        for service in (exchange_pb2.DESCRIPTOR, ledger_pb2.DESCRIPTOR)
        for described in service.services_by_name.values()
        for method in described.methods
    }
    assert _calls(policy, system) == methods
    assert {m for methods in ACTIONS.values() for m in methods} | WITNESSING == methods


def test_policy_denies_by_default() -> None:
    policy = Policy.parse(
        {"version": 1, "agencies": {
            "a": {"roles": ["publisher"], "publish": ["OTHER"]},
            "b": {"roles": ["recipient"], "receive": ["OTHER"]},
            "c": {"roles": ["recipient"]},
        }},
        "0" * 64,
    )  # fmt: skip
    policy.authorize_publish("a", "OTHER", ["b"])
    with pytest.raises(PermissionDenied, match="not a member"):
        policy.authorize_publish("zz", "OTHER", ["b"])
    with pytest.raises(PermissionDenied, match="may not publish"):
        policy.authorize_publish("a", "IMEI_FRAUD", ["b"])
    with pytest.raises(PermissionDenied, match="c may not receive OTHER"):
        policy.authorize_publish("a", "OTHER", ["b", "c"])
    with pytest.raises(InvalidArgument) as unknown:
        policy.authorize_publish("a", "OTHER", ["b", "a"])  # a is not a recipient
    assert unknown.value.violations == (
        ("alert.recipients[1]", "'a' is not a recipient agency of this exchange"),
    )
    with pytest.raises(PermissionDenied, match="recipient role"):
        policy.authorize_receive("a")


@pytest.mark.parametrize(
    ("imei", "ok"),
    [("490154203237518", True), ("490154203237519", False), ("356938035643809", True)],
)
def test_luhn(imei: str, ok: bool) -> None:
    assert luhn_ok(imei) is ok


def _request(**alert: object) -> exchange_pb2.PublishRequest:
    fields: dict[str, object] = {
        "status": alert_pb2.STATUS_ACTUAL,
        "message_type": alert_pb2.MESSAGE_TYPE_ALERT,
        "category": alert_pb2.CATEGORY_PASSPORT_HOLD,
        "severity": alert_pb2.SEVERITY_UNKNOWN,
        "urgency": alert_pb2.URGENCY_UNKNOWN,
        "certainty": alert_pb2.CERTAINTY_UNKNOWN,
        "handling": alert_pb2.TLP_AMBER,
        "recipients": ["police"],
        "summary": "held",
    }
    fields.update(alert)
    return exchange_pb2.PublishRequest(idempotency_key="k1", alert=alert_pb2.Alert(**fields))  # type: ignore[arg-type]


def _violations(request: exchange_pb2.PublishRequest) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as caught:
        validate_publish(request)
    return dict(caught.value.violations)


def test_a_valid_request_passes() -> None:
    validate_publish(_request())


def test_message_type_empty_means_alert_and_others_are_refused_once() -> None:
    validate_publish(_request(message_type=alert_pb2.MESSAGE_TYPE_UNSPECIFIED))
    for value, description in (
        (alert_pb2.MESSAGE_TYPE_UPDATE, "use Update or Cancel for UPDATE and CANCEL"),
        (alert_pb2.MESSAGE_TYPE_CANCEL, "use Update or Cancel for UPDATE and CANCEL"),
        (7, "is not a known value"),
    ):
        with pytest.raises(InvalidArgument) as caught:
            validate_publish(_request(message_type=value))
        assert caught.value.violations == (("alert.message_type", description),)


def test_every_bad_field_is_reported_with_its_path() -> None:
    person = alert_pb2.Person(passport_number="c-1", nik="1" * 15, nationality="idn",
                              birth_date="2099-01-01")  # fmt: skip
    request = _request(
        id="x", category=99, handling=alert_pb2.TLP_UNSPECIFIED, recipients=["police", "police"],
        subjects=[alert_pb2.Subject(person=person), alert_pb2.Subject()], summary=" ",
        references=["nope"],
    )  # fmt: skip
    request.idempotency_key = ""
    request.alert.sent.GetCurrentTime()
    assert _violations(request) == {
        "idempotency_key": "must be 1-128 printable ASCII characters",
        "alert.id": "is assigned by the exchange; leave it empty",
        "alert.sent": "is assigned by the exchange; leave it empty",
        "alert.category": "is not a known value",
        "alert.handling": "is required",
        "alert.recipients[1]": "is named twice",
        "alert.subjects[0].person.passport_number": "must be 6-9 upper-case letters or digits",
        "alert.subjects[0].person.nik": "must be 16 digits",
        "alert.subjects[0].person.nationality": "must be an ISO 3166-1 alpha-2 country code",
        "alert.subjects[0].person.birth_date": "must be a past date as YYYY-MM-DD",
        "alert.subjects[1]": "must be a person, a device or an organisation",
        "alert.summary": "is required",
        "alert.references[0]": "is not an alert id",
    }


def test_descriptions_never_echo_the_submitted_value() -> None:
    secret = "A1234567890SECRET"
    request = _request(
        subjects=[alert_pb2.Subject(person=alert_pb2.Person(passport_number=secret))]
    )
    assert all(secret not in d for d in _violations(request).values())


def test_acknowledge_validation() -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_acknowledge(
            exchange_pb2.AcknowledgeRequest(alert_id="x", response=alert_pb2.RESPONSE_ACTION_TAKEN)
        )
    assert dict(caught.value.violations) == {
        "alert_id": "is not an alert id",
        "case_reference": "is required when the response is ACTION_TAKEN",
    }


@pytest.mark.parametrize(("code", "valid"), [("ID", True), ("MY", True), ("XX", False),
                                             ("UK", False), ("id", False)])  # fmt: skip
def test_nationality_must_be_an_assigned_country_code(code: str, valid: bool) -> None:
    person = alert_pb2.Person(passport_number="C1234567", nationality=code)
    request = _request(subjects=[alert_pb2.Subject(person=person)])
    if valid:
        validate_publish(request)
    else:
        assert set(_violations(request)) == {"alert.subjects[0].person.nationality"}


@pytest.mark.parametrize(
    ("text", "refused"),
    [
        ("line one\nline two\tindented", False),
        ("café, الجوازات, 护照 \x7f\x85", False),  # DEL and C1 are not refused, as before
        ("bell\x07", True),
        ("nul\x00", True),
        ("carriage return\r\n", True),
        ("escape \x1b[31m", True),
        ("unit separator\x1f", True),
    ],
)
def test_control_characters_other_than_tab_and_newline_are_refused(
    text: str, refused: bool
) -> None:
    request = _request(summary=text, details=text)
    if not refused:
        validate_publish(request)
        return
    assert _violations(request) == {
        "alert.summary": "contains control characters",
        "alert.details": "contains control characters",
    }
