"""`sinergi audit`: who accessed an alert, what a principal did, refusals, anomalies, a report.

Every command reads the whole ledger from the database (`--db`), an export file (`--file`) or the
exchange (`--server` with an auditor identity, which the exchange records as LEDGER_READ),
verifies it, and answers only from a ledger that verified: an answer from a tampered ledger
would be worse than none.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, time
from pathlib import Path
from typing import Any, ParamSpec, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click
from google.protobuf import json_format

from clients._cli._alert_io import parse_moment, table
from clients._cli._audit_report import render_report
from clients._cli._common import by_name, emit, handle_errors, json_option, spiffe_id
from clients._cli._language import Group
from clients._cli._names import rule
from clients._cli._source import Source, source_options
from clients._errors import UsageError, VerificationFailed
from clients._i18n import L_, N_, _, ngettext
from ledger import (
    Checkpoint,
    DeniedGroup,
    Entry,
    Report,
    Rules,
    VerificationError,
    acted_by,
    activity,
    anomalies,
    denied,
    entry_time,
    meta,
    searches_for,
    shown_related,
    verify_ledger,
    who_accessed,
)
from sinergi.v1 import alert_pb2

P = ParamSpec("P")
R = TypeVar("R")
_sources = source_options(
    file_help=N_("Read an export file (`sinergi ledger export`) instead of the database.")
)
_DEFAULT = Rules()


@dataclass(frozen=True)
class Verified:
    entries: list[Entry]
    report: Report
    source: str


def _load(source: Source) -> Verified:
    verifier = source.verifier()
    with source.open() as whole:
        rows = list(whole.entries())
        checkpoints = whole.checkpoints()
    try:
        report = verify_ledger(rows, checkpoints, [verifier])
    except VerificationError as exc:
        raise VerificationFailed(L_("ledger BROKEN: {why}; no answers from it", why=exc)) from None
    return Verified([Entry.decode(body) for _, _, body in rows], report, source.name)


def _rules_options(fn: Callable[P, R]) -> Callable[P, R]:
    start, end = _DEFAULT.working_hours
    for option in (
        click.option(
            "--factor",
            type=float,
            default=_DEFAULT.factor,
            show_default=True,
            help="Volume rule: this many times the usual level.",
        ),
        click.option(
            "--min-count",
            type=int,
            default=_DEFAULT.min_count,
            show_default=True,
            help="Volume rule: at least this many reads and searches in a window.",
        ),
        click.option(
            "--working-hours",
            default=f"{start:%H:%M}-{end:%H:%M}",
            show_default=True,
            help="Off-hours rule: officers' working hours, local time.",
        ),
        click.option(
            "--timezone",
            "zone",
            default=str(_DEFAULT.timezone),
            show_default=True,
            help="IANA zone of the working hours and windows.",
        ),
    ):
        fn = option(fn)
    return fn


def _rules(factor: float, min_count: int, working_hours: str, zone: str) -> Rules:
    try:
        start, end = (time.fromisoformat(part.strip()) for part in working_hours.split("-"))
    except ValueError:
        raise UsageError(
            L_("--working-hours: {value!r} is not HH:MM-HH:MM", value=working_hours)
        ) from None
    try:
        tz = ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(
            L_("--timezone: unknown zone {zone!r} (e.g. Asia/Jakarta)", zone=zone)
        ) from None
    if factor <= 1 or min_count < 1:
        raise UsageError(L_("--factor must be above 1 and --min-count at least 1"))
    return Rules(factor=factor, min_count=min_count, working_hours=(start, end), timezone=tz)


_ENTRY_HEADERS = (
    N_("SEQ"),
    N_("TIME"),
    N_("ACTION"),
    N_("PRINCIPAL"),
    N_("OBJECTS"),
    N_("OUTCOME"),
)


def _entry_rows(entries: Sequence[Entry]) -> str:
    return table(_ENTRY_HEADERS, map(_entry_row, entries))


def _entry_row(e: Entry) -> list[str]:
    objects = ",".join(e.objects) or "-"
    return [str(e.seq), e.time, e.action.value, ",".join(acted_by(e)), objects, e.outcome.status]


def _covered(report: Report) -> dict[str, Any]:
    cp: Checkpoint | None = report.latest
    return {
        "verified_entries": report.entries,
        "checkpoint_size": cp.size if cp else 0,
        "root": report.root.hex(),
    }


def _counted(entries: int, principals: int) -> str:
    """``N entries, M principals``, in the language in force."""
    return _("{entries}, {principals}").format(
        entries=ngettext("{n} entry", "{n} entries", entries).format(n=entries),
        principals=ngettext("{n} principal", "{n} principals", principals).format(n=principals),
    )


@click.group(cls=Group)
def audit() -> None:
    """Answer internal affairs' questions from a verified ledger."""


