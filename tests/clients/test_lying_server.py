"""The client against an exchange that lies about the ledger.

Until now the receipt check met only an honest server. Here a server of ours (real mutual TLS,
the exchange's own certificate) forwards every call to a real exchange and rewrites the answer:
each lie must be refused by `ExchangeClient.publish` (and the CLI, for two of them), loudly and
naming what was wrong. The forged entries are placed in a re-signed checkpoint (the test PKI's
ledger key) so that only the check under test can catch them; and the mutation tests show that
these tests fail for a client that skips that check.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import ledger.store
from clients import (
    ExchangeClient,
    ForkDetected,
    OtherLedger,
    QuorumFailed,
    VerificationFailed,
    new_alert,
)
from ledger import (
    Action,
    Actor,
    Checkpoint,
    Cosigner,
    Entry,
    Signer,
    Verifier,
    leaf_hash,
    node_hash,
    open_checkpoint,
    sign_checkpoint,
)
from sinergi.v1 import exchange_pb2, ledger_pb2
from tests.clients.conftest import last_json, run
from tests.clients.lying_server import LyingServer, Tamper
from tests.conftest import RunningServer

OTHER_AGENCY = "spiffe://sinergi.dev/agency/customs/system/gateway"
OTHER_ALERT = "alert:00000000-0000-4000-8000-000000000000"
NOW = 1_800_000_000


def root_from_path(index: int, size: int, leaf: bytes, path: list[bytes]) -> bytes:
    """The root an inclusion path leads to (RFC 9162 section 2.1.3.2): where a forged leaf
    puts the tree, for a checkpoint that proves it."""
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r


@dataclass
class Lab:
    """A real exchange, the lying server in front of it, and what a test forges with."""

    server: RunningServer
    lying: LyingServer
    pki: Path
    signer: Signer
    verifier: Verifier
    tmp: Path

    @property
    def identity(self) -> Path:
        return self.pki / "immigration"

    def client(self, state: str = "witness.json", **options: Any) -> ExchangeClient:
        return ExchangeClient(
            self.identity, self.lying.address, witness_state=self.tmp / state, **options
        )

    def opened(self, receipt: ledger_pb2.Receipt) -> Checkpoint:
        return open_checkpoint(receipt.checkpoint.note, [self.verifier])

    def proof(self, first: int, second: int) -> list[bytes]:
        engine = ledger.store.create_engine(self.server.database)
        try:
            with engine.connect() as connection:
                return ledger.store.prove_consistency(connection, first, second)
        finally:
            engine.dispose()


@pytest.fixture
def lab(
    start_server: Callable[..., RunningServer], sqlite_url: str, pki: Path, tmp_path: Path
) -> Iterator[Lab]:
    server = start_server(sqlite_url)
    lying = LyingServer(server.address, pki, pki / "immigration")
    lying.start()
    verifier = Verifier.from_vkey((pki / "ledger.vkey").read_text().strip())
    signer = ledger.load_signer(pki / "ledger.key", verifier.name)
    try:
        yield Lab(server, lying, pki, signer, verifier, tmp_path)
    finally:
        lying.stop()


def alert(summary: str = "held at the gate") -> Any:
    return new_alert(category="PASSPORT_HOLD", recipients=["police"], summary=summary)


def publish(lab: Lab, tamper: Tamper | None = None, **options: Any) -> Any:
    """Publish through the lying server, its answer rewritten by ``tamper``."""
    lab.lying.tamper = {"Publish": tamper} if tamper else {}
    try:
        with lab.client(**options) as client:
            return client.publish(alert())
    finally:
        lab.lying.tamper = {}


def refused(
    lab: Lab,
    tamper: Tamper,
    error: type[Exception],
    match: str,
    **options: Any,
) -> str:
    """The publish is refused with ``error`` whose message matches ``match``; the message."""
    with pytest.raises(error, match=match) as caught:
        publish(lab, tamper, **options)
    return str(caught.value)


def forged_entry(lab: Lab, change: Callable[[Entry], Entry]) -> Tamper:
    """The receipt's entry changed by ``change``, in a checkpoint the ledger key re-signed over
    the tree that holds it instead: signature, hash and inclusion all verify."""

    def tamper(response: exchange_pb2.PublishResponse) -> None:
        receipt = response.receipt
        cp = lab.opened(receipt)
        entry = change(Entry.decode(receipt.entry)).encode()
        leaf = leaf_hash(entry)
        root = root_from_path(receipt.seq - 1, cp.size, leaf, list(receipt.inclusion_proof))
        receipt.entry, receipt.entry_hash = entry, leaf
        receipt.checkpoint.note = sign_checkpoint(replace(cp, root=root), [lab.signer])

    return tamper


def flip(node: bytes) -> bytes:
    return bytes([node[0] ^ 1]) + node[1:]


# -- the lies -------------------------------------------------------------------------------


def wrong_inclusion_node(lab: Lab) -> None:
    def tamper(response: exchange_pb2.PublishResponse) -> None:
        proof = response.receipt.inclusion_proof
        proof[0] = flip(proof[0])

    refused(
        lab,
        tamper,
        VerificationFailed,
        r"^entry \d+ is not proven in the checkpoint of size \d+: inclusion proof does not "
        r"lead to the root hash$",
    )


def another_action(lab: Lab) -> None:
    refused(
        lab,
        forged_entry(lab, lambda e: replace(e, action=Action.UPDATE)),
        VerificationFailed,
        r"^the receipt records UPDATE of \['alert:[0-9a-f-]{36}'\], not PUBLISH of alert:",
    )


def another_object(lab: Lab) -> None:
    refused(
        lab,
        forged_entry(lab, lambda e: replace(e, objects=(OTHER_ALERT,))),
        VerificationFailed,
        rf"^the receipt records PUBLISH of \['{OTHER_ALERT}'\], not PUBLISH of alert:[0-9a-f-]",
    )


def another_agency(lab: Lab) -> None:
    refused(
        lab,
        forged_entry(lab, lambda e: replace(e, actor=Actor(OTHER_AGENCY, e.actor.cert))),
        VerificationFailed,
        rf"^the receipt attributes the act to {OTHER_AGENCY}$",
    )


def unknown_key(lab: Lab) -> None:
    stranger = Signer(lab.verifier.name, Ed25519PrivateKey.generate())

    def tamper(response: exchange_pb2.PublishResponse) -> None:
        receipt = response.receipt
        receipt.checkpoint.note = sign_checkpoint(lab.opened(receipt), [stranger])

    refused(
        lab,
        tamper,
        VerificationFailed,
        r"^the receipt's checkpoint does not verify: note has no verifying signature by a "
        r"known key$",
    )


def inconsistent_with_the_kept_checkpoint(lab: Lab) -> None:
    kept = publish(lab).receipt.checkpoint

    def tamper(response: exchange_pb2.PublishResponse) -> None:
        proof = response.receipt.consistency_proof
        proof[0] = flip(proof[0])

    message = refused(lab, tamper, ForkDetected, "history was rewritten")
    assert f"is not consistent with {kept.origin} size {kept.size} root {kept.root.hex()}" in (
        message
    )


def another_origin(lab: Lab) -> None:
    kept = publish(lab).receipt.checkpoint
    other = f"{lab.verifier.name}/20991231-0badc0de"

    def tamper(response: exchange_pb2.PublishResponse) -> None:
        receipt = response.receipt
        cp = replace(lab.opened(receipt), origin=other)
        receipt.checkpoint.note = sign_checkpoint(cp, [lab.signer])

    with pytest.raises(OtherLedger) as caught:
        publish(lab, tamper)
    error = caught.value
    assert str(error) == (
        f"the write happened: PUBLISH of alert:{error.details['alert_id']} is entry "
        f"{error.seq} of ledger {other}; but ledger {other} is not the ledger {kept.origin} "
        f"witnessed before (size {kept.size}, root {kept.root.hex()}). If the exchange's "
        "ledger was replaced on purpose (a deleted development database), trust the new one: "
        f"sinergi ledger trust {other} --identity {lab.identity} --server "
        f"{lab.lying.address}; otherwise report it to internal affairs."
    )
    # It did happen: the exchange recorded the publish.
    written = [e for e in lab.server.entries() if e.seq == error.seq]
    assert written[0].objects == (f"alert:{error.details['alert_id']}",)


SCENARIOS = [
    wrong_inclusion_node,
    another_action,
    another_object,
    another_agency,
    unknown_key,
    inconsistent_with_the_kept_checkpoint,
    another_origin,
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
def test_the_client_refuses_the_lie(lab: Lab, scenario: Callable[[Lab], None]) -> None:
    scenario(lab)
    # Nothing forged was kept: an honest answer is accepted afterwards, as before the lie.
    with lab.client() as client:
        kept = client.witness.pinned(lab.verifier.name)
    honest = publish(lab).receipt.checkpoint
    if kept is not None:
        assert kept.checkpoint.origin == honest.origin


# -- the mutation tests ---------------------------------------------------------------------


def _without(monkeypatch: pytest.MonkeyPatch, check: str) -> None:
    """A client that skips ``check``: ``inclusion``, or one of Receipt.verify's arguments."""
    if check == "inclusion":
        monkeypatch.setattr("ledger._receipt.verify_inclusion", lambda *_a, **_k: None)
        return
    verified = ExchangeClient._verified

    def lenient(self: ExchangeClient, receipt: Any, **kwargs: Any) -> Any:
        return verified(self, receipt, **{**kwargs, check: None})

    monkeypatch.setattr(ExchangeClient, "_verified", lenient)


