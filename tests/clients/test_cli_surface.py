"""What every command owes an operator: a one-line reason (never a traceback) for a broken identity,
exit 2 for a bad flag, colour only on a terminal, completion."""

from __future__ import annotations

import os
import pty
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from clients._cli import cli
from tests.clients.conftest import SINERGI, run
from tests.clients.test_cli import _leaf_commands

ALERT = "00000000-0000-4000-8000-000000000000"
# What each command that takes --identity needs besides it to get as far as loading it.
#: Commands that take an identity but never call the exchange: no --server.
OFFLINE = {("ledger", "verify-proof")}
NEEDS: dict[tuple[str, ...], list[str]] = {
    ("alert", "ack"): [ALERT, "--response", "RECEIVED"],
    ("alert", "acks"): [ALERT],
    ("alert", "cancel"): [ALERT, "--reason", "x"],
    ("alert", "export"): [ALERT],
    ("alert", "list"): [],
    ("alert", "proof"): [ALERT],
    ("alert", "publish"): ["--category", "OTHER", "--to", "police", "--summary", "x"],
    ("alert", "related"): [ALERT],
    ("alert", "search"): ["--passport", "C1234567"],
    ("alert", "show"): [ALERT],
    ("alert", "update"): [ALERT, "--summary", "x"],
    ("alert", "watch"): [],
    ("audit", "activity"): ["--agency", "police"],
    ("audit", "anomalies"): [],
    ("audit", "denied"): [],
    ("audit", "match"): ["--passport", "C1234567"],
    ("audit", "report"): ["--out", "report.html"],
    ("audit", "shown-related"): [ALERT],
    ("audit", "who-accessed"): [ALERT],
    ("ledger", "checkpoint"): [],
    ("ledger", "consistency"): ["1", "2", "--checkpoint", "kept.note"],
    ("ledger", "prove"): ["1"],
    ("ledger", "trust"): ["sinergi.dev/ledger/20261207-3f9a01c2"],
    ("ledger", "verify"): [],
    ("ledger", "verify-proof"): ["kept.note"],
    ("monitor",): [],
    ("witness", "status"): [],
}
SHOWS_ONLY = {("config", "show")}  # prints the setting, never loads it


def _takes_identity() -> set[tuple[str, ...]]:
    found = set()
    for path in _leaf_commands():
        command = cli
        for name in path:
            command = command.get_command(None, name)  # type: ignore[union-attr,arg-type]
        if any(p.name == "identity" for p in command.params):
            found.add(tuple(path))
    return found - SHOWS_ONLY


@pytest.fixture
def broken_identity(workdir: Path) -> tuple[Path, Path]:
    """An identity directory whose key is missing, and a good ledger key."""
    pki = workdir / "certs" / "dev"
    broken = shutil.copytree(pki / "police", workdir / "police-no-key")
    (broken / "tls.key").unlink()
    return broken, pki / "ledger.vkey"


def test_every_command_names_a_missing_identity_file_in_one_line(
    broken_identity: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    broken, vkey = broken_identity
    assert _takes_identity() == set(NEEDS), "add the new command to NEEDS"
    monkeypatch.chdir(broken.parent)
    (broken.parent / "kept.note").write_text("not read: the identity is loaded first\n")
    runner = CliRunner()
    for path, args in NEEDS.items():
        source = [] if path[0] == "alert" or path in OFFLINE else ["--server", "127.0.0.1:1"]
        result = runner.invoke(
            cli,
            [*path, *args, *source, "--identity", str(broken), "--ledger-key", str(vkey)],
            env={"SINERGI_CONFIG": "", "XDG_CONFIG_HOME": str(broken.parent)},
        )
        assert result.exit_code == 2, (path, result.output, result.exception)
        assert isinstance(result.exception, SystemExit), path
        assert result.stderr.splitlines() == [f"sinergi: missing {broken / 'tls.key'}"], path


def test_a_missing_identity_directory_as_a_user_meets_it(workdir: Path) -> None:
    vkey = workdir / "certs" / "dev" / "ledger.vkey"
    nowhere = workdir / "nowhere"
    for args in (
        ["ledger", "verify", "--server", "127.0.0.1:1"],
        ["audit", "denied", "--server", "127.0.0.1:1"],
    ):
        result = run(*args, "--identity", str(nowhere), "--ledger-key", str(vkey), "--json")
        assert result.returncode == 2, result.stderr
        assert result.stderr.splitlines() == [f"sinergi: {nowhere}: no such directory"]


def test_bad_flags_exit_2_on_every_command() -> None:
    runner = CliRunner()
    for path in _leaf_commands():
        result = runner.invoke(cli, [*path, "--no-such-flag"])
        assert result.exit_code == 2, path
        assert "No such option '--no-such-flag'" in result.output, path


def _on_a_terminal(*args: str, env: dict[str, str]) -> str:
    """Run `sinergi` with stdout and stderr on a pseudo-terminal, as in an operator's shell."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [*SINERGI, *args], stdout=follower, stderr=follower, stdin=subprocess.DEVNULL, env=env
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the terminal's other side closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    process.wait(60)
    os.close(leader)
    return b"".join(chunks).decode()


def test_colour_on_a_terminal_only_and_never_with_no_color(workdir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    args = ("ledger", "verify", "--ledger-key", str(workdir / "missing.vkey"))
    tty = _on_a_terminal(*args, env=env)
    assert "\x1b[" in tty
    assert "missing.vkey" in tty
    assert "\x1b[" not in _on_a_terminal(*args, env={**env, "NO_COLOR": "1"})
    piped = run(*args, env=env)
    assert piped.returncode == 2
    assert "\x1b[" not in piped.stderr
    assert "missing.vkey" in piped.stderr


def test_shell_completion_script_is_generated() -> None:
    env = {**os.environ, "_SINERGI_COMPLETE": "bash_source"}
    result = subprocess.run(
        [*SINERGI], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "_SINERGI_COMPLETE=bash_complete" in result.stdout
    words = subprocess.run(
        [*SINERGI],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={
            **os.environ,
            "_SINERGI_COMPLETE": "bash_complete",
            "COMP_WORDS": "sinergi al",
            "COMP_CWORD": "1",
        },
    )
    assert "plain,alert" in words.stdout.splitlines()
