"""The client against an exchange that shows an agency alerts not meant for it.

The exchange decides who sees an alert; a recipient's client cannot hold its policy, but it holds
what the sender signed: the marking and the recipients. An alert whose signed marking and
recipients keep it from the client's agency is refused (:class:`clients.NotForUs`) on every read
path before the caller sees any of it. The lying server here forwards labour's calls to a real
exchange as police, so labour is shown police's view: a TLP:RED alert addressed to police, with
its sender's valid signature, must not pass; a TLP:GREEN one, which the policy may show to any
member, must.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from clients import ExchangeClient, NotForUs, VerificationFailed, new_alert, parse_subjects
from sinergi.v1 import alert_pb2, exchange_pb2
from tests.clients.conftest import run
from tests.clients.lying_server import LyingServer
from tests.conftest import RunningServer, position_of

RED_PASSPORT, GREEN_PASSPORT = "R1234567", "G1234567"


@dataclass
class Shown:
    """A real exchange holding two alerts from immigration to police, and a lying exchange that
    answers labour with what police may see."""

    server: RunningServer
    lying: LyingServer
    pki: Path
    red: str  # TLP:RED, PASSPORT_HOLD, addressed to police only
    green: str  # TLP:GREEN, OTHER, addressed to police only

    def labour(self) -> ExchangeClient:
        return ExchangeClient(self.pki / "labour", self.lying.address)


@pytest.fixture
def shown(
    start_server: Callable[..., RunningServer], sqlite_url: str, pki: Path
) -> Iterator[Shown]:
    server = start_server(sqlite_url)
    with ExchangeClient(pki / "immigration", server.address) as immigration:
        ids = [
            immigration.publish(
                new_alert(
                    category=category,
                    recipients=["police"],
                    handling=handling,
                    summary=f"marked {handling}",
                    subjects=parse_subjects([f"passport={passport}"]),
                )
            ).alert_id
            for category, handling, passport in (
                ("OTHER", "GREEN", GREEN_PASSPORT),
                ("PASSPORT_HOLD", "RED", RED_PASSPORT),
            )
        ]
    lying = LyingServer(server.address, pki, pki / "police")
    lying.start()
    try:
        yield Shown(server, lying, pki, red=ids[1], green=ids[0])
    finally:
        lying.stop()


def _refused_for_labour(caught: pytest.ExceptionInfo[NotForUs], shown: Shown) -> None:
    """Says whose it was, as signed, and nothing of what it says."""
    error = caught.value
    assert isinstance(error, VerificationFailed)
    assert error.details == {
        "alert_id": shown.red,
        "handling": "RED",
        "sender_agency": "immigration",
        "recipients": ["police"],
        "agency": "labour",
    }
    assert "marked RED" not in str(error)
    assert RED_PASSPORT not in str(error)


def test_get_alert_refuses_a_red_alert_for_another_agency(shown: Shown) -> None:
    with shown.labour() as labour:
        with pytest.raises(NotForUs) as caught:
            labour.get_alert(shown.red)
        _refused_for_labour(caught, shown)
        # What the policy may show to every member passes: the client cannot tell otherwise.
        assert labour.get_alert(shown.green).current.summary == "marked GREEN"


def test_list_and_search_refuse_the_page_before_yielding_any_of_it(shown: Shown) -> None:
    with shown.labour() as labour:
        listed = labour.list_alerts()  # newest first: the RED alert, then the GREEN one
        with pytest.raises(NotForUs) as caught:
            next(listed)
        _refused_for_labour(caught, shown)
        with pytest.raises(NotForUs):
            next(labour.search_alerts(passport=RED_PASSPORT))
        only_green = labour.list_alerts(categories=[alert_pb2.CATEGORY_OTHER])
        assert [view.id for view in only_green] == [shown.green]
        assert [view.id for view in labour.search_alerts(passport=GREEN_PASSPORT)] == [shown.green]


def test_subscribe_refuses_a_delivery_its_sender_did_not_address_to_the_agency(
    shown: Shown,
) -> None:
    """Subscribe delivers only what names the agency, whatever the marking: police's GREEN alert
    is refused as well, and one addressed to labour too passes."""
    with ExchangeClient(shown.pki / "immigration", shown.server.address) as immigration:
        both = immigration.publish(
            new_alert(category="OTHER", recipients=["police", "labour"], summary="to both")
        ).alert_id
    # Police's stream, as the lying server forwards it: GREEN, RED, then the one to both.
    after = {name: position_of(shown.server.database, alert_id) for name, alert_id in
             (("green", shown.green), ("red", shown.red))}  # fmt: skip
    with shown.labour() as labour:
        with pytest.raises(NotForUs) as caught:
            next(labour.subscribe(after=after["green"], reconnect=False))
        _refused_for_labour(caught, shown)
        with pytest.raises(NotForUs) as caught:
            next(labour.subscribe(reconnect=False))
        assert caught.value.details["alert_id"] == shown.green
        assert next(labour.subscribe(after=after["red"], reconnect=False)).alert.id == both


def test_the_cli_says_the_alert_was_not_for_the_agency_and_shows_none_of_it(
    shown: Shown,
) -> None:
    common = ["--identity", str(shown.pki / "labour"), "--server", shown.lying.address, "--json"]
    for command in (
        ["alert", "show", shown.red],
        ["alert", "list"],
        ["alert", "search", "--passport", RED_PASSPORT],
    ):
        result = run(*command, *common)
        assert result.returncode == 1, (command, result.stderr)
        [line] = result.stdout.splitlines()
        printed = json.loads(line)
        assert printed["ok"] is False
        assert (printed["alert_id"], printed["agency"]) == (shown.red, "labour")
        assert "not for labour" in printed["error"]
        assert "sinergi: alert " in result.stderr
        printed_text = result.stdout + result.stderr
        assert "marked RED" not in printed_text
        assert RED_PASSPORT not in printed_text
    shown_green = run("alert", "show", shown.green, *common)
    assert shown_green.returncode == 0, shown_green.stderr


def test_a_lie_rewritten_into_the_answer_is_refused_too(shown: Shown) -> None:
    """The exchange rewrites the message's recipients to name labour: the signature no longer
    matches, so the lie is caught one step earlier."""

    def readdressed(view: exchange_pb2.AlertView) -> None:
        for message in [view.current, *view.history]:
            message.recipients.append("labour")

    shown.lying.tamper = {"GetAlert": readdressed}
    with shown.labour() as labour, pytest.raises(VerificationFailed):
        labour.get_alert(shown.red)
