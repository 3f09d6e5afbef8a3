"""Tests of ledger._policy: C2SP tlog-policy files, quorums, and checks with real cosignatures."""

from __future__ import annotations

import hashlib
import re
from itertools import combinations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger import (
    Checkpoint,
    Cosigner,
    NoteError,
    PolicyError,
    QuorumError,
    Signer,
    WitnessPolicy,
    add_signatures,
    parse_logs,
    sign_checkpoint,
)

NAMES = ("X1", "X2", "X3", "Y1", "Y2", "Y3")


def _key(seed: str) -> Ed25519PrivateKey:
    """A fixed key per name: parametrized test ids hold vkeys, and every xdist worker must
    collect the same ids."""
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(seed.encode()).digest())


LOG = Signer("sinergi.test/ledger", _key("log"))
COSIGNERS = {name: Cosigner(f"w.test/{name}", _key(name)) for name in NAMES}
VKEY = {name: c.verifier_key() for name, c in COSIGNERS.items()}
CHECKPOINT = Checkpoint("sinergi.test/ledger", 7, bytes(range(32)))


def example() -> bytes:
    """The example of tlog-policy ("Example policy"), keys filled in."""
    return f"""\
log {LOG.verifier_key()}

witness X1 {VKEY["X1"]}
witness X2 {VKEY["X2"]}
witness X3 {VKEY["X3"]}
group X-witnesses 2 X1 X2 X3

witness Y1 {VKEY["Y1"]}
witness Y2 {VKEY["Y2"]}
witness Y3 {VKEY["Y3"]}
group Y-witnesses any Y1 Y2 Y3

group X-and-Y all X-witnesses Y-witnesses
quorum X-and-Y
""".encode()


def expected(cosigned: set[str]) -> bool:
    x = len(cosigned & {"X1", "X2", "X3"})
    y = len(cosigned & {"Y1", "Y2", "Y3"})
    return x >= 2 and y >= 1


def test_the_spec_example_parses_and_quorums_hold_on_every_subset() -> None:
    policy = WitnessPolicy.parse(example())
    assert [v.verifier_key() for v in policy.logs] == [LOG.verifier_key()]
    assert policy.log_urls == (None,)
    assert set(policy.witnesses) == set(NAMES)
    assert policy.groups["X-witnesses"].threshold == 2
    assert policy.groups["Y-witnesses"].threshold == 1
    assert policy.groups["X-and-Y"].threshold == 2
    assert policy.quorum == "X-and-Y"
    assert policy.needs_cosignatures
    for n in range(len(NAMES) + 1):
        for subset in combinations(NAMES, n):
            assert policy.satisfied(subset) == expected(set(subset)), subset
    assert policy.satisfied({"X1", "X3", "Y2"})
    assert not policy.satisfied({"X1", "X2"})
    assert not policy.satisfied({"X1", "Y1", "Y2", "Y3"})
    assert not policy.satisfied({"X-witnesses", "Y-witnesses"})  # groups are not cosigners
    assert policy.describe() == "2 of (2 of (X1, X2, X3), 1 of (Y1, Y2, Y3))"


def test_tabs_comments_urls_and_opaque_names() -> None:
    text = (
        "  # a comment\n"
        "\t\n"
        f"witness\tX1  {VKEY['X1']}\thttps://x1.example/\n"
        f"witness K {VKEY['X2']}\n"
        f"witness \u212a {VKEY['X3']}\n"  # a Kelvin sign: another name than K
        f"witness Y\u00a0Z {VKEY['Y1']}\n"  # U+00A0 is no separator in a policy
        "quorum X1   \n"
    ).encode()
    policy = WitnessPolicy.parse(text)
    assert policy.witnesses["X1"].url == "https://x1.example/"
    assert {"K", "\u212a", "Y\u00a0Z"} <= set(policy.witnesses)
    assert policy.satisfied({"X1"})
    assert not policy.logs


def test_quorum_none() -> None:
    policy = WitnessPolicy.parse(b"quorum none\n")
    assert not policy.needs_cosignatures
    assert policy.satisfied(set())
    assert policy.describe() == "no cosignature"
    note = sign_checkpoint(CHECKPOINT, [LOG])
    assert policy.check(note, [LOG.verifier()]).cosigners == {}


