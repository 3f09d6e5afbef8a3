"""`make demo`: one case from the field, told with the real `sinergi` CLI against a real exchange.

Everything lives in a temporary directory (its own development PKI, SQLite database, and a server
on a free port) that is removed at the end; each step prints the command it runs and what the
command printed. Run it with ``python -m clients.examples.demo`` (``--keep`` keeps the directory).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path

import click

SINERGI = [sys.executable, "-m", "clients"]
PASSPORT = "C7715024"
_LEDGER_TABLES = ("ledger_entries", "ledger_nodes", "ledger_checkpoints", "ledger_cosignatures")
IMEIS = ("356938035643809", "356938035643817")


class Demo:
    """The demo's exchange, and the commands run against it echoed as an operator types them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.pki = root / "pki"
        self.db = f"sqlite:///{root / 'sinergi.db'}"
        # Neither the operator's environment nor their config file may redirect the demo.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SINERGI_")}
        self.env["XDG_CONFIG_HOME"] = str(root)
        self.env["SINERGI_LEDGER_KEY"] = str(self.pki / "ledger.vkey")
        # The story is told, and the CLI's output read (`published <id>`), in English, whatever
        # the operator's locale (docs/i18n.md).
        self.env["SINERGI_LANG"] = "en"
        self.colour = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        self._processes: list[subprocess.Popen[str]] = []

    def say(self, text: str) -> None:
        click.echo()
        click.echo(click.style(f"== {text}", bold=True, fg="cyan") if self.colour else f"== {text}")

    def sinergi(self, *args: str, expect: int = 0, show: bool = True) -> str:
        """Run `sinergi ARGS`, print the command line and its output; return its stdout."""
        shown = " ".join(shlex.quote(a) for a in args).replace(str(self.root), "$DEMO")
        if show:
            click.echo(f"$ sinergi {shown}")
        result = subprocess.run(  # noqa: S603 - our own CLI, arguments from this script
            [*SINERGI, *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
            check=False,
        )
        if show:
            for line in (result.stdout + result.stderr).rstrip().splitlines():
                click.echo(f"  {line}".replace(str(self.root), "$DEMO"))
        if result.returncode != expect:
            raise click.ClickException(
                f"`sinergi {shown}` exited {result.returncode}, expected {expect}:\n"
                f"{result.stderr.strip()}"
            )
        return result.stdout

    def identity(self, who: str) -> str:
        return str(self.pki / who)

    def _background(self, *args: str) -> tuple[subprocess.Popen[str], dict[str, object]]:
        """`sinergi ARGS --json` in the background, and the JSON line it prints once listening."""
        process = subprocess.Popen(  # noqa: S603 - our own CLI
            [*SINERGI, *args, "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=self.env,
        )
        self._processes.append(process)
        assert process.stdout is not None
        line = process.stdout.readline()  # the first line says where it listens, once it does
        if not line:
            raise click.ClickException(f"sinergi {args[0]} exited with {process.wait(30)}")
        return process, json.loads(line)

    @contextmanager
    def exchange(self) -> Iterator[str]:
        """Two witnesses and a `sinergi serve` on free ports; stopped (SIGTERM) on the way out.

        The development witness policy names ports 50061 and 50062; the demo's witnesses listen
        where they can, so its policy file is rewritten with their ports."""
        self._processes = []
        try:
            policy = (self.pki / "witness-policy").read_text()
            for name in ("internal-affairs", "police"):
                directory = str(self.pki / f"witness-{name}")
                _, listening = self._background(
                    "witness", "serve", *flags(dir=directory, listen="127.0.0.1:0")
                )
                policy = re.sub(
                    rf"(witness {name} \S+) https://\S+",
                    rf"\1 https://{listening['listen']}",
                    policy,
                )
            (self.pki / "witness-policy").write_text(policy)
            serve = flags(
                db=self.db,
                pki=str(self.pki),
                listen="127.0.0.1:0",
                witness_policy=str(self.pki / "witness-policy"),
            )
            _, listening = self._background("serve", *serve)
            address = str(listening["listen"])
            self.env["SINERGI_SERVER"] = address
            yield address
        finally:
            for process in reversed(self._processes):
                process.send_signal(signal.SIGTERM)
            for process in self._processes:
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)


def flags(**values: str | Sequence[str]) -> list[str]:
    """``--name value`` for each keyword, in order (``case_ref`` is ``--case-ref``); a sequence
    of values repeats the flag."""
    out: list[str] = []
    for name, value in values.items():
        for one in [value] if isinstance(value, str) else value:
            out += [f"--{name.replace('_', '-')}", one]
    return out


def _first_word_after(output: str, verb: str) -> str:
    """The alert id in ``published <id>`` (the CLI's human output)."""
    for line in output.splitlines():
        if line.startswith(verb + " "):
            return line.split()[1]
    raise click.ClickException(f"no '{verb} <id>' line in:\n{output}")


def story(demo: Demo) -> None:
    demo.say("Setting up: a development PKI and an empty ledger database in $DEMO")
    demo.sinergi("pki", "dev", "--dir", str(demo.pki))
    demo.sinergi("db", "init", "--db", demo.db)
    with demo.exchange() as address:
        click.echo(f"$ export SINERGI_SERVER={address}   # the exchange, on a free port")
        click.echo("$ export SINERGI_LEDGER_KEY=$DEMO/pki/ledger.vkey")
        click.echo(
            "# two witnesses (internal affairs', police's) cosign its checkpoints: "
            "$DEMO/pki/witness-policy"
        )
        played(demo, address)


def played(demo: Demo, address: str) -> None:
    demo.say(
        "Immigration, Batam: a passport applicant was recruited by an unlicensed agent. "
        "The passport is held, and police and labour are told (TLP:AMBER)."
    )
    passport_hold = flags(
        identity=demo.identity("immigration"),
        category="PASSPORT_HOLD",
        to="police,labour",
        tlp="AMBER",
        severity="SEVERE",
        subject=[
            f"passport={PASSPORT},nationality=ID",
            "organisation=CV Mitra Karya Abadi",
        ],
        place="Kantor Imigrasi Kelas I Khusus TPI Batam",
        region="ID-RI",
        summary="Passport applicant recruited by an unlicensed agent; passport held",
    )
    hold = _first_word_after(demo.sinergi("alert", "publish", *passport_hold), "published")

    demo.say(
        "Labour (BP2MI) checks its register: the recruiter holds no licence (ILLEGAL_RECRUITER)."
    )
    unlicensed = flags(
        identity=demo.identity("labour"),
        category="ILLEGAL_RECRUITER",
        to="immigration",
        tlp="AMBER+STRICT",
        subject="organisation=CV Mitra Karya Abadi",
        reference=hold,
        summary="Recruiter has no P3MI licence; placement abroad would be non-procedural",
    )
    recruiter = _first_word_after(demo.sinergi("alert", "publish", *unlicensed), "published")

    demo.say(
        "Police receives the passport hold, checks that immigration signed it (the exchange "
        "could not have written it), and acknowledges it with a case reference."
    )
    demo.sinergi("alert", "watch", "--identity", demo.identity("police"), "--count", "1")
    demo.sinergi("alert", "show", hold, "--identity", demo.identity("police"))
    demo.say(
        "Immigration sees labour's reply beside its hold: both name the recruiter (correlation). "
        "Police was shown none of it above: labour's alert is TLP:AMBER+STRICT, for immigration."
    )
    demo.sinergi("alert", "related", hold, "--identity", demo.identity("immigration"))
    acted = flags(
        identity=demo.identity("police"),
        response="ACTION_TAKEN",
        case_ref="LP/A/117/XI/2026/SPKT/Polda Kepri",
    )
    demo.sinergi("alert", "ack", hold, *acted)

    demo.say("Customs: IMEI registrations abused by a joki syndicate (IMEI_FRAUD to police).")
    imei_fraud = flags(
        identity=demo.identity("customs"),
        category="IMEI_FRAUD",
        to="police",
        subject=[f"imei={imei}" for imei in IMEIS],
        summary="Joki syndicate registering IMEIs with the passports of departing travellers",
    )
    demo.sinergi("alert", "publish", *imei_fraud)

    demo.say(
        "A police officer (certs identity police-officer) searches the passport again and again, "
        "then tries to read labour's alert, which was not addressed to police."
    )
    officer = demo.identity("police-officer")
    for _ in range(4):
        demo.sinergi("alert", "search", "--identity", officer, "--passport", PASSPORT)
    demo.sinergi("alert", "show", recruiter, "--identity", officer, expect=1)

    demo.say(
        "Internal affairs verifies the ledger over the exchange, then asks who touched the "
        "passport hold (its thread includes labour's reply) and who was refused."
    )
    auditor = ["--server", address, "--identity", demo.identity("internal-affairs")]
    demo.sinergi("ledger", "verify", *auditor)
    demo.sinergi("audit", "who-accessed", hold, *auditor)
    demo.sinergi("audit", "denied", *auditor)
    demo.sinergi("witness", "status", "--identity", demo.identity("internal-affairs"))
    withheld(demo)
    tail_deleted(demo, officer)
    demo.say(
        "Done: every act above is a signed, witnessed ledger entry, and its removal was caught."
    )


def withheld(demo: Demo) -> None:
    """An insider deletes police's recipient row of a new alert, so that police never sees it:
    police's suppression monitor finds the ledger entry addressed to it and raises the alarm.
    Before that, immigration keeps the alert's proof of record, which police checks offline."""
    demo.say(
        "Immigration cancels the passport of a suspected trafficker and tells police (TLP:RED). "
        "It keeps the alert's proof of record; anyone can check it offline, without the exchange."
    )
    cancelled = flags(
        identity=demo.identity("immigration"),
        category="PASSPORT_HOLD",
        to="police",
        tlp="RED",
        subject=f"passport={PASSPORT},nationality=ID",
        summary="Passport cancelled: holder suspected of recruiting for a trafficking ring",
    )
    alert_id = _first_word_after(demo.sinergi("alert", "publish", *cancelled), "published")
    bundle = str(demo.root / "cancelled.proof.json")
    demo.sinergi(
        "alert", "proof", alert_id, "--identity", demo.identity("immigration"), "-o", bundle
    )
    demo.sinergi("ledger", "verify-proof", bundle, "--identity", demo.identity("police"))
    demo.say(
        "A database administrator helping the syndicate deletes police's recipient row of that "
        "alert: police's watch and reads will never show it, and the exchange says nothing."
    )
    database = demo.db.removeprefix("sqlite:///")
    statement = (  # shown as an administrator would type it; the id is the exchange's UUID
        "DELETE FROM alert_recipients WHERE agency = 'police' AND alert_position = "  # noqa: S608
        f"(SELECT position FROM alerts WHERE id = '{alert_id}')"
    )
    click.echo(f"$ sqlite3 {database.replace(str(demo.root), '$DEMO')}")
    click.echo(f"  sqlite> {statement};")
    with closing(sqlite3.connect(database)) as connection:
        connection.execute(statement)
        connection.commit()
    demo.say(
        "Police's suppression monitor walks the witnessed ledger: an entry addressed to police "
        "never reached it. The alarm (exit 1) names the alert; it holds no personal data."
    )
    demo.sinergi("monitor", "--identity", demo.identity("police"), "--grace", "0", expect=1)


def tail_deleted(demo: Demo, officer: str) -> None:
    """A database administrator helping the syndicate deletes the ledger's newest entries (the
    officer's searches and reads), their Merkle nodes, checkpoints and cosignatures, with the
    append-only triggers dropped and put back: what docs/threat-model.md calls a tail deletion."""
    demo.say(
        "The officer searches once more. Then a database administrator helping the syndicate "
        "deletes the newest ledger entries, to hide the searches, while the exchange runs."
    )
    demo.sinergi("alert", "search", "--identity", officer, "--passport", PASSPORT)
    database = demo.db.removeprefix("sqlite:///")
    with closing(sqlite3.connect(database)) as connection:
        (size,) = connection.execute("SELECT max(seq) FROM ledger_entries").fetchone()
        keep = size - 3
        drops = [f"DROP TRIGGER {table}_no_delete" for table in _LEDGER_TABLES]
        deletes = [
            "DELETE FROM ledger_entries WHERE seq > ?",
            "DELETE FROM ledger_checkpoints WHERE size > ?",
            "DELETE FROM ledger_cosignatures WHERE size > ?",
            # the Merkle nodes that cover an entry past the new end
            "DELETE FROM ledger_nodes WHERE (idx + 1) * (1 << level) > ?",
        ]
        shown = database.replace(str(demo.root), "$DEMO")
        click.echo(f"$ sqlite3 {shown}")
        for statement in drops:
            click.echo(f"  sqlite> {statement};")
            connection.execute(statement)
        for statement in deletes:
            click.echo(f"  sqlite> {statement.replace('?', str(keep))};")
            connection.execute(statement, (keep,))
        for table in _LEDGER_TABLES:
            connection.execute(
                f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
            )
        click.echo("  sqlite> -- and the triggers put back")
        connection.commit()
    demo.say(
        "The exchange remembers what it signed, outside its database: it refuses to sign over "
        "the shortened ledger, and every write is refused until an operator acts."
    )
    test_alert = flags(
        identity=demo.identity("immigration"), category="OTHER", to="police", summary="test"
    )
    demo.sinergi("alert", "publish", *test_alert, expect=1)
    demo.say(
        "Internal affairs verifies the database against the witnesses: they cosigned the "
        "deleted entries, so the removal is caught and named."
    )
    witnessed = flags(
        db=demo.db,
        identity=demo.identity("internal-affairs"),
        witness_policy=str(demo.pki / "witness-policy"),
    )
    demo.sinergi("ledger", "verify", *witnessed, expect=1)


@click.command()
@click.option("--keep", is_flag=True, help="Keep the demo's directory (PKI, database).")
def main(keep: bool) -> None:
    """Play the demo; exit non-zero if any step did not go as the story says."""
    root = Path(tempfile.mkdtemp(prefix="sinergi-demo-"))
    try:
        story(Demo(root))
    finally:
        if keep:
            click.echo(f"kept DEMO={root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def run(argv: Sequence[str] | None = None) -> None:
    main(args=list(argv) if argv is not None else None, prog_name="demo")


if __name__ == "__main__":
    run()