@pytest.mark.parametrize(
    ("check", "scenario"),
    [
        ("inclusion", wrong_inclusion_node),
        ("action", another_action),
        ("obj", another_object),
        ("actor", another_agency),
    ],
    ids=["inclusion", "action", "object", "actor"],
)
def test_the_lie_tests_fail_for_a_client_that_skips_the_check(
    lab: Lab, monkeypatch: pytest.MonkeyPatch, check: str, scenario: Callable[[Lab], None]
) -> None:
    _without(monkeypatch, check)
    with pytest.raises((pytest.fail.Exception, AssertionError)):
        scenario(lab)


# -- cosigned checkpoints -------------------------------------------------------------------


@pytest.fixture
def witnesses(tmp_path: Path) -> tuple[Path, list[Cosigner]]:
    """A policy of two test witnesses that both must cosign, and their keys."""
    cosigners = [Cosigner(f"test.example/witness/{n}", Ed25519PrivateKey.generate()) for n in "ab"]
    policy = tmp_path / "witness-policy"
    policy.write_text(
        f"witness a {cosigners[0].verifier_key()}\n"
        f"witness b {cosigners[1].verifier_key()}\n"
        "group both all a b\nquorum both\n"
    )
    return policy, cosigners


def cosigned(note: bytes, checkpoint: Checkpoint, cosigners: list[Cosigner]) -> bytes:
    return note + b"".join(c.cosign(checkpoint.body(), NOW) for c in cosigners)


