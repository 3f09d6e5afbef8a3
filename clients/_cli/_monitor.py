"""`sinergi monitor`: check that every entry addressed to your agency reached it (docs/audit.md,
"Suppression monitor"), and what `alert watch --monitor` shares with it."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import ParamSpec, TypeVar, cast

import click

from clients._cli._common import (
    emit,
    handle_errors,
    identity_option,
    json_option,
    ledger_key_option,
    server_option,
    witness_policy_option,
)
from clients._cli._language import Command
from clients._client import ExchangeClient
from clients._errors import ClientError
from clients._i18n import L_, Text, _, ngettext, translated
from clients._monitor import (
    DEFAULT_GRACE,
    MONITOR_FILE,
    Alarm,
    Confirm,
    Monitor,
    MonitorReport,
    metrics_text,
)
from clients._statefile import replace

P = ParamSpec("P")
R = TypeVar("R")


def monitor_options(fn: Callable[P, R]) -> Callable[P, R]:
    """The options `monitor` and `alert watch --monitor` share."""
    for option in reversed(
        (
            click.option(
                "--monitor-state",
                "state",
                type=click.Path(dir_okay=False, path_type=Path),
                default=None,
                help=L_(
                    "The monitor's state file (default: {file} in the identity directory); a "
                    "watch and `sinergi monitor` share it.",
                    file=MONITOR_FILE,
                ),
            ),
            click.option(
                "--grace",
                type=click.FloatRange(min=0),
                default=DEFAULT_GRACE,
                show_default=True,
                help="Seconds an entry addressed to your agency may go unreceived before it "
                "is an alarm.",
            ),
            click.option(
                "--metrics-file",
                type=click.Path(dir_okay=False, path_type=Path),
                default=None,
                help="Write the monitor's metrics here in Prometheus text format (for "
                "node_exporter's textfile collector).",
            ),
        )
    ):
        fn = option(fn)
    return fn


def alarm_text(alarm: Alarm) -> Text:
    """``alarm.describe()`` (the library's English, which --json keeps) that a person reads
    in the language in force."""
    if alarm.kind == "withheld-entry":
        return L_(
            "SUPPRESSION: ledger entry number {number} addressed to your agency was kept from "
            "the monitor (its number was skipped)",
            number=alarm.number,
        )
    return L_(
        "SUPPRESSION: {action} {id} (thread {thread}), recorded at ledger entry {seq} on "
        "{recorded} for your agency, never reached it",
        action=alarm.action,
        id=alarm.message_id,
        thread=alarm.thread_id,
        seq=alarm.seq,
        recorded=alarm.recorded,
    )


def report_lines(report: MonitorReport) -> str:
    cp = report.checkpoint
    lines = [
        ngettext(
            "checked to cosigned checkpoint {origin} size {size} (from {start}): {found} entry "
            "addressed to your agency, {received} received",
            "checked to cosigned checkpoint {origin} size {size} (from {start}): {found} entries "
            "addressed to your agency, {received} received",
            report.found,
        ).format(
            origin=cp.origin,
            size=cp.size,
            start=report.walked_from,
            found=report.found,
            received=report.received,
        )
    ]
    lines += [
        "  "
        + _("waiting: {action} {id} (entry {seq}, {recorded})").format(
            action=p.action, id=p.message_id, seq=p.seq, recorded=p.recorded
        )
        for p in report.pending
    ]
    if not report.cosigners:
        lines.append(
            _(
                "warning: no witness policy: this checkpoint is the exchange's own word, not "
                "cosigned by witnesses (give --witness-policy)"
            )
        )
    lines += [alarm_text(a).translated() for a in report.alarms]
    if not report.alarms:
        lines.append(_("no suppression found"))
    return "\n".join(lines)


def write_metrics(path: Path | None, report: MonitorReport, agency: str) -> None:
    if path is not None:
        replace(path, metrics_text(report, agency), mode=0o644)


@click.command(cls=Command)
@identity_option
@server_option
@ledger_key_option
@witness_policy_option
@monitor_options
@click.option(
    "--confirm",
    type=click.Choice(["auto", "deliveries", "get"]),
    default="auto",
    show_default=True,
    help="How a received entry is confirmed: by the deliveries a watch with --monitor "
    "recorded, or by GetAlert (auto: deliveries once a watch has recorded some).",
)
@click.option(
    "--clear-alarms",
    is_flag=True,
    help="After reporting them, drop the standing alarms (once they are investigated).",
)
@json_option
@handle_errors
def monitor(
    identity: str,
    server: str,
    ledger_key: str | None,
    witness_policy: str | None,
    state: Path | None,
    grace: float,
    metrics_file: Path | None,
    confirm: str,
    clear_alarms: bool,
    as_json: bool,
) -> None:
    """Check that every alert addressed to your agency reached it.

    Walks the ledger from the checkpoint checked last to the newest one the witnesses
    cosigned (refused without their quorum, or when inconsistent with the last), fetches the
    entries addressed to your agency with their inclusion proofs, and compares them with
    what your agency received. An entry not received within --grace seconds, or one the
    exchange kept from the monitor, is a suppression alarm: printed, exit status 1.

    \b
    Example:
      sinergi monitor --identity certs/dev/police --metrics-file /var/lib/node_exporter/sinergi.prom
    """
    with ExchangeClient(
        identity, server, ledger_key=ledger_key, witness_policy=witness_policy
    ) as client:
        watcher = Monitor(client, state, grace=grace, confirm=cast("Confirm", confirm))
        report = watcher.check()
        write_metrics(metrics_file, report, client.agency)
        if clear_alarms:
            watcher.clear_alarms()
    emit(as_json, {"ok": not report.alarms, **report.to_json()}, report_lines(report))
    if report.alarms:
        raise SystemExit(1)


def start_watch_monitor(
    client: ExchangeClient,
    state: Path | None,
    *,
    grace: float,
    interval: float,
    metrics_file: Path | None,
    as_json: bool,
) -> tuple[Monitor, threading.Event]:
    """For `alert watch --monitor`: a monitor confirming by this watch's deliveries, checked
    every ``interval`` seconds on a thread; each alarm is raised once here, on stderr (and as a
    JSON line with --json). Set the returned event to stop it."""
    watcher = Monitor(client, state, grace=grace, confirm="deliveries")
    stop = threading.Event()
    raised: set[tuple[str, int]] = set()

    def run() -> None:
        while not stop.wait(interval):
            try:
                report = watcher.check()
            except ClientError as exc:  # loud, and the watch goes on receiving
                why = str(exc) if exc.violations else translated(exc.message)
                error = _("monitor: {error}").format(error=why)
                click.echo(click.style(f"sinergi: {error}", fg="red"), err=True)
                continue
            write_metrics(metrics_file, report, client.agency)
            for alarm in report.alarms:
                if (alarm.kind, alarm.number) in raised:
                    continue
                raised.add((alarm.kind, alarm.number))
                shown = alarm_text(alarm).translated()
                click.echo(click.style(shown, fg="red", bold=True), err=True)
                if as_json:
                    click.echo(json.dumps({"alarm": alarm.describe(), **asdict(alarm)}))

    threading.Thread(target=run, name="sinergi-monitor", daemon=True).start()
    return watcher, stop
