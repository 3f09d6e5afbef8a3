"""The CLI with real witnesses: `ledger verify --witness-policy` holds the ledger to what each
witness cosigned, `ledger checkpoint` gives the newest one with its quorum, `witness status`
raises the alarm; and `pki dev` makes the development witnesses and their policy.

The exchange does not send its checkpoints to witnesses yet, so the tests do what it will: they
submit the newest stored checkpoint to two real witness servers (tests/witness/conftest.py) and
store the cosignatures beside it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

import ledger
import ledger.store
from clients import ExchangeClient, new_alert
from tests.clients.conftest import last_json, run
from tests.conftest import RunningServer, as_dba
from tests.witness.conftest import Client, Clock, WitnessThread
from witness import create_dev_witnesses

NAMES = ("internal-affairs", "police")


@dataclass
class Witnessed:
    """A real exchange's ledger whose newest checkpoint two real witnesses cosigned."""

    server: RunningServer
    pki: Path
    policy: Path
    threads: dict[str, WitnessThread]
    ports: dict[str, int]
    size: int  # of the checkpoint they cosigned
    origin: str

    def args(self, *extra: str) -> list[str]:
        """The auditor's flags: the database, the witness policy, an identity to ask with."""
        return [
            *("--db", self.server.database),
            *("--ledger-key", str(self.pki / "ledger.vkey")),
            *("--witness-policy", str(self.policy)),
            *("--identity", str(self.pki / "internal-affairs")),
            *extra,
        ]

    def publish(self, count: int = 1) -> None:
        with ExchangeClient(self.pki / "immigration", self.server.address) as client:
            for n in range(count):
                client.publish(
                    new_alert(category="PASSPORT_HOLD", recipients=["police"], summary=f"{n}")
                )

    def cosign(self) -> int:
        """Submit the newest stored checkpoint to both witnesses, store their cosignatures."""
        engine = ledger.store.create_engine(self.server.database)
        try:
            with engine.begin() as connection:
                found = ledger.store.checkpoint_at(connection, None)
                assert found is not None
                size, note = found
                for name in NAMES:
                    client = Client(self.pki, self.ports[name])
                    old = self.size
                    proof = ledger.store.prove_consistency(connection, old, size) if old else []
                    reply = client.add(ledger.AddCheckpoint(old, tuple(proof), note))
                    assert reply.status == 200, reply
                    cosigner = self.threads[name].server.setup.cosigner.verifier()
                    key = f"{cosigner.name}+{cosigner.key_id.hex()}"
                    ledger.store.store_cosignatures(connection, size, [(key, reply.body)])
        finally:
            engine.dispose()
        self.size = size
        return size


@pytest.fixture
def witnessed(
    start_server: Callable[..., RunningServer], sqlite_url: str, pki: Path, tmp_path: Path
) -> Iterator[Witnessed]:
    server = start_server(sqlite_url)
    create_dev_witnesses(pki)
    threads = {name: WitnessThread(pki / f"witness-{name}", Clock()) for name in NAMES}
    ports = {name: thread.start() for name, thread in threads.items()}
    policy = tmp_path / "witness-policy"
    policy.write_text(
        "".join(
            f"witness {name} {threads[name].server.vkey} https://127.0.0.1:{ports[name]}\n"
            for name in NAMES
        )
        + f"group both all {' '.join(NAMES)}\nquorum both\n"
    )
    lab = Witnessed(server, pki, policy, threads, ports, 0, "")
    try:
        lab.publish(3)
        lab.cosign()
        cp = ledger.store.checkpoint_at
        engine = ledger.store.create_engine(server.database)
        with engine.connect() as connection:
            newest = cp(connection, None)
        engine.dispose()
        assert newest is not None
        verifier = ledger.Verifier.from_vkey((pki / "ledger.vkey").read_text().strip())
        lab.origin = ledger.open_checkpoint(newest[1], [verifier]).origin
        yield lab
    finally:
        for thread in threads.values():
            thread.stop()