def test_a_cosigned_checkpoint_without_its_quorum_is_refused(
    lab: Lab, witnesses: tuple[Path, list[Cosigner]]
) -> None:
    policy, (a, _b) = witnesses

    def tamper(response: exchange_pb2.PublishResponse) -> None:
        receipt = response.receipt
        receipt.cosigned.note = cosigned(receipt.checkpoint.note, lab.opened(receipt), [a])

    refused(
        lab,
        tamper,
        QuorumFailed,
        r"^the receipt's cosigned checkpoint \S+ size \d+ lacks its quorum: cosigned by a; "
        r"the policy needs 2 of \(a, b\)$",
        witness_policy=policy,
    )


def test_a_cosigned_proof_that_does_not_connect_is_refused(
    lab: Lab, witnesses: tuple[Path, list[Cosigner]]
) -> None:
    policy, both = witnesses
    first = publish(lab, witness_policy=policy).receipt
    assert first.witnessing is not None
    assert first.witnessing.describe() == "not yet witnessed: no checkpoint has its quorum yet"
    old = first.checkpoint

    def tamper(response: exchange_pb2.PublishResponse) -> None:
        receipt = response.receipt
        receipt.cosigned.note = cosigned(first.note, old, both)
        proof = lab.proof(old.size, lab.opened(receipt).size)
        receipt.cosigned_proof[:] = [flip(proof[0]), *proof[1:]]

    refused(
        lab,
        tamper,
        VerificationFailed,
        rf"^the receipt's cosigned_proof does not connect the cosigned checkpoint of size "
        rf"{old.size} to the receipt's checkpoint of size \d+ \(consistency proof does not lead",
        witness_policy=policy,
    )


