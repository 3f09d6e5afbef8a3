"""`make demo` runs to the end and tells the story it promises, and leaves nothing behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path


def test_demo_tells_the_story_against_a_real_exchange(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path), "NO_COLOR": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "clients.examples.demo"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    hold = re.search(r"^  published (\S+)$", out, re.MULTILINE)
    assert hold is not None, out
    facts = [
        "--category PASSPORT_HOLD --to police,labour --tlp AMBER",
        "--category ILLEGAL_RECRUITER",
        f"acknowledged {hold[1]}: ACTION_TAKEN",
        "--case-ref 'LP/A/117/XI/2026/SPKT/Polda Kepri'",
        "--category IMEI_FRAUD --to police",
        "sinergi: NOT_FOUND: no alert with that id is visible to your agency",
        "ledger intact: ",
        "identity $DEMO/pki/internal-affairs",
        "proof intact: ALERT ",
        "sqlite> DELETE FROM alert_recipients WHERE agency = 'police'",
    ]
    for fact in facts:
        assert fact in out, fact
    officer = "spiffe://sinergi.dev/agency/police/officer/investigator"
    assert len(re.findall(rf"SEARCH +{re.escape(officer)} +alert:{hold[1]}", out)) == 4
    assert re.search(rf"^  {re.escape(officer)} +NOT_FOUND +1 +GetAlert ", out, re.MULTILINE)
    assert re.search(r"ACK +spiffe://sinergi\.dev/agency/police/system/gateway", out)
    # Correlation: immigration is shown labour's reply beside its hold (they share the
    # recruiter's name); police, which may not see that reply, was shown no related alert.
    assert re.search(r"ILLEGAL_RECRUITER +labour +\S+ +ACTIVE +organisation", out)
    assert "related: none" in out
    # Police checked immigration's signature on the hold before acting on it.
    assert re.search(
        r"signature +verified: spiffe://sinergi\.dev/agency/immigration/system/"
        r"gateway at ",
        out,
    )
    cancelled = re.search(r"proof intact: ALERT (\S+) signed by", out)
    assert cancelled is not None, out
    assert f"SUPPRESSION: PUBLISH {cancelled[1]} " in out
    assert list(tmp_path.iterdir()) == []  # its PKI, database and server are gone