@audit.command("who-accessed")
@click.argument("alert_id")
@_sources
@json_option
@handle_errors
def who_accessed_command(alert_id: str, source: Source, as_json: bool) -> None:
    """Every principal that wrote, received, read, searched into, acknowledged or tried to reach
    ALERT_ID (or any update of it).

    \b
    Example:
      sinergi audit who-accessed 5d531be1-c725-4649-be2d-acbf7c61a8b8 --db sqlite:///var/sinergi.db
    """
    verified = _load(source)
    rows = who_accessed(verified.entries, alert_id)
    principals = sorted({who for e in rows for who in acted_by(e)})
    human = f"{_counted(len(rows), len(principals))}\n{_entry_rows(rows)}"
    emit(
        as_json,
        {
            "ok": True,
            "alert": alert_id,
            "principals": principals,
            "entries": [e.to_json() for e in rows],
            **_covered(verified.report),
        },
        human if rows else _("no entry concerns alert {alert_id}").format(alert_id=alert_id),
    )


@audit.command("shown-related")
@click.argument("alert_id")
@_sources
@json_option
@handle_errors
def shown_related_command(alert_id: str, source: Source, as_json: bool) -> None:
    """Every principal shown ALERT_ID (or any update of it) as a related alert through
    correlation: when, beside which alert it was reading or receiving, and which kinds of
    identifier the two share (never the identifier).

    \b
    Example:
      sinergi audit shown-related 5d531be1-c725-4649-be2d-acbf7c61a8b8 --db sqlite:///var/sinergi.db
    """
    verified = _load(source)
    found = shown_related(verified.entries, alert_id)
    principals = sorted({who for shown in found for who in shown.principals})

    def how(entry: Entry) -> str:
        method = entry.meta.get(meta.METHOD)
        return f"{entry.action.value} {method}" if method else entry.action.value

    rows = (
        [
            str(s.entry.seq),
            s.entry.time,
            ",".join(s.principals),
            how(s.entry),
            ",".join(s.beside) or "-",
            ",".join(s.shared),
        ]
        for s in found
    )
    headers = ("SEQ", "TIME", "PRINCIPAL", "HOW", "BESIDE", "SHARED")
    human = f"{len(found)} entries, {len(principals)} principals\n{table(headers, rows)}"
    emit(
        as_json,
        {
            "ok": True,
            "alert": alert_id,
            "principals": principals,
            "shown": [
                {
                    "seq": s.entry.seq,
                    "time": s.entry.time,
                    "how": how(s.entry),
                    "principals": list(s.principals),
                    "beside": list(s.beside),
                    "shared": list(s.shared),
                    "entry": s.entry.to_json(),
                }
                for s in found
            ],
            **_covered(verified.report),
        },
        human if found else f"alert {alert_id} was never shown through correlation",
    )


@audit.command("activity")
@click.argument("principal", required=False, default="")
@click.option("--agency", default="", help="Every principal of this agency instead.")
@click.option("--since", default=None, help="ISO 8601 date or time (inclusive).")
@click.option("--until", default=None, help="ISO 8601 date or time (exclusive; a date: that day).")
@_sources
@json_option
@handle_errors
def activity_command(
    principal: str,
    agency: str,
    since: str | None,
    until: str | None,
    source: Source,
    as_json: bool,
) -> None:
    """What PRINCIPAL (a SPIFFE ID), or a whole --agency, did in a time range.

    \b
    Example:
      sinergi audit activity spiffe://sinergi.dev/agency/police/officer/budi \\
        --since 2026-11-01 --until 2026-11-07 --db sqlite:///var/sinergi.db
    """
    if bool(principal) == bool(agency):
        raise UsageError(L_("name a PRINCIPAL or --agency, not both"))
    start = parse_moment(since, "--since") if since else None
    end = parse_moment(until, "--until", end_of_day=True) if until else None
    verified = _load(source)
    rows = activity(
        verified.entries,
        principals=spiffe_id,
        principal=principal,
        agency=agency,
        since=start,
        until=end,
    )
    emit(
        as_json,
        {"ok": True, "entries": [e.to_json() for e in rows], **_covered(verified.report)},
        _entry_rows(rows) if rows else _("no activity in that range"),
    )


