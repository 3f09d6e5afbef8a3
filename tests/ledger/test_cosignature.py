"""Tests of ledger._cosignature: C2SP tlog-cosignature, Ed25519 (cosignature/v1)."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger import (
    COSIGNATURE_ALG,
    MAX_SIGNATURES,
    Checkpoint,
    Cosignature,
    CosignatureVerifier,
    Cosigner,
    NoteError,
    Signer,
    add_signatures,
    cosignatures,
    cosigned_message,
    open_checkpoint,
    sign_note,
)
from ledger._note import _parse_signature_line

# The example of C2SP tlog-cosignature ("Ed25519 signed message" and the introduction).
SPEC_BODY = b"example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
SPEC_TIME = 1679315147
SPEC_MESSAGE = (
    b"cosignature/v1\n"
    b"time 1679315147\n"
    b"example.com/behind-the-sofa\n"
    b"20852163\n"
    b"CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
)
SPEC_LINE = (
    "\u2014 witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlr"
    "DJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA=="
).encode()

# RFC 8032 section 7.1, TEST 1: a published, worthless Ed25519 key.
RFC8032_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
W1 = "witness.example.com/w1"
# Ed25519 is deterministic: any implementation given this seed, name, time and body makes these.
W1_VKEY = "witness.example.com/w1+7e6f4aaa+BNdamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea"
W1_LINE = (
    "\u2014 witness.example.com/w1 fm9KqgAAAABkGFDL+TPmh4BYuAjsYRoqMJCWb/gWJaeRF/kmm5tlCr9sJ57DL"
    "Erur7K0yDXc2ArN+TIuotuB/HbuL3AJsp3bv/aNCQ==\n"
).encode()


@pytest.fixture
def rfc_cosigner() -> Cosigner:
    return Cosigner(W1, Ed25519PrivateKey.from_private_bytes(RFC8032_SEED))


@pytest.fixture
def log() -> Signer:
    return Signer("example.com/behind-the-sofa", Ed25519PrivateKey.generate())


def test_the_signed_message_is_the_spec_example() -> None:
    assert cosigned_message(SPEC_BODY, SPEC_TIME) == SPEC_MESSAGE


def test_the_spec_example_line_parses() -> None:
    name, kid, signature = _parse_signature_line(SPEC_LINE)
    assert name == W1
    assert kid.hex() == "8d66cf3f"
    assert int.from_bytes(signature[:8], "big") == SPEC_TIME
    assert len(signature[8:]) == 64


def test_key_id_is_sha256_of_name_newline_type_4_and_key(rfc_cosigner: Cosigner) -> None:
    verifier = rfc_cosigner.verifier()
    expected = hashlib.sha256(W1.encode() + b"\n" + b"\x04" + RFC8032_PUBLIC).digest()[:4]
    assert COSIGNATURE_ALG == 0x04
    assert verifier.key_id == expected
    assert rfc_cosigner.verifier_key() == W1_VKEY
    assert W1_VKEY.split("+")[1] == expected.hex()


def test_a_deterministic_vector_checked_by_an_independent_verifier(
    rfc_cosigner: Cosigner,
) -> None:
    line = rfc_cosigner.cosign(SPEC_BODY, SPEC_TIME)
    assert line == W1_LINE
    raw = base64.b64decode(line.decode().removesuffix("\n").split(" ")[2])
    kid, timestamp, signature = raw[:4], raw[4:12], raw[12:]
    assert kid == hashlib.sha256(W1.encode() + b"\n\x04" + RFC8032_PUBLIC).digest()[:4]
    assert timestamp == SPEC_TIME.to_bytes(8, "big")
    # cryptography's own verifier, over the message built by hand here.
    public = Ed25519PrivateKey.from_private_bytes(RFC8032_SEED).public_key()
    assert public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw) == (
        RFC8032_PUBLIC
    )
    by_hand = b"cosignature/v1\ntime 1679315147\n" + SPEC_BODY
    public.verify(signature, by_hand)  # raises InvalidSignature otherwise
    assert cosignatures(SPEC_BODY + b"\n" + line, [rfc_cosigner.verifier()]) == [
        Cosignature(W1, kid, SPEC_TIME)
    ]


def test_vkey_round_trip_and_a_note_key_is_refused(rfc_cosigner: Cosigner, log: Signer) -> None:
    verifier = CosignatureVerifier.from_vkey(W1_VKEY)
    assert verifier.name == W1
    assert verifier.verifier_key() == W1_VKEY
    assert base64.b64decode(W1_VKEY.split("+", 2)[2])[0] == 0x04
    with pytest.raises(NoteError, match="0x01"):
        CosignatureVerifier.from_vkey(log.verifier_key())
    with pytest.raises(NoteError, match="key id"):
        CosignatureVerifier.from_vkey(W1_VKEY.replace("7e6f4aaa", "7e6f4aab"))


def test_the_log_verifier_ignores_cosignature_lines(rfc_cosigner: Cosigner, log: Signer) -> None:
    note = sign_note(SPEC_BODY, [log])
    cosigned = add_signatures(note, [rfc_cosigner.cosign(SPEC_BODY, SPEC_TIME)])
    checkpoint = open_checkpoint(cosigned, [log.verifier()])
    assert checkpoint == Checkpoint.parse(SPEC_BODY)
    assert cosignatures(note, [rfc_cosigner.verifier()]) == []  # the log's line is ignored here


def test_a_known_witness_bad_cosignature_is_an_error(rfc_cosigner: Cosigner, log: Signer) -> None:
    note = sign_note(SPEC_BODY, [log])
    line = rfc_cosigner.cosign(SPEC_BODY, SPEC_TIME)
    raw = bytearray(base64.b64decode(line.decode().removesuffix("\n").split(" ")[2]))
    raw[-1] ^= 1
    bad = f"\u2014 {W1} {base64.b64encode(bytes(raw)).decode()}\n".encode()
    with pytest.raises(NoteError, match="invalid cosignature"):
        cosignatures(note + bad, [rfc_cosigner.verifier()])
    # The same bytes under another time: the time is signed too.
    raw = bytearray(base64.b64decode(line.decode().removesuffix("\n").split(" ")[2]))
    raw[4:12] = (SPEC_TIME + 1).to_bytes(8, "big")
    moved = f"\u2014 {W1} {base64.b64encode(bytes(raw)).decode()}\n".encode()
    with pytest.raises(NoteError):
        cosignatures(note + moved, [rfc_cosigner.verifier()])
    # Over another checkpoint.
    other = rfc_cosigner.cosign(SPEC_BODY.replace(b"20852163", b"20852164"), SPEC_TIME)
    with pytest.raises(NoteError):
        cosignatures(note + other, [rfc_cosigner.verifier()])
    # Unknown witnesses are ignored, whatever they say.
    stranger = Cosigner(W1, Ed25519PrivateKey.generate())
    assert cosignatures(note + bad, [stranger.verifier()]) == []


def test_add_signatures_dedupes_and_keeps_the_note_valid(
    rfc_cosigner: Cosigner, log: Signer
) -> None:
    note = sign_note(SPEC_BODY, [log])
    line = rfc_cosigner.cosign(SPEC_BODY, SPEC_TIME)
    once = add_signatures(note, [line, line])
    assert once == note + line
    assert add_signatures(once, [line]) == once
    assert add_signatures(note, [note.split(b"\n\n")[1]]) == note  # the log's own line
    open_checkpoint(once, [log.verifier()])
    assert len(cosignatures(once, [rfc_cosigner.verifier()])) == 1
    unterminated = "\u2014 w1 AAAA".encode()
    for bad in (unterminated, b"not a signature line\n", b"\xe2\x80\x94 \xff AAAA\n"):
        with pytest.raises(NoteError):
            add_signatures(note, [bad])
    with pytest.raises(NoteError):
        add_signatures(note, [line.replace(b" ", b"\t", 1)])
    many = [
        Cosigner(f"w{i}", Ed25519PrivateKey.generate()).cosign(SPEC_BODY, 1)
        for i in range(MAX_SIGNATURES)
    ]
    with pytest.raises(NoteError, match="more than"):
        add_signatures(note, many)  # the log's line and 100 more


@pytest.mark.parametrize("timestamp", [-1, 2**63, 2**64])
def test_timestamps_outside_the_range_are_refused(rfc_cosigner: Cosigner, timestamp: int) -> None:
    with pytest.raises(NoteError, match="2\\*\\*63"):
        cosigned_message(SPEC_BODY, timestamp)
    with pytest.raises(NoteError):
        rfc_cosigner.cosign(SPEC_BODY, timestamp)


def test_the_largest_timestamp_is_accepted_and_one_above_is_not(rfc_cosigner: Cosigner) -> None:
    verifier = rfc_cosigner.verifier()
    top = rfc_cosigner.cosign(SPEC_BODY, 2**63 - 1)
    assert cosignatures(SPEC_BODY + b"\n" + top, [verifier])[0].timestamp == 2**63 - 1
    # A signature line whose time field is 2**63: refused before any signature check.
    raw = bytearray(base64.b64decode(top.decode().removesuffix("\n").split(" ")[2]))
    raw[4:12] = (2**63).to_bytes(8, "big")
    above = f"\u2014 {W1} {base64.b64encode(bytes(raw)).decode()}\n".encode()
    with pytest.raises(NoteError):
        cosignatures(SPEC_BODY + b"\n" + above, [verifier])
