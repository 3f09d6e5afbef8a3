"""The witness over real HTTPS with mutual TLS: C2SP tlog-witness add-checkpoint and monitoring,
its alarms (log line, metric, recorded refusal) and its TLS posture."""

from __future__ import annotations

import logging
import re
import ssl
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

import ledger
from certs import create_dev_pki
from tests.conftest import ORIGIN
from tests.witness.conftest import Client, Clock, Running, Tree

POLICE = "spiffe://sinergi.dev/agency/police/system/gateway"


def cosigned_by(note: bytes, lines: bytes, vkey: str) -> ledger.Cosignature:
    """The one cosignature of ``vkey`` on ``note`` + ``lines``, checked as a verifier would."""
    verifier = ledger.CosignatureVerifier.from_vkey(vkey)
    (cosignature,) = ledger.cosignatures(note + lines, [verifier])
    return cosignature


def test_cosigns_a_first_checkpoint_then_a_consistent_growth(
    start_witness: Callable[..., Running], dev: Path, signer: ledger.Signer
) -> None:
    witness = start_witness()
    client = Client(dev, witness.port)
    tree = Tree(signer)
    first = client.add(tree.request(0, 5))
    assert (first.status, first.content_type) == (200, "text/plain; charset=utf-8")
    assert first.body.startswith("\u2014 sinergi.dev/witness/police ".encode())
    assert first.body.count(b"\n") == 1
    assert cosigned_by(tree.note(5), first.body, witness.vkey).timestamp == witness.clock.now

    witness.clock.now += 60
    grown = client.add(tree.request(5, 13))
    assert grown.status == 200
    assert cosigned_by(tree.note(13), grown.body, witness.vkey).timestamp == witness.clock.now

    # The monitoring prefix serves the note as submitted and the line that was returned.
    served = client.checkpoint(ORIGIN)
    assert served.status == 200
    assert served.body == tree.note(13) + grown.body
    assert ledger.open_checkpoint(served.body, [signer.verifier()]) == tree.checkpoint(13)
    status = client.status()
    assert status["name"] == "sinergi.dev/witness/police"
    assert status["vkey"] == witness.vkey
    latest = {"origin": ORIGIN, "size": 13, "root": tree.checkpoint(13).root.hex()}
    assert status["logs"] == [{**latest, "cosigned_at": witness.clock.now}]
    assert (status["refusals"], status["last_refusal"]) == (0, None)
    assert 'sinergi_witness_checkpoint_size{origin="sinergi.dev/ledger"} 13.0' in client.metrics()


def test_both_development_witnesses_meet_the_development_policy(
    start_witness: Callable[..., Running], dev: Path, signer: ledger.Signer
) -> None:
    policy = ledger.WitnessPolicy.load(dev / "witness-policy")
    tree = Tree(signer, f"{ORIGIN}/2026-12")  # an origin under the key's name
    note = tree.note(3)
    lines = []
    for name in ("witness-internal-affairs", "witness-police"):
        reply = Client(dev, start_witness(name).port).add(tree.request(0, 3))
        assert reply.status == 200, reply
        lines.append(reply.body)
        with pytest.raises(ledger.QuorumError, match="cosigned by "):
            policy.check(ledger.add_signatures(note, lines[:1]))
    met = policy.check(ledger.add_signatures(note, lines))
    assert set(met.cosigners) == {"internal-affairs", "police"}
    assert met.checkpoint == tree.checkpoint(3)


def test_the_cosignature_time_never_goes_backwards(
    start_witness: Callable[..., Running], dev: Path, signer: ledger.Signer
) -> None:
    witness = start_witness(clock=Clock(2_000_000_000))
    client = Client(dev, witness.port)
    tree = Tree(signer)
    assert client.add(tree.request(0, 2)).status == 200
    witness.clock.now = 1_000_000_000  # the clock was set back
    again = client.add(tree.request(2, 4))
    assert cosigned_by(tree.note(4), again.body, witness.vkey).timestamp == 2_000_000_000


def refusals_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.ERROR and "checkpoint refused" in r.getMessage()
    ]