def _verify(lab: Witnessed, *extra: str) -> subprocess.CompletedProcess[str]:
    return run("ledger", "verify", *lab.args(*extra))


def test_verify_reports_the_cosigners_and_what_each_witness_holds(witnessed: Witnessed) -> None:
    result = _verify(witnessed, "--json")
    assert result.returncode == 0, result.stderr
    doc = last_json(result)
    assert doc["cosigners"] == list(NAMES)
    assert doc["quorum"] == {"needs": "2 of (internal-affairs, police)", "met": True}
    assert doc["cosignature_lines"] == 2
    assert doc["witnesses"] == [
        {
            "name": name,
            "url": f"https://127.0.0.1:{witnessed.ports[name]}",
            "size": witnessed.size,
            "consistent": True,
        }
        for name in NAMES
    ]
    human = _verify(witnessed)
    assert human.returncode == 0, human.stderr
    lines = human.stdout.splitlines()
    assert lines[0].startswith("ledger intact: ")
    assert lines[1:] == [
        f"  newest checkpoint: size {witnessed.size} of {witnessed.origin}, cosigned by "
        "internal-affairs, police (quorum 2 of (internal-affairs, police): met)",
        f"  witness internal-affairs: cosigned size {witnessed.size}, consistent with the ledger",
        f"  witness police: cosigned size {witnessed.size}, consistent with the ledger",
    ]
    # Without a policy the lines are counted, not checked.
    key = ["--ledger-key", str(witnessed.pki / "ledger.vkey")]
    plain = run("ledger", "verify", "--db", witnessed.server.database, *key)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.splitlines()[1] == (
        f"  newest checkpoint: size {witnessed.size} of {witnessed.origin}, 2 cosignature "
        "lines (not checked: no witness policy)"
    )


def test_a_deleted_tail_fails_verify_naming_the_witnesses(witnessed: Witnessed) -> None:
    keep = witnessed.size - 1
    as_dba(
        witnessed.server.database,
        f"DELETE FROM ledger_entries WHERE seq > {keep}",
        f"DELETE FROM ledger_checkpoints WHERE size > {keep}",
        restore=True,
    )
    # The ledger alone cannot tell: what is left is a valid, signed, shorter ledger.
    key = ["--ledger-key", str(witnessed.pki / "ledger.vkey")]
    assert run("ledger", "verify", "--db", witnessed.server.database, *key).returncode == 0
    result = _verify(witnessed, "--json")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"sinergi: ledger BROKEN: the ledger ends at entry {keep} but a trusted checkpoint "
        f"covers {witnessed.size} entries: entries were removed; that checkpoint was cosigned "
        f"by witness internal-affairs (size {witnessed.size}), police (size {witnessed.size})"
    ]
    doc = last_json(result)
    assert [(w["name"], w["consistent"]) for w in doc["witnesses"]] == [  # type: ignore[union-attr]
        ("internal-affairs", False),
        ("police", False),
    ]
    # witness status says the same.
    status = run("witness", "status", *witnessed.args("--json"))
    assert status.returncode == 1
    error = str(last_json(status)["error"])
    assert error.startswith(
        "witness internal-affairs holds a tree the ledger does not: the ledger's newest "
        f"checkpoint has {keep} entries, the witness cosigned {witnessed.size}: entries were "
        "removed"
    )