def test_a_witnessed_receipt_is_kept_and_its_size_sent_with_the_next_write(
    lab: Lab, witnesses: tuple[Path, list[Cosigner]]
) -> None:
    policy, both = witnesses
    first = publish(lab, witness_policy=policy).receipt
    old = first.checkpoint

    def tamper(response: exchange_pb2.PublishResponse) -> None:
        receipt = response.receipt
        receipt.cosigned.note = cosigned(first.note, old, both)
        receipt.cosigned_proof[:] = lab.proof(old.size, lab.opened(receipt).size)

    second = publish(lab, tamper, witness_policy=policy).receipt
    assert second.witnessing is not None
    assert second.witnessing.describe() == (
        f"witnessed: checkpoint of size {old.size} cosigned by a, b (quorum: 2 of (a, b))"
    )
    with lab.client(witness_policy=policy) as client:
        kept = client.witness.pinned(lab.verifier.name)
        assert kept is not None
        assert (kept.checkpoint, kept.witnessed) == (old, True)
        # The batch checkpoint is newer, but has no quorum: the cosigned one is kept.
        assert second.checkpoint.size > old.size
        lab.lying.witnessed.clear()
        client.publish(alert("third"))
        assert lab.lying.witnessed == [("/sinergi.v1.Exchange/Publish", old.size)]

        # GetCheckpoint must have the quorum too.
        with pytest.raises(QuorumFailed, match=r"lacks its quorum: cosigned by no witness; the"):
            client.checkpoint()

        def cosign(reply: ledger_pb2.Checkpoint) -> None:
            reply.note = cosigned(reply.note, open_checkpoint(reply.note, [lab.verifier]), both)

        lab.lying.tamper = {"GetCheckpoint": cosign}
        newest = client.newest()
        assert newest.witnessing is not None
        assert newest.witnessing.cosigners == ("a", "b")
        kept = client.witness.pinned(lab.verifier.name)
        assert kept is not None
        assert kept.checkpoint == newest.checkpoint


# -- the CLI --------------------------------------------------------------------------------


def _cli_publish(lab: Lab, *extra: str) -> Any:
    return run(
        "alert",
        "publish",
        "--identity",
        str(lab.identity),
        "--server",
        lab.lying.address,
        "--category",
        "PASSPORT_HOLD",
        "--to",
        "police",
        "--summary",
        "held",
        *extra,
    )


def test_the_cli_refuses_a_wrong_inclusion_proof(lab: Lab) -> None:
    def tamper(response: exchange_pb2.PublishResponse) -> None:
        proof = response.receipt.inclusion_proof
        proof[0] = flip(proof[0])

    lab.lying.tamper = {"Publish": tamper}
    result = _cli_publish(lab)
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("sinergi: entry ")
    assert line.endswith(": inclusion proof does not lead to the root hash")


def test_the_cli_refuses_another_ledger_until_it_is_trusted(lab: Lab) -> None:
    first = _cli_publish(lab, "--json")
    assert first.returncode == 0, first.stderr
    state = lab.identity / "witness.json"
    [kept_origin] = json.loads(state.read_text())["checkpoints"]
    other = f"{lab.verifier.name}/20991231-0badc0de"

    def moved(note: bytes) -> bytes:
        cp = replace(open_checkpoint(note, [lab.verifier]), origin=other)
        return sign_checkpoint(cp, [lab.signer])

    def receipt(response: exchange_pb2.PublishResponse) -> None:
        response.receipt.checkpoint.note = moved(response.receipt.checkpoint.note)

    def newest(reply: ledger_pb2.Checkpoint) -> None:
        reply.note = moved(reply.note)

    lab.lying.tamper = {"Publish": receipt, "GetCheckpoint": newest}
    refused_write = _cli_publish(lab, "--json")
    assert refused_write.returncode == 1, refused_write.stderr
    error = last_json(refused_write)
    assert error["ok"] is False
    assert (error["origin"], error["kept_origin"]) == (other, kept_origin)
    written = [e for e in lab.server.entries() if e.seq == error["seq"]]
    assert written[0].objects == (f"alert:{error['alert_id']}",)
    [line] = refused_write.stderr.splitlines()
    assert line.startswith(
        f"sinergi: the write happened: PUBLISH of alert:{error['alert_id']} is entry "
        f"{error['seq']} of ledger {other}; but ledger {other} is not the ledger {kept_origin} "
        "witnessed before (size "
    )
    assert line.endswith(
        f"trust the new one: sinergi ledger trust {other} --identity {lab.identity} --server "
        f"{lab.lying.address}; otherwise report it to internal affairs."
    )

    trust = ["--identity", str(lab.identity), "--server", lab.lying.address]
    wrong = run("ledger", "trust", f"{lab.verifier.name}/20991231-00000000", *trust)
    assert wrong.returncode == 1
    assert f"the exchange's newest checkpoint is of ledger {other}, not " in wrong.stderr
    foreign = run("ledger", "trust", "elsewhere.example/ledger", *trust)
    assert foreign.returncode == 2
    assert "is not a ledger of the key sinergi.dev/ledger" in foreign.stderr

    trusted = run("ledger", "trust", other, *trust)
    assert trusted.returncode == 0, trusted.stderr
    lines = trusted.stdout.splitlines()
    assert lines[0].startswith(f"trusted ledger {other}: size ")
    assert lines[1].startswith(f"  replaces ledger {kept_origin} (size ")
    assert lines[1].endswith(f"kept in {state} as evidence")
    again = _cli_publish(lab, "--json")
    assert again.returncode == 0, again.stderr
    kept = json.loads(state.read_text())
    assert kept["version"] == 2
    assert list(kept["checkpoints"]) == [other]
    [replaced] = kept["replaced"]
    assert (replaced["origin"], replaced["replaced_by"]) == (kept_origin, other)
    assert open_checkpoint(base64.b64decode(replaced["note"]), [lab.verifier]).origin == (
        kept_origin
    )