_DENIED_HEADERS = (
    N_("PRINCIPAL"),
    N_("STATUS"),
    N_("COUNT"),
    N_("METHODS"),
    N_("FIRST"),
    N_("LAST"),
    N_("REASON"),
)


def _denied_json(g: DeniedGroup) -> dict[str, Any]:
    return {
        "principal": g.principal,
        "status": g.status,
        "reason": g.reason,
        "count": g.count,
        "first": g.first,
        "last": g.last,
        "methods": sorted(g.methods),
    }


def _denied_row(g: DeniedGroup) -> list[str]:
    methods = ",".join(sorted(g.methods))
    return [g.principal, g.status, str(g.count), methods, g.first, g.last, g.reason]


@audit.command("denied")
@_sources
@json_option
@handle_errors
def denied_command(source: Source, as_json: bool) -> None:
    """Refused attempts, grouped by principal and reason, most frequent first.

    \b
    Example:
      sinergi audit denied --file ledger.jsonl --ledger-key ledger.vkey
    """
    verified = _load(source)
    groups = denied(verified.entries)
    emit(
        as_json,
        {"ok": True, "groups": [_denied_json(g) for g in groups], **_covered(verified.report)},
        table(_DENIED_HEADERS, map(_denied_row, groups)) if groups else _("no refused attempts"),
    )


@audit.command("anomalies")
@_rules_options
@_sources
@json_option
@handle_errors
def anomalies_command(
    factor: float,
    min_count: int,
    working_hours: str,
    zone: str,
    source: Source,
    as_json: bool,
) -> None:
    """Principals worth a look, with the rule that fired: reads and searches far above their own
    and their agency's usual level, officers' lookups outside working hours, searches that found
    alerts not addressed to their agency.

    \b
    Example:
      sinergi audit anomalies --working-hours 07:00-19:00 --db sqlite:///var/sinergi.db
    """
    rules = _rules(factor, min_count, working_hours, zone)
    verified = _load(source)
    found = anomalies(verified.entries, rules, principals=spiffe_id)
    rows = ([a.principal, rule(a.rule), str(len(a.seqs)), a.detail] for a in found)
    emit(
        as_json,
        {
            "ok": True,
            "anomalies": [
                {"principal": a.principal, "rule": a.rule, "detail": a.detail, "seqs": list(a.seqs)}
                for a in found
            ],
            **_covered(verified.report),
        },
        table((N_("PRINCIPAL"), N_("RULE"), N_("ENTRIES"), N_("DETAIL")), rows)
        if found
        else _("no anomalies"),
    )


def _stored_alert(db: str, alert_id: str, kek_file: Path | None) -> bytes:
    """The message as the exchange stores it, read with the exchange's own code
    (:func:`exchange.stored_message`, loaded by name: docs/decisions/0015)."""
    stored_message = by_name("stored_message")
    try:
        body = stored_message(db, alert_id, kek_file)
    except Exception as exc:  # the exchange's typed errors, which clients may not import
        reason = getattr(exc, "reason", None)
        if reason is None:
            raise
        raise UsageError(f"{reason} (in {db})") from None
    assert isinstance(body, bytes)
    return body


_FILE = click.Path(dir_okay=False, exists=True, path_type=Path)