def test_a_rewritten_ledger_fails_verify_naming_the_witnesses(
    witnessed: Witnessed, tmp_path: Path
) -> None:
    """A key holder rewrites entry 2 and re-signs: a perfect ledger, but not the witnessed one."""
    exported = tmp_path / "ledger.jsonl"
    made = run("ledger", "export", "--db", witnessed.server.database, "--out", str(exported))
    assert made.returncode == 0, made.stderr
    entries = [ledger.Entry.decode(b) for _, _, b in ledger.export_entries(exported)]
    bodies, prev = [], ledger.GENESIS_PREV
    for entry in entries:
        changed = replace(entry, prev=prev, digest="00" * 32 if entry.seq == 2 else entry.digest)
        bodies.append(changed.encode())
        prev = ledger.leaf_hash(bodies[-1]).hex()
    signer = ledger.load_signer(witnessed.pki / "ledger.key", "sinergi.dev/ledger")
    root = ledger.root_of([ledger.leaf_hash(b) for b in bodies])
    note = ledger.sign_checkpoint(ledger.Checkpoint(witnessed.origin, len(bodies), root), [signer])
    rewritten = tmp_path / "rewritten.jsonl"
    rewritten.write_bytes(b"".join(b + b"\n" for b in bodies) + ledger.checkpoint_line(note))
    key = ["--ledger-key", str(witnessed.pki / "ledger.vkey")]
    assert run("ledger", "verify", "--file", str(rewritten), *key).returncode == 0
    args = [*key, "--witness-policy", str(witnessed.policy)]
    args += ["--identity", str(witnessed.pki / "internal-affairs")]
    result = run("ledger", "verify", "--file", str(rewritten), *args)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"sinergi: ledger BROKEN: entries 1..{witnessed.size} do not have the root of the "
        f"trusted checkpoint at size {witnessed.size}: history was rewritten; that checkpoint "
        f"was cosigned by witness internal-affairs (size {witnessed.size}), police (size "
        f"{witnessed.size})"
    ]
    # The export of the real ledger carries the cosignatures, and verifies against both.
    honest = run("ledger", "verify", "--file", str(exported), *args, "--json")
    assert honest.returncode == 0, honest.stderr
    assert last_json(honest)["cosigners"] == list(NAMES)


def test_an_unreachable_witness_or_a_missing_quorum_fails_verify(witnessed: Witnessed) -> None:
    witnessed.threads["police"].stop()
    result = _verify(witnessed, "--json")
    assert result.returncode == 1
    error = str(last_json(result)["error"])
    assert error.startswith(
        f"ledger NOT witnessed: witness police unreachable: https://127.0.0.1:"
        f"{witnessed.ports['police']}: "
    )
    witnesses = last_json(result)["witnesses"]
    assert [w["consistent"] for w in witnesses] == [True, None]  # type: ignore[union-attr]

    # A newer checkpoint that no witness cosigned yet, past --witness-grace: `verify` fails,
    # `checkpoint` gives the newest one with its quorum, to keep.
    witnessed.publish()
    lacking = run("ledger", "verify", *witnessed.args("--json", "--witness-grace", "0"))
    assert lacking.returncode == 1
    assert (
        f"the newest checkpoint (size {witnessed.size + 1}) lacks its quorum: cosigned by no "
        "witness of the policy; the policy needs 2 of (internal-affairs, police)"
    ) in str(last_json(lacking)["error"])
    kept = run("ledger", "checkpoint", *witnessed.args())
    assert kept.returncode == 0, kept.stderr
    assert kept.stdout.splitlines()[:2] == [witnessed.origin, str(witnessed.size)]
    assert kept.stderr == (
        f"newest checkpoint: size {witnessed.size} of {witnessed.origin}, cosigned by "
        "internal-affairs, police (quorum 2 of (internal-affairs, police): met)\n"
    )


def test_the_newest_checkpoints_of_a_live_ledger_may_await_their_quorum_a_moment(
    witnessed: Witnessed,
) -> None:
    """Witnesses cosign off the publish path: checkpoints committed within --witness-grace
    seconds may lack their quorum (said so); older ones may not."""
    witnessed.publish(2)
    moment = _verify(witnessed, "--json")
    assert moment.returncode == 0, moment.stderr
    awaiting = str(last_json(moment)["awaiting_quorum"])
    assert awaiting.startswith(
        f"entries {witnessed.size + 1}..{witnessed.size + 2} await their quorum, the oldest "
        "committed "
    )
    assert awaiting.endswith("s ago (--witness-grace 10 s)")
    human = _verify(witnessed)
    assert "not yet witnessed, within reason: entries" in human.stdout
    assert _verify(witnessed, "--witness-grace", "0").returncode == 1
    witnessed.cosign()  # the witnesses catch up: nothing awaits any more
    caught_up = last_json(_verify(witnessed, "--json", "--witness-grace", "0"))
    assert caught_up["ok"] is True
    assert "awaiting_quorum" not in caught_up