def test_a_rollback_and_a_fork_are_refused_logged_counted_and_recorded(
    start_witness: Callable[..., Running],
    dev: Path,
    signer: ledger.Signer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    witness = start_witness()
    client = Client(dev, witness.port, identity="police")
    tree, fork = Tree(signer), Tree(signer, salt=b"rewritten ")
    assert client.add(tree.request(0, 10)).status == 200
    caplog.set_level(logging.INFO)

    rollback = client.add(ledger.AddCheckpoint(10, (), tree.note(7)))
    assert rollback.status == 400
    assert b"old size 10 is larger than the checkpoint's 7" in rollback.body
    same_size = client.add(ledger.AddCheckpoint(10, (), fork.note(10)))
    assert same_size.status == 422
    assert b"forked" in same_size.body
    fork.grow(20)
    other_history = ledger.AddCheckpoint(
        10, tuple(ledger.consistency_proof(10, 20, fork.node)), fork.note(20)
    )
    inconsistent = client.add(other_history)
    assert inconsistent.status == 422
    assert b"not consistent with the cosigned size 10" in inconsistent.body

    logged = refusals_logged(caplog)
    assert len(logged) == 3
    assert all(POLICE in line and ORIGIN in line for line in logged)
    assert '"status": 422' in logged[-1]
    metrics = client.metrics()
    assert 'sinergi_witness_refusals_total{origin="sinergi.dev/ledger",status="400"} 1.0' in metrics
    assert 'sinergi_witness_refusals_total{origin="sinergi.dev/ledger",status="422"} 2.0' in metrics
    assert re.search(
        r'sinergi_witness_requests_total\{endpoint="add-checkpoint",status="422"\} 2.0', metrics
    )
    status = client.status()
    assert status["refusals"] == 3
    last = status["last_refusal"]
    assert isinstance(last, dict)
    assert last["status"] == 422
    assert last["origin"] == ORIGIN
    assert last["submitter"] == POLICE
    assert (last["old_size"], last["size"]) == (10, 20)
    assert "not consistent" in str(last["reason"])
    # Nothing moved: the record is still the checkpoint of size 10.
    assert client.checkpoint(ORIGIN).body.startswith(tree.note(10))
    assert client.add(tree.request(10, 11)).status == 200


def test_409_carries_the_latest_size(
    start_witness: Callable[..., Running], dev: Path, signer: ledger.Signer
) -> None:
    client = Client(dev, start_witness().port)
    tree = Tree(signer)
    assert client.add(tree.request(0, 6)).status == 200
    for request in (tree.request(0, 9), tree.request(3, 9), tree.request(7, 9)):
        reply = client.add(request)
        assert (reply.status, reply.content_type, reply.body) == (409, "text/x.tlog.size", b"6\n")
    assert client.status()["refusals"] == 3


def test_unknown_origin_404_unknown_key_403_malformed_400_none_recorded(
    start_witness: Callable[..., Running],
    dev: Path,
    signer: ledger.Signer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = Client(dev, start_witness().port)
    caplog.set_level(logging.INFO)
    elsewhere = "elsewhere.example/ledger"
    stranger = Tree(ledger.Signer(elsewhere, ledger.generate_signing_key()), elsewhere)
    assert client.add(stranger.request(0, 1)).status == 404
    assert client.add(Tree(signer, "sinergi.dev/ledgerX").request(0, 1)).status == 404
    impostor = ledger.Signer(ORIGIN, ledger.generate_signing_key())  # same name, other key
    assert client.add(Tree(impostor).request(0, 1)).status == 403
    bad = client.request("POST", "/add-checkpoint", b"old 01\n\n")
    assert (bad.status, bad.body) == (400, b"the body does not start with an `old <size>` line\n")
    assert client.request("POST", "/add-checkpoint", b"x" * 70_000).status == 413
    assert client.request("GET", "/add-checkpoint").status == 405
    assert client.checkpoint(ORIGIN).status == 404  # never cosigned
    assert client.request("GET", "/not-a-hash/checkpoint").status == 404
    assert client.status()["refusals"] == 0
    assert not refusals_logged(caplog)
    assert 'sinergi_witness_requests_total{endpoint="add-checkpoint",status="404"} 2.0' in (
        client.metrics()
    )


def test_tls_needs_a_client_certificate_of_the_pki_with_client_auth(
    start_witness: Callable[..., Running], dev: Path, signer: ledger.Signer, tmp_path: Path
) -> None:
    port = start_witness().port
    with pytest.raises((ssl.SSLError, ConnectionError)):
        Client(dev, port, identity=None).status()
    # The other witness's certificate: issued by the same CA, but for serverAuth only.
    with pytest.raises((ssl.SSLError, ConnectionError)):
        Client(dev, port, identity="witness-internal-affairs").status()
    # The exchange's certificate says clientAuth too: it is the witnesses' client.
    assert Client(dev, port, identity="server").status()["refusals"] == 0
    assert Client(dev, port, identity="internal-affairs").status()["refusals"] == 0
    # A client that does not trust the witness's CA does not talk to it either.
    other = tmp_path / "other"
    create_dev_pki(other)
    with pytest.raises(ssl.SSLError):
        Client(other, port, identity="police").status()


def test_concurrent_submissions_never_roll_the_record_back(
    start_witness: Callable[..., Running], dev: Path, signer: ledger.Signer
) -> None:
    """tlog-witness's race: A with size N and B with size N+K, both from the same old size,
    at once. Each submitter acts as a log does: on 409 it retries from the size it is told."""
    client = Client(dev, start_witness().port)
    tree = Tree(signer)
    tree.grow(200)
    size = 0

    def submit(old: int, new: int, results: list[int]) -> None:
        reply = client.add(tree.request(old, new))
        results.append(reply.status)
        if reply.status == 409:
            told = int(reply.body)
            retry = client.add(tree.request(told, new)) if told <= new else None
            results.append(retry.status if retry is not None else 400)

    for round_ in range(40):
        n, k = size + 1 + round_ % 3, 1 + round_ % 4
        a: list[int] = []
        b: list[int] = []
        barrier = threading.Barrier(2)

        def run(old: int, new: int, results: list[int], barrier: threading.Barrier) -> None:
            barrier.wait(10)
            submit(old, new, results)

        threads = [
            threading.Thread(target=run, args=(size, n, a, barrier)),
            threading.Thread(target=run, args=(size, n + k, b, barrier)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert b[-1] == 200, (a, b)  # the larger always lands, at once or after a 409
        assert a in ([200], [409, 400]), a
        served = ledger.open_checkpoint(client.checkpoint(ORIGIN).body, [signer.verifier()])
        assert served == tree.checkpoint(n + k), (round_, a, b)
        size = n + k
