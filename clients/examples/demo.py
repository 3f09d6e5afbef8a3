"""`make demo`: one case from the field, told with the real `sinergi` CLI against a real exchange.

Everything lives in a temporary directory (its own development PKI, SQLite database, and a server
on a free port) that is removed at the end; each step prints the command it runs and what the
command printed. Run it with ``python -m clients.examples.demo`` (``--keep`` keeps the directory).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import click

SINERGI = [sys.executable, "-m", "clients"]
PASSPORT = "C7715024"
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
        self.colour = sys.stdout.isatty() and not os.environ.get("NO_COLOR")

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

    @contextmanager
    def exchange(self) -> Iterator[str]:
        """A `sinergi serve` process on a free port; stopped (SIGTERM) on the way out."""
        serve = [*SINERGI, "serve", "--db", self.db, "--pki", str(self.pki)]
        serve += ["--listen", "127.0.0.1:0", "--json"]
        process = subprocess.Popen(  # noqa: S603 - our own CLI
            serve, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=self.env
        )
        try:
            assert process.stdout is not None
            line = process.stdout.readline()  # the first line says where it listens, once it does
            if not line:
                raise click.ClickException(f"sinergi serve exited with {process.wait(30)}")
            address = str(json.loads(line)["listen"])
            self.env["SINERGI_SERVER"] = address
            yield address
        finally:
            process.send_signal(signal.SIGTERM)
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
    # The demo's exchange runs without witnesses, so its clients must not ask for cosignatures.
    click.echo("$ rm $DEMO/pki/witness-policy   # this exchange runs without witnesses")
    (demo.pki / "witness-policy").unlink()
    demo.sinergi("db", "init", "--db", demo.db)
    with demo.exchange() as address:
        click.echo(f"$ export SINERGI_SERVER={address}   # the exchange, on a free port")
        click.echo("$ export SINERGI_LEDGER_KEY=$DEMO/pki/ledger.vkey")
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
            "organisation=CV Mitra Karya Abadi (unlicensed)",
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
    demo.say("Done: every act above is a signed, verified ledger entry.")


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
