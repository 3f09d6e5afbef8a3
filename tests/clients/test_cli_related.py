"""Correlation as a user meets it: `sinergi alert related`, the related alerts of `alert show`
and `alert watch`, and internal affairs' `sinergi audit shown-related`, each a real subprocess
against a real `sinergi serve`."""

from __future__ import annotations

import json
from pathlib import Path

from tests.clients.conftest import last_json, run
from tests.clients.test_cli_alerts import Cli, Served

PASSPORT = "passport=L1000001"


def _publish(cli: Cli, to: str, *flags: str, category: str = "PASSPORT_HOLD") -> str:
    return cli.publish(category, to, "linked by passport", "--subject", PASSPORT, *flags)


def test_related_show_and_watch_list_only_what_the_agency_may_see(served: Served) -> None:
    immigration, police, labour = (Cli(served, a) for a in ("immigration", "police", "labour"))
    red = _publish(immigration, "police", "--tlp", "RED")
    strict = _publish(immigration, "police", "--tlp", "AMBER+STRICT")
    green = police.publish(
        "TRAFFICKING_SUSPECT", "immigration", "green", "--subject", PASSPORT, "--tlp", "GREEN"
    )
    base = _publish(immigration, "labour")

    listed = labour.ok("related", base)
    assert listed["count"] == 1
    [shown] = listed["related"]  # type: ignore[misc]
    assert shown["id"] == green
    assert shown["shared"] == ["IDENTIFIER_KIND_PASSPORT"]
    assert shown["sender_agency"] == "police"
    assert shown["category"] == "CATEGORY_TRAFFICKING_SUSPECT"
    text = labour("related", base)
    assert text.returncode == 0, text.stderr
    assert green in text.stdout
    assert "passport" in text.stdout
    assert red not in text.stdout
    assert strict not in text.stdout

    view = labour.ok("show", base)
    assert [r["id"] for r in view["related"]] == [green]  # type: ignore[index, union-attr]
    human = labour("show", base).stdout
    assert "related (they share a subject identifier):" in human
    assert green in human
    assert red not in human
    assert strict not in human
    # Police, to which RED and AMBER+STRICT were sent, sees them beside its own alert.
    assert {r["id"] for r in police.ok("related", green)["related"]} == {red, strict}  # type: ignore[union-attr, index]

    watched = labour("watch", "--count", "1", "--json")
    assert watched.returncode == 0, watched.stderr
    [line] = [json.loads(text) for text in watched.stdout.splitlines()]
    assert line["alert"]["id"] == base
    assert [r["id"] for r in line["related"]] == [green]
    plain = labour("watch", "--count", "1")
    assert "related (they share a subject identifier):" in plain.stdout
    assert green in plain.stdout
    assert red not in plain.stdout
    bare = labour("watch", "--count", "1", "--no-related", "--json")
    assert "related" not in json.loads(bare.stdout.splitlines()[0])

    # Refusals: an alert labour may not see is NOT_FOUND, a malformed id names its field.
    hidden = labour("related", red, "--json")
    assert hidden.returncode == 1
    assert last_json(hidden)["code"] == "NOT_FOUND"
    bad = labour("related", "not-an-id")
    assert bad.returncode == 1
    assert "  alert_id: is not an alert id" in bad.stderr.splitlines()
    assert labour("related", base, "--limit", "-1").returncode == 2


def test_audit_says_who_was_shown_an_alert_through_correlation(served: Served) -> None:
    _, pki, db = served
    immigration, police, labour = (Cli(served, a) for a in ("immigration", "police", "labour"))
    first = _publish(immigration, "police,labour")
    second = _publish(immigration, "police,labour")
    police.ok("show", second)  # shows `first` as related
    labour.ok("related", second)  # so does this
    labour.ok("show", first)  # shows `second`, not `first`

    key = ["--db", db, "--ledger-key", str(Path(pki) / "ledger.vkey")]
    answer = last_json(run("audit", "shown-related", first, *key, "--json"))
    gateway = "spiffe://sinergi.dev/agency/{}/system/gateway"
    assert answer["principals"] == [gateway.format("labour"), gateway.format("police")]
    shown = answer["shown"]
    assert isinstance(shown, list)
    assert [(s["how"], s["beside"], s["shared"]) for s in shown] == [
        ("READ GetAlert", [second], ["passport"]),
        ("READ GetRelatedAlerts", [second], ["passport"]),
    ]
    text = run("audit", "shown-related", first, *key)
    assert text.returncode == 0, text.stderr
    assert "2 entries, 2 principals" in text.stdout
    never = run("audit", "shown-related", "00000000-0000-4000-8000-000000000000", *key)
    assert "was never shown through correlation" in never.stdout
    # who-accessed counts those showings too.
    accessed = last_json(run("audit", "who-accessed", first, *key, "--json"))
    assert {e["seq"] for e in accessed["entries"]} >= {s["seq"] for s in shown}  # type: ignore[union-attr, index]
