"""`sinergi audit` as an internal-affairs officer runs it: on the scripted week (through the real
ledger writer into SQLite, then exported), and against a running exchange."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

import ledger
from tests.clients.conftest import last_json, run
from tests.conftest import ORIGIN, require_tool
from tests.ledger.history import SNOOP, SNOOP_SEARCHES, TARGET, replay


@pytest.fixture(scope="module")
def week(tmp_path_factory: pytest.TempPathFactory, pki_template: Path) -> dict[str, str]:
    directory = tmp_path_factory.mktemp("week")
    url = f"sqlite:///{directory / 'week.db'}"
    replay(url, ledger.load_signer(pki_template / "ledger.key", ORIGIN), ORIGIN)
    export = directory / "week.jsonl"
    assert run("ledger", "export", "--db", url, "--out", str(export)).returncode == 0
    return {
        "db": url,
        "file": str(export),
        "key": str(pki_template / "ledger.vkey"),
        "dir": str(directory),
    }


def audit(week: dict[str, str], *args: str, source: str = "db") -> dict[str, object]:
    result = run("audit", *args, f"--{source}", week[source], "--ledger-key", week["key"], "--json")
    assert result.returncode == 0, result.stderr
    return last_json(result)


@pytest.mark.parametrize("source", ["db", "file"])
def test_who_accessed_from_the_database_and_from_an_export(
    week: dict[str, str], source: str
) -> None:
    answer = audit(week, "who-accessed", TARGET, source=source)
    names = {str(p).rsplit("/", 1)[1] for p in answer["principals"]}  # type: ignore[attr-defined]
    assert names == {"gateway", "budi", "rina", "snoop", "ani"}
    assert len(answer["entries"]) == 52  # type: ignore[arg-type]
    assert answer["entries"] == audit(week, "who-accessed", TARGET)["entries"]
    assert answer["checkpoint_size"] == 121


def test_activity_denied_and_anomalies(week: dict[str, str]) -> None:
    night = audit(
        week, "activity", SNOOP.id, "--since", "2026-11-05T17:00Z", "--until", "2026-11-05T23:00Z"
    )
    assert len(night["entries"]) == SNOOP_SEARCHES + 1  # type: ignore[arg-type]
    groups = audit(week, "denied")["groups"]
    assert [(g["principal"].rsplit("/", 1)[1], g["count"]) for g in groups] == [  # type: ignore[index, union-attr]
        ("gateway", 2),
        ("snoop", 1),
    ]
    found = audit(week, "anomalies")["anomalies"]
    assert [(a["principal"], a["rule"]) for a in found] == [  # type: ignore[index, union-attr]
        (SNOOP.id, "off-hours"),
        (SNOOP.id, "unaddressed-search"),
        (SNOOP.id, "volume"),
    ]
    # The same history read as a night-shift team's: only the unaddressed searches remain.
    relaxed = audit(week, "anomalies", "--working-hours", "00:00-23:59", "--min-count", "100")
    assert [a["rule"] for a in relaxed["anomalies"]] == ["unaddressed-search"]  # type: ignore[index, union-attr]


def test_a_tampered_ledger_gets_no_answers(week: dict[str, str], tmp_path: Path) -> None:
    lines = Path(week["file"]).read_bytes().split(b"\n")
    victim = next(i for i, line in enumerate(lines) if b"officer/snoop" in line)
    lines[victim] = lines[victim].replace(b"officer/snoop", b"officer/budi")  # hide who it was
    forged = tmp_path / "forged.jsonl"
    forged.write_bytes(b"\n".join(lines))
    result = run(
        "audit", "who-accessed", TARGET, "--file", str(forged), "--ledger-key", week["key"]
    )
    assert result.returncode == 1
    assert "ledger BROKEN" in result.stderr
    assert result.stdout == ""


def test_usage_errors_exit_2(week: dict[str, str]) -> None:
    for args in (
        ["activity"],
        ["anomalies", "--timezone", "Mars/Olympus"],
        ["anomalies", "--working-hours", "late"],
        ["match"],
    ):
        result = run("audit", *args, "--db", week["db"], "--ledger-key", week["key"])
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.startswith("sinergi: "), args


def _chromium() -> str:
    return require_tool("chromium", "chromium-browser", install="apt-get install chromium")


def _rendered(report: Path) -> str:
    """The report's DOM as headless Chromium renders it."""
    return subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", report.as_uri()],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout


def test_the_report_renders_with_the_expected_figures(week: dict[str, str]) -> None:
    out = Path(week["dir"]) / "report.html"
    answer = audit(week, "report", "--out", str(out))
    assert answer["anomalies"] == 3
    html = out.read_text()
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")  # self-contained
    assert "<script" not in html
    rendered = _rendered(out)
    browser = _chromium()
    text = re.sub(r"<[^>]+>", " ", rendered)
    assert "INTACT: 121 entries" in text
    assert f"{ORIGIN}, size 121" in text
    assert "Anomalies (3)" in text
    assert "Refused attempts (3)" in text
    assert text.count(SNOOP.id) == 3 + 1  # three anomalies, one refusal group
    assert "labour (11)" in text
    assert "police (" in text
    assert rendered.count("<rect") >= 5  # a bar for each of the five days
    shot = Path(week["dir"]) / "report.png"
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--screenshot={shot}",
            "--window-size=1200,1600",
            out.as_uri(),
        ],
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert shot.stat().st_size > 10_000


def test_the_report_in_indonesian(week: dict[str, str]) -> None:
    """For internal-affairs teams (docs/i18n.md): the same figures under Indonesian headings,
    rule names and verdict; the ledger's own words (actions, statuses, reasons) as recorded."""
    out = Path(week["dir"]) / "laporan.html"
    result = run(
        "--lang", "id", "audit", "report", "--out", str(out),
        "--db", week["db"], "--ledger-key", week["key"], "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert last_json(result)["anomalies"] == 3  # --json stays as it is
    assert '<html lang="id">' in out.read_text()
    rendered = _rendered(out)
    text = " ".join(re.sub(r"<[^>]+>", " ", rendered).split())
    for heading in (
        "Laporan audit Sinergi",
        "Aktivitas per instansi per hari",
        "Anomali (3)",
        "Upaya yang ditolak (3)",
    ):
        assert re.search(rf"<h[12]>{re.escape(heading)}</h[12]>", rendered), heading
    assert "UTUH: 121 entri, " in text
    assert f"Checkpoint yang dicakup {ORIGIN}, ukuran 121" in text
    for rule in ("volume tinggi", "di luar jam kerja", "pencarian di luar peruntukan"):
        assert f"{SNOOP.id} {rule} " in text, rule
    assert "Prinsipal Status Jumlah Metode Pertama Terakhir Alasan" in text
    assert "PERMISSION_DENIED" in text  # the refusals' statuses, as the ledger recorded them
    assert "labour (11)" in text
    assert "Sinergi audit report" not in text
    assert rendered.count("<rect") >= 5


def test_match_and_server_source_against_a_running_exchange(
    served: tuple[str, Path, str],
) -> None:
    address, pki, db = served
    published = run(
        "alert",
        "publish",
        "--identity",
        str(pki / "immigration"),
        "--server",
        address,
        "--category",
        "PASSPORT_HOLD",
        "--to",
        "police",
        "--summary",
        "x",
        "--subject",
        "passport=C7654321",
        "--json",
    )
    alert_id = str(last_json(published)["alert_id"])
    for passport in ("C7654321", "c7654321 "):  # the same person, typed loosely
        found = run(
            "alert",
            "search",
            "--identity",
            str(pki / "police"),
            "--server",
            address,
            "--passport",
            passport,
            "--json",
        )
        assert found.returncode == 0, found.stderr
    key = ["--ledger-key", str(pki / "ledger.vkey")]
    searches = run("audit", "match", "--passport", "C7654321", "--db", db, *key, "--json")
    assert len(last_json(searches)["entries"]) == 2  # type: ignore[arg-type]
    other = run("audit", "match", "--passport", "C7654322", "--db", db, *key, "--json")
    assert last_json(other)["entries"] == []
    stored = run("audit", "match", "--alert", alert_id, "--db", db, *key, "--json")
    assert [e["action"] for e in last_json(stored)["entries"]] == ["PUBLISH"]  # type: ignore[index, union-attr]
    # Through the exchange, as the auditor: the exchange records that read.
    remote = run(
        "audit",
        "who-accessed",
        alert_id,
        "--server",
        address,
        "--identity",
        str(pki / "internal-affairs"),
        *key,
        "--json",
    )
    assert remote.returncode == 0, remote.stderr
    actions = [e["action"] for e in last_json(remote)["entries"]]  # type: ignore[index, union-attr]
    assert actions == ["PUBLISH", "SEARCH", "SEARCH"]
    after = run("ledger", "verify", "--db", db, *key, "--json")
    assert last_json(after)["ok"] is True
    entries = run("ledger", "export", "--db", db, "--out", str(pki.parent / "x.jsonl"))
    assert entries.returncode == 0
    assert b'"LEDGER_READ"' in (pki.parent / "x.jsonl").read_bytes()