def test_witness_status_reports_lag_consistency_and_the_alarm(witnessed: Witnessed) -> None:
    result = run("witness", "status", *witnessed.args("--json"))
    assert result.returncode == 0, result.stderr
    doc = last_json(result)
    found = [
        (w["name"], w["size"], w["lag"], w["consistent"], w["refusals"])
        for w in doc["witnesses"]  # type: ignore[union-attr]
    ]
    assert found == [(name, witnessed.size, 0, True, 0) for name in NAMES]
    # Over the exchange: its newest checkpoint is newer (the reads are recorded), still
    # consistent with what each witness holds.
    witnessed.publish()
    served = run(
        *("witness", "status", "--server", witnessed.server.address),
        *("--identity", str(witnessed.pki / "internal-affairs")),
        *("--witness-policy", str(witnessed.policy)),
    )
    assert served.returncode == 0, served.stderr
    lines = served.stdout.splitlines()
    assert lines[0].startswith("the exchange's newest checkpoint: size ")
    assert (
        "cosigned by no witness of the policy (quorum 2 of (internal-affairs, police): NOT"
        in (lines[0])
    )
    assert lines[2].startswith(f"witness police (https://127.0.0.1:{witnessed.ports['police']}")
    assert "entries behind, consistent with the ledger; no refusals" in lines[2]

    # The ledger's key signs another tree of the witnessed size: the witness refuses, and
    # records it.
    signer = ledger.load_signer(witnessed.pki / "ledger.key", "sinergi.dev/ledger")
    fork = ledger.Checkpoint(witnessed.origin, witnessed.size, b"\x07" * 32)
    note = ledger.sign_checkpoint(fork, [signer])
    client = Client(witnessed.pki, witnessed.ports["police"])
    refused = client.add(ledger.AddCheckpoint(witnessed.size, (), note))
    assert refused.status == 422
    alarm = run("witness", "status", *witnessed.args())
    assert alarm.returncode == 1
    assert alarm.stderr.splitlines()[-1] == (
        f"sinergi: witness police recorded 1 refusal, the last 422 for {witnessed.origin}: size "
        f"{witnessed.size} was cosigned with another root: the log forked (400 and 422 are a "
        "rollback or a fork it was shown; a 409 alone may be a race: docs/witness.md, section 3)"
    )

    witnessed.threads["internal-affairs"].stop()
    gone = run("witness", "status", *witnessed.args("--json"))
    assert gone.returncode == 1
    assert str(last_json(gone)["error"]).startswith("witness internal-affairs unreachable: ")


def test_witness_status_needs_a_policy_with_witnesses(witnessed: Witnessed, tmp_path: Path) -> None:
    alone = shutil.copytree(witnessed.pki / "internal-affairs", tmp_path / "alone" / "ia")
    identity = ["--identity", str(alone), "--ledger-key", str(witnessed.pki / "ledger.vkey")]
    none = run("witness", "status", *identity, "--db", witnessed.server.database)
    assert none.returncode == 2
    assert none.stderr.startswith("sinergi: no witness policy: pass --witness-policy FILE")
    both = run("witness", "status", *witnessed.args("--server", "127.0.0.1:1"))
    assert both.returncode == 2
    assert "give --server or --db, not both" in both.stderr


def test_pki_dev_makes_the_development_witnesses_and_their_policy(tmp_path: Path) -> None:
    directory = tmp_path / "certs" / "dev"
    made = run("pki", "dev", "--dir", str(directory), "--json")
    assert made.returncode == 0, made.stderr
    assert last_json(made)["witness_policy"] == str(directory / "witness-policy")
    policy = ledger.WitnessPolicy.load(directory / "witness-policy")
    assert policy.describe() == "2 of (internal-affairs, police)"
    assert {w.url for w in policy.witnesses.values()} == {
        "https://127.0.0.1:50061",
        "https://127.0.0.1:50062",
    }
    for name in NAMES:
        assert (directory / f"witness-{name}" / "witness.vkey").is_file()
        assert (directory / f"witness-{name}" / "state.db").is_file()
    # A client finds it beside its identity's directory, as it finds ledger.vkey.
    shown = run("config", "show", "--identity", str(directory / "police"), "--json")
    assert json.loads(shown.stdout)["settings"]["witness_policy"]["source"] == "default"