W = VKEY["X1"]
W2 = VKEY["X2"]
REFUSED = [
    ("group G any A\nquorum G\n", 1, "not defined above"),
    ("quorum A\n", 1, "not defined above"),
    (f"witness A {W}\nwitness A {W2}\nquorum A\n", 2, "defined twice"),
    (f"witness A {W}\ngroup A any A\nquorum A\n", 2, "defined twice"),
    (f"witness none {W}\nquorum none\n", 1, "reserved"),
    (f"witness A {W}\ngroup none any A\nquorum A\n", 2, "reserved"),
    (f"witness A {W}\ngroup G any A none\nquorum G\n", 2, "'none' cannot be a group member"),
    (f"witness A {W}\ngroup G 2 A\nquorum G\n", 2, "threshold 2 is not between 1 and 1"),
    (f"witness A {W}\ngroup G 0 A\nquorum G\n", 2, "threshold '0'"),
    (f"witness A {W}\nwitness B {W2}\ngroup G 02 A B\nquorum G\n", 3, "threshold '02'"),
    (f"witness A {W}\ngroup G \u00b2 A\nquorum G\n", 2, "threshold"),  # isdigit() says yes
    (f"witness A {W}\ngroup G -1 A\nquorum G\n", 2, "threshold '-1'"),
    (f"witness A {W}\ngroup G any A A\nquorum G\n", 2, "member twice"),
    (f"witness A {W}\n", None, "no quorum line"),
    (f"witness A {W}\nquorum A\nquorum none\n", 3, "a second quorum line"),
    (f"witness A {W}\nwitness B {W}\nquorum A\n", 2, "witness key is listed twice"),
    (f"log {LOG.verifier_key()}\nlog {LOG.verifier_key()}\nquorum none\n", 2, "log key"),
    (f"witness A {W}\r\nquorum A\n", 1, "byte 0x0d"),
    (f"# fine\nwitness A {W}\nquorum\x0bA\n", 3, "byte 0x0b"),
    (f"witness A {LOG.verifier_key()}\nquorum A\n", 1, "0x01"),
    (f"log {W}\nquorum none\n", 1, "algorithm 0x04"),
    ("witness A\nquorum none\n", 1, "not a log, witness"),
    ("group G any\nquorum none\n", 1, "not a log, witness"),
    ("quorum\nquorum none\n", 1, "not a log, witness"),
    (f"witnesses A {W}\nquorum none\n", 1, "not a log, witness"),
]


@pytest.mark.parametrize(("text", "line", "message"), REFUSED)
def test_refusals_name_the_line(text: str, line: int | None, message: str) -> None:
    with pytest.raises(PolicyError, match=re.escape(message)) as caught:
        WitnessPolicy.parse(text.encode(), "p")
    where = "p:" if line is None else f"p:{line}:"
    assert str(caught.value).startswith(where), caught.value


def test_the_same_key_under_another_name_is_a_duplicate() -> None:
    key = Ed25519PrivateKey.generate()
    a, b = Cosigner("a.test/w", key), Cosigner("b.test/w", key)
    text = f"witness A {a.verifier_key()}\nwitness B {b.verifier_key()}\nquorum A\n"
    with pytest.raises(PolicyError, match="p:2: this witness key is listed twice"):
        WitnessPolicy.parse(text.encode(), "p")
    logs = Signer("a.test/log", key), Signer("b.test/log", key)
    text = "".join(f"log {s.verifier_key()}\n" for s in logs)
    with pytest.raises(PolicyError, match="logs:2: this log key is listed twice"):
        parse_logs(text.encode())


def test_parse_logs_reads_log_lines_only() -> None:
    text = f"# trusted\nlog {LOG.verifier_key()} https://log.example/\n".encode()
    ((verifier, url),) = parse_logs(text)
    assert verifier.verifier_key() == LOG.verifier_key()
    assert url == "https://log.example/"
    assert parse_logs(b"# nothing yet\n") == ()
    with pytest.raises(PolicyError, match="f:2: not a `log <vkey>"):
        parse_logs(f"log {LOG.verifier_key()}\nquorum none\n".encode(), "f")
    with pytest.raises(PolicyError, match=r"f:1: .*key id"):
        parse_logs(f"log {LOG.verifier_key()[:-2]}AA\n".encode(), "f")


def cosigned(names: list[str], checkpoint: Checkpoint = CHECKPOINT) -> bytes:
    note = sign_checkpoint(checkpoint, [LOG])
    return add_signatures(note, [COSIGNERS[n].cosign(checkpoint.body(), 1700000000) for n in names])


def test_check_with_real_cosignatures() -> None:
    policy = WitnessPolicy.parse(example())
    met = policy.check(cosigned(["X1", "Y3", "X3"]))
    assert met.checkpoint == CHECKPOINT
    assert set(met.cosigners) == {"X1", "X3", "Y3"}
    assert met.cosigners["X1"].timestamp == 1700000000
    with pytest.raises(QuorumError) as caught:
        policy.check(cosigned(["X1", "Y1", "Y2"]))
    message = str(caught.value)
    assert "sinergi.test/ledger size 7 lacks its quorum" in message
    assert "cosigned by X1, Y1, Y2" in message
    assert "needs 2 of (2 of (X1, X2, X3), 1 of (Y1, Y2, Y3))" in message
    with pytest.raises(QuorumError, match="cosigned by no witness"):
        policy.check(cosigned([]))


def test_check_refuses_a_bad_cosignature_and_ignores_strangers() -> None:
    policy = WitnessPolicy.parse(example())
    other = Checkpoint(CHECKPOINT.origin, 8, bytes(32))
    forged = cosigned(["X1", "X2"]) + COSIGNERS["Y1"].cosign(other.body(), 1)
    with pytest.raises(NoteError, match="invalid cosignature"):
        policy.check(forged)
    stranger = Cosigner("w.test/Y1", Ed25519PrivateKey.generate())
    note = cosigned(["X1", "X2"]) + stranger.cosign(CHECKPOINT.body(), 1)
    with pytest.raises(QuorumError, match="cosigned by X1, X2;"):
        policy.check(note)


def test_check_needs_the_log_signature() -> None:
    policy = WitnessPolicy.parse(example())
    unsigned = CHECKPOINT.body() + b"\n" + COSIGNERS["X1"].cosign(CHECKPOINT.body(), 1)
    with pytest.raises(NoteError):
        policy.check(unsigned)