@audit.command("match")
@click.option("--alert", "alert_id", default=None, help="An alert as stored in --db.")
@click.option(
    "--kek-file", type=_FILE, default=None, help="With --alert: the exchange's key-encryption key."
)
@click.option(
    "--alert-file",
    type=_FILE,
    default=None,
    help="A retained copy: the alert as JSON (`alert show --json`'s current or history item).",
)
@click.option("--passport", default=None, help="Test SEARCH entries for this identifier...")
@click.option("--nik", default=None)
@click.option("--imei", default=None)
@click.option("--name", default=None)
@click.option("--birth-date", default=None)
@_sources
@json_option
@handle_errors
def match_command(
    alert_id: str | None,
    kek_file: Path | None,
    alert_file: Path | None,
    passport: str | None,
    nik: str | None,
    imei: str | None,
    name: str | None,
    birth_date: str | None,
    source: Source,
    as_json: bool,
) -> None:
    """Prove which entries concerned a given alert or identifier: the ledger keeps digests, so
    recompute them from the alert as stored, a retained copy, or a candidate identifier.

    \b
    Examples:
      sinergi audit match --alert 5d531be1-c725-4649-be2d-acbf7c61a8b8 --db sqlite:///var/sinergi.db
      sinergi audit match --passport C1234567 --file ledger.jsonl
    """
    identifiers = {"passport": passport, "nik": nik, "imei": imei}
    if name or birth_date:
        identifiers["person"] = f"{name or ''}|{birth_date or ''}"
    given = [k for k, v in identifiers.items() if v]
    if sum(map(bool, (alert_id, alert_file, given))) != 1 or len(given) > 1:
        raise UsageError(L_("give one of --alert, --alert-file, or one identifier"))
    verified = _load(source)
    if given:
        kind = given[0]
        rows = searches_for(verified.entries, kind, str(identifiers[kind]))
        what = ngettext(
            "{n} search for that {kind}", "{n} searches for that {kind}", len(rows)
        ).format(n=len(rows), kind=kind)
        none = _("no searches for that {kind}").format(kind=kind)
    else:
        body = _stored_alert(source.db, alert_id, kek_file) if alert_id else _read_copy(alert_file)
        digest = hashlib.sha256(body).hexdigest()
        rows = [e for e in verified.entries if e.digest == digest]
        what = ngettext(
            "{n} entry with digest {digest}", "{n} entries with digest {digest}", len(rows)
        ).format(n=len(rows), digest=digest)
        none = _("no entries with digest {digest}").format(digest=digest)
    emit(
        as_json,
        {"ok": True, "entries": [e.to_json() for e in rows], **_covered(verified.report)},
        f"{what}\n{_entry_rows(rows)}" if rows else none,
    )


def _read_copy(path: Path | None) -> bytes:
    assert path is not None
    try:
        message = json_format.Parse(path.read_text(encoding="utf-8"), alert_pb2.Alert())
    except (OSError, ValueError, json_format.ParseError) as exc:
        raise UsageError(L_("{path}: not an alert as JSON ({why})", path=path, why=exc)) from None
    return message.SerializeToString(deterministic=True)


@audit.command("report")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Where to write the HTML report.",
)
@_rules_options
@_sources
@json_option
@handle_errors
def report_command(
    out: Path,
    factor: float,
    min_count: int,
    working_hours: str,
    zone: str,
    source: Source,
    as_json: bool,
) -> None:
    """A self-contained HTML report (no network) for a case file: the verification result, the
    checkpoint it covers, activity per agency per day, refused attempts and anomalies.

    \b
    Example:
      sinergi audit report --out report.html --db sqlite:///var/sinergi.db
    """
    rules = _rules(factor, min_count, working_hours, zone)
    verified = _load(source)
    found = anomalies(verified.entries, rules, principals=spiffe_id)
    html = render_report(
        verified.entries,
        verified.report,
        denied(verified.entries),
        found,
        rules,
        principals=spiffe_id,
        source=verified.source,
        generated=datetime.now(rules.timezone),
    )
    out.write_text(html, encoding="utf-8")
    first = entry_time(verified.entries[0]).isoformat() if verified.entries else "-"
    emit(
        as_json,
        {"ok": True, "out": str(out), "anomalies": len(found), **_covered(verified.report)},
        ngettext(
            "wrote {out}: {entries} entries verified since {first}, {n} anomaly",
            "wrote {out}: {entries} entries verified since {first}, {n} anomalies",
            len(found),
        ).format(out=out, entries=verified.report.entries, first=first, n=len(found)),
    )


__all__ = ["audit"]