def test_publish_reports_whether_its_receipt_was_witnessed(
    served: tuple[str, Path, str],
) -> None:
    """With the development policy beside the identities and an exchange without witnesses
    (until it sends them its checkpoints): accepted, and said to be not yet witnessed."""
    address, pki, _db = served
    assert run("pki", "dev", "--dir", str(pki)).returncode == 0  # puts the policy back
    who = ["--identity", str(pki / "immigration"), "--server", address]
    args = [*who, "--category", "PASSPORT_HOLD", "--to", "police", "--summary", "held"]
    published = run("alert", "publish", *args)
    assert published.returncode == 0, published.stderr
    assert published.stdout.splitlines()[-1] == (
        "  not yet witnessed: no checkpoint has its quorum yet"
    )
    as_json = last_json(run("alert", "publish", *args, "--json"))
    assert (as_json["witnessed"], as_json["quorum"]) == (False, "2 of (internal-affairs, police)")
    police = ["--identity", str(pki / "police"), "--server", address]
    acked = run("alert", "ack", str(as_json["alert_id"]), *police, "--response", "RECEIVED")
    assert acked.returncode == 0, acked.stderr
    assert acked.stdout.splitlines()[-1] == "  not yet witnessed: no checkpoint has its quorum yet"
    # The newest checkpoint is what the client would keep: it needs the quorum.
    newest = run("ledger", "checkpoint", *who, "--ledger-key", str(pki / "ledger.vkey"))
    assert newest.returncode == 1
    assert newest.stderr.startswith("sinergi: the exchange's newest checkpoint ")
    assert newest.stderr.rstrip().endswith(
        "lacks its quorum: cosigned by no witness; the policy needs 2 of (internal-affairs, police)"
    )


def test_an_export_is_not_held_to_what_was_cosigned_after_it(
    witnessed: Witnessed, tmp_path: Path
) -> None:
    exported = tmp_path / "ledger.jsonl"
    made = run("ledger", "export", "--db", witnessed.server.database, "--out", str(exported))
    assert made.returncode == 0, made.stderr
    size = witnessed.size
    witnessed.publish(2)
    newer = witnessed.cosign()
    args = ["--ledger-key", str(witnessed.pki / "ledger.vkey")]
    args += ["--witness-policy", str(witnessed.policy)]
    args += ["--identity", str(witnessed.pki / "internal-affairs")]
    result = run("ledger", "verify", "--file", str(exported), *args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[2:] == [
        f"  witness {name}: cosigned size {newer}, after this export (size {size}): not checked"
        for name in NAMES
    ]


def test_a_broken_policy_or_no_identity_to_ask_with_is_a_usage_error(
    witnessed: Witnessed, tmp_path: Path
) -> None:
    broken = tmp_path / "broken-policy"
    broken.write_text("witness only-a-name\nquorum none\n")
    who = ["--identity", str(witnessed.pki / "immigration"), "--server", witnessed.server.address]
    args = ["--category", "PASSPORT_HOLD", "--to", "police", "--summary", "x"]
    published = run("alert", "publish", *who, *args, "--witness-policy", str(broken))
    assert published.returncode == 2
    assert published.stderr == (f"sinergi: {broken}:1: not a log, witness, group or quorum line\n")
    key = ["--ledger-key", str(witnessed.pki / "ledger.vkey")]
    policy = ["--witness-policy", str(witnessed.policy)]
    alone = run("ledger", "verify", "--db", witnessed.server.database, *key, *policy)
    assert alone.returncode == 2
    assert alone.stderr == "sinergi: asking the witnesses needs --identity (or SINERGI_IDENTITY)\n"