def test_the_cli_says_which_checkpoint_the_witnesses_vouched_for(
    lab: Lab, witnesses: tuple[Path, list[Cosigner]]
) -> None:
    policy, both = witnesses

    def tamper(response: exchange_pb2.PublishResponse) -> None:
        receipt = response.receipt
        receipt.cosigned.note = cosigned(receipt.checkpoint.note, lab.opened(receipt), both)

    lab.lying.tamper = {"Publish": tamper}
    result = _cli_publish(lab, "--witness-policy", str(policy))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    size = int(lines[1].rsplit("size ", 1)[1].split()[0])
    assert (
        lines[2] == f"  witnessed: checkpoint of size {size} cosigned by a, b (quorum: 2 of (a, b))"
    )
    doc = last_json(_cli_publish(lab, "--witness-policy", str(policy), "--json"))
    assert (doc["witnessed"], doc["cosigners"], doc["quorum"]) == (True, ["a", "b"], "2 of (a, b)")
    assert doc["cosigned_size"] == doc["checkpoint_size"]
    # The same receipt with one cosignature only: exit 1, saying who cosigned and who is needed.
    lab.lying.tamper = {
        "Publish": lambda response: setattr(
            response.receipt.cosigned,
            "note",
            cosigned(response.receipt.checkpoint.note, lab.opened(response.receipt), both[:1]),
        )
    }
    refused_write = _cli_publish(lab, "--witness-policy", str(policy))
    assert refused_write.returncode == 1
    assert refused_write.stderr.rstrip().endswith(
        "lacks its quorum: cosigned by a; the policy needs 2 of (a, b)"
    )


def test_an_older_newest_checkpoint_is_a_rollback_unless_witnesses_cosigned_it(lab: Lab) -> None:
    """A client without a policy kept a receipt's batch checkpoint. An exchange with witnesses
    answers GetCheckpoint with its newest cosigned one, which trails it: consistent, no alarm.
    The same older checkpoint without cosignatures is a rollback."""
    first = publish(lab).receipt.checkpoint
    publish(lab)
    with lab.client() as client:
        kept = client.witness.pinned(lab.verifier.name)
        assert kept is not None
        older = sign_checkpoint(first, [lab.signer])
        witness = Cosigner("test.example/witness/a", Ed25519PrivateKey.generate())

        def answer(note: bytes) -> Tamper:
            return lambda reply: setattr(reply, "note", note)

        lab.lying.tamper = {"GetCheckpoint": answer(older + witness.cosign(first.body(), NOW))}
        assert client.checkpoint() == first
        assert client.witness.pinned(lab.verifier.name) == kept  # the newer one stays kept
        lab.lying.tamper = {"GetCheckpoint": answer(older)}
        with pytest.raises(ForkDetected, match="is older than one already verified"):
            client.checkpoint()
