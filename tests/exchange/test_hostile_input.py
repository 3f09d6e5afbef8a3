"""Validation gaps found by the fuzzer (tests/integration/test_fuzz.py), each pinned here."""

from __future__ import annotations

import time

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from exchange import InvalidArgument
from exchange._validate import (
    MAX_FILTERS,
    timestamp_ok,
    validate_list,
    validate_publish,
    validate_subscribe,
)
from sinergi.v1 import alert_pb2, exchange_pb2


def _publish(**alert: object) -> exchange_pb2.PublishRequest:
    base: dict[str, object] = {
        "status": alert_pb2.STATUS_ACTUAL,
        "message_type": alert_pb2.MESSAGE_TYPE_ALERT,
        "category": alert_pb2.CATEGORY_OTHER,
        "severity": alert_pb2.SEVERITY_MINOR,
        "urgency": alert_pb2.URGENCY_FUTURE,
        "certainty": alert_pb2.CERTAINTY_POSSIBLE,
        "handling": alert_pb2.TLP_AMBER,
        "recipients": ["police"],
        "summary": "x",
    }
    base.update(alert)
    return exchange_pb2.PublishRequest(idempotency_key="k", alert=alert_pb2.Alert(**base))


def _fields(request: object, validate: object) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as caught:
        validate(request)  # type: ignore[operator]
    return dict(caught.value.violations)


@pytest.mark.parametrize(
    ("seconds", "nanos", "ok"),
    [
        (0, 0, True),
        (253402300799, 999_999_999, True),
        (-62135596800, 0, True),
        (253402300800, 0, False),
        (-62135596801, 0, False),
        (2**62, 0, False),
        (0, -1, False),
        (0, 10**9, False),
    ],
)
def test_timestamps_outside_protobufs_range_are_refused(seconds: int, nanos: int, ok: bool) -> None:
    assert timestamp_ok(Timestamp(seconds=seconds, nanos=nanos)) is ok


def test_an_absurd_expiry_is_invalid_argument_not_a_crash() -> None:
    request = _publish(expires=Timestamp(seconds=0, nanos=2**31 - 1))
    assert "alert.expires" in _fields(request, validate_publish)


def test_absurd_list_bounds_are_invalid_argument() -> None:
    request = exchange_pb2.ListAlertsRequest(
        sent_after=Timestamp(seconds=2**62), sent_before=Timestamp(seconds=-(2**62))
    )
    assert set(_fields(request, validate_list)) == {"sent_after", "sent_before"}


def test_a_million_recipients_is_refused_at_once() -> None:
    request = _publish(recipients=["police"] * 200_000)
    started = time.perf_counter()
    fields = _fields(request, validate_publish)
    assert time.perf_counter() - started < 1.0  # was quadratic: minutes
    assert fields == {"alert.recipients": "at most 32 agencies"}


def test_huge_filters_are_one_violation() -> None:
    many = [alert_pb2.CATEGORY_OTHER] * (MAX_FILTERS + 1)
    assert _fields(exchange_pb2.SubscribeRequest(categories=many), validate_subscribe) == {
        "categories": f"at most {MAX_FILTERS} values"
    }
    request = exchange_pb2.ListAlertsRequest(categories=[999] * 1_000_000)
    assert _fields(request, validate_list) == {"categories": f"at most {MAX_FILTERS} values"}


@pytest.mark.parametrize(
    "date",
    ["2020-W01-1", "20200101", "2020-001", "\u0661\u0669\u0669\u0660-\u0660\u0661-\u0663\u0661"],
)
def test_birth_dates_are_calendar_dates_only(date: str) -> None:
    person = alert_pb2.Person(name="Siti", birth_date=date)
    request = _publish(subjects=[alert_pb2.Subject(person=person)])
    assert "alert.subjects[0].person.birth_date" in _fields(request, validate_publish)
