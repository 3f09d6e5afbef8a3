"""Tests of ledger._note: C2SP signed notes and checkpoints, golang.org/x/mod/sumdb/note vectors."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ledger._errors import LedgerError, NoteError
from ledger._merkle import leaf_hash, root_of
from ledger._note import (
    ED25519_ALG,
    MAX_SIGNATURES,
    Checkpoint,
    Signer,
    Verifier,
    generate_signing_key,
    key_id,
    load_private_key_pem,
    load_public_key_pem,
    open_checkpoint,
    open_note,
    private_key_pem,
    public_key_pem,
    sign_checkpoint,
    sign_note,
)
from tests.ledger.doc_blocks import DOC, check_doc_block, generated_block

# The 8 leaf inputs of transparency-dev/merkle testonly/constants.go (see test_merkle.py).
TD_LEAVES = [
    bytes.fromhex(x)
    for x in json.loads(
        (Path(__file__).parent / "vectors" / "transparency-dev-merkle.json").read_text()
    )["constants"]["leaf_inputs_hex"]
]

# ---------------------------------------------------------------------------------------------
# golang.org/x/mod/sumdb/note test vectors: github.com/golang/mod sumdb/note/note_test.go
# (commit 02c991387e35f9e4c0a9b7ce137717055f8d716d), TestNewVerifier, TestSign and TestOpen.

PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
GO_TEXT = (
    b"If you think cryptography is the answer to your problem,\n"
    b"then you don't know what your problem is.\n"
)
PETER_SIG = (
    "\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqd"
    "ngotpRZb6KE6RyyBwJnAM=\n"
).encode()
ENOCH_SIG = (
    "\u2014 EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwn"
    "WLox33WWd1RvMc+QQ=\n"
).encode()

# C2SP tlog-checkpoint (commit 2793893976c835db049c194d8f2c4f946dcb70ba), the example checkpoint.
SPEC_CHECKPOINT = (
    "example.com/behind-the-sofa\n"
    "20852163\n"
    "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    "\n"
    "\u2014 example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/"
    "Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
).encode()

# C2SP signed-note (commit 055287621bf3cd13ff4394418a3e8efc2d5e8ed7), the example note: its text
# holds an empty line, so only the last blank line separates the signatures.
SPEC_NOTE = (
    "Ognuno sta solo sul cuor della terra\n"
    "trafitto da un raggio di sole:\n"
    "\n"
    "ed \u00e8 subito sera.\n"
    "\n"
    "\u2014 quasimodo.example/salvatore NnugSzTjtVAewIS+Z/iJhUPeFDkO/5QQ2i5ddnGITLlC+EhfLW9oJKON"
    "rMouFSQU0xMcXxj99ihAQwaqP3ZekRwNtIc=\n"
).encode()


def peter_signer() -> Signer:
    """The Go skey is "PRIVATE+KEY+<name>+<key id>+base64(0x01 || 32-byte Ed25519 seed)"."""
    raw = base64.b64decode(PETER_SKEY.split("+", 4)[4])
    assert raw[0] == ED25519_ALG
    return Signer("PeterNeumann", Ed25519PrivateKey.from_private_bytes(raw[1:]))


def key(seed_byte: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes([seed_byte]) * 32)


def test_go_keys() -> None:
    signer = peter_signer()
    assert signer.verifier_key() == PETER_VKEY
    assert signer.key_id == bytes.fromhex("c74f20a3")
    v = Verifier.from_vkey(PETER_VKEY)
    assert (v.name, v.key_id.hex()) == ("PeterNeumann", "c74f20a3")
    assert v.verifier_key() == PETER_VKEY
    assert signer.verifier().verifier_key() == PETER_VKEY
    raw = base64.b64decode(PETER_VKEY.split("+", 2)[2])
    assert key_id("PeterNeumann", raw[1:]) == bytes.fromhex("c74f20a3")
    assert (
        key_id("PeterNeumann", raw[1:], ED25519_ALG)
        == hashlib.sha256(b"PeterNeumann\n\x01" + raw[1:]).digest()[:4]
    )
    e = Verifier.from_vkey(ENOCH_VKEY)
    assert (e.name, e.key_id.hex()) == ("EnochRoot", "af0cfe78")


def test_go_vkey_manglings_are_rejected() -> None:
    """TestNewVerifier: every proper substring and every single-byte increment fails."""
    b = PETER_VKEY
    for i in range(len(b) + 1):
        for j in range(i + 1, len(b) + 1):
            if i != 0 or j != len(b):
                with pytest.raises(NoteError):
                    Verifier.from_vkey(b[i:j])
    for i in range(len(b)):
        with pytest.raises(NoteError):
            Verifier.from_vkey(b[:i] + chr(ord(b[i]) + 1) + b[i + 1 :])
    # Wrong length key and unknown algorithm, each with an adjusted (matching) key hash. (The
    # first is also non-canonical base64, "EY==" has non-zero padding bits, which we refuse
    # before looking at its length; Go's decoder accepts it and then refuses the length.)
    with pytest.raises(NoteError):
        Verifier.from_vkey(
            "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY=="
        )
    with pytest.raises(NoteError, match="algorithm"):
        Verifier.from_vkey("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")
    short = b"\x01" + b"\x07" * 31  # canonical base64 this time, with a matching key ID
    with pytest.raises(NoteError, match="32 bytes"):
        Verifier.from_vkey(f"n+{key_id('n', short[1:]).hex()}+{base64.b64encode(short).decode()}")
    assert Verifier.from_vkey(PETER_VKEY.replace("c74f20a3", "C74F20A3")).key_id.hex() == "c74f20a3"


def test_go_sign_is_byte_exact() -> None:
    """TestSign: Ed25519 is deterministic, so the note is byte for byte Go's."""
    want = GO_TEXT + b"\n" + PETER_SIG
    assert sign_note(GO_TEXT, [peter_signer()]) == want
    assert peter_signer().sign(GO_TEXT) == PETER_SIG
    with pytest.raises(NoteError):
        sign_note(b"abc", [peter_signer()])  # no final newline


def test_go_open() -> None:
    """TestOpen."""
    peter, enoch = Verifier.from_vkey(PETER_VKEY), Verifier.from_vkey(ENOCH_VKEY)
    note = GO_TEXT + b"\n" + PETER_SIG + ENOCH_SIG
    assert open_note(note, [peter]) == (GO_TEXT, ["PeterNeumann"])  # Enoch unknown: ignored
    assert open_note(note, [enoch]) == (GO_TEXT, ["EnochRoot"])
    assert open_note(note, [peter, enoch]) == (GO_TEXT, ["PeterNeumann", "EnochRoot"])
    with pytest.raises(NoteError, match="no verifying signature"):
        open_note(note, [])
    # A verifier given twice is not ambiguous: it is the same key.
    assert open_note(GO_TEXT + b"\n" + ENOCH_SIG, [enoch, peter, enoch])[1] == ["EnochRoot"]
    # Too many signatures, verifiable or not.
    with pytest.raises(NoteError, match="more than 100"):
        open_note(GO_TEXT + b"\n" + PETER_SIG * 101, [peter])
    with pytest.raises(NoteError, match="more than 100"):
        open_note(GO_TEXT + b"\n" + PETER_SIG * 101, [])
    assert open_note(GO_TEXT + b"\n" + PETER_SIG * MAX_SIGNATURES, [peter])[1] == ["PeterNeumann"]
    # An invalid signature by a known key is tampering.
    bad_peter = PETER_SIG[:60] + b"ABCD" + PETER_SIG[60:]
    with pytest.raises(NoteError, match="invalid signature by known key PeterNeumann"):
        open_note(GO_TEXT + b"\n" + bad_peter, [peter])
    # Repeated signatures, and an invalid one by an unknown key, are ignored.
    bad_enoch = ENOCH_SIG[:60] + b"ABCD" + ENOCH_SIG[60:]
    note = GO_TEXT + b"\n" + PETER_SIG + PETER_SIG + ENOCH_SIG + ENOCH_SIG + bad_enoch
    assert open_note(note, [peter]) == (GO_TEXT, ["PeterNeumann"])
    # ... but not when that key is known.
    with pytest.raises(NoteError, match="EnochRoot"):
        open_note(note, [peter, enoch])


@pytest.mark.parametrize(
    "msg",
    [
        GO_TEXT,
        GO_TEXT + b"\n",
        GO_TEXT + b"\n" + PETER_SIG[:-1],
        b"\x01" + GO_TEXT + b"\n" + PETER_SIG,
        b"\xff" + GO_TEXT + b"\n" + PETER_SIG,
        GO_TEXT
        + b"\n"
        + "\u2014 Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1"
        "FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=".encode(),
        GO_TEXT + b"\n" + PETER_SIG + b"Unexpected line.\n",
    ],
)
def test_go_malformed_notes(msg: bytes) -> None:
    """TestOpen's "Invalid encoded message syntax" cases."""
    with pytest.raises(NoteError):
        open_note(msg, [Verifier.from_vkey(PETER_VKEY)])


def test_go_wrong_name_or_key_id_is_unknown() -> None:
    """A signature whose name or key ID differs from the verifier's is by an unknown key."""
    peter = Verifier.from_vkey(PETER_VKEY)
    misnamed = PETER_SIG.replace(b"PeterNeumann", b"CarmenSandiego")
    wrong_id = PETER_SIG.replace(b"x08g", b"xxxx")
    for sig in (misnamed, wrong_id):
        with pytest.raises(NoteError, match="no verifying signature"):
            open_note(GO_TEXT + b"\n" + sig, [peter])


# ---------------------------------------------------------------------------------------------
# C2SP spec examples


def test_spec_checkpoint_example() -> None:
    text_end = SPEC_CHECKPOINT.index(b"\n\n") + 1
    cp = Checkpoint.parse(SPEC_CHECKPOINT[:text_end])
    assert cp.origin == "example.com/behind-the-sofa"
    assert cp.size == 20852163
    assert cp.root == base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
    assert cp.extensions == ()
    assert cp.body() == SPEC_CHECKPOINT[:text_end]
    # Its public key is not published: with our keys, or a key of the same name, nothing
    # verifies, and the note is refused.
    same_name = Signer("example.com/behind-the-sofa", key(1)).verifier()
    for verifiers in ([], [same_name], [Verifier.from_vkey(PETER_VKEY)]):
        with pytest.raises(NoteError, match="no verifying signature"):
            open_checkpoint(SPEC_CHECKPOINT, verifiers)
    # The signature is 4 bytes of key ID and 64 of Ed25519.
    sig_line = SPEC_CHECKPOINT[text_end + 1 :].decode()
    assert len(base64.b64decode(sig_line.split(" ")[2])) == 68


def test_spec_note_example_splits_at_the_last_blank_line() -> None:
    with pytest.raises(NoteError, match="no verifying signature"):  # well-formed, unverifiable
        open_note(SPEC_NOTE, [Verifier.from_vkey(PETER_VKEY)])
    text = SPEC_NOTE[: SPEC_NOTE.rindex(b"\n\n") + 1]
    s = Signer("quasimodo.example/salvatore", key(2))
    assert open_note(sign_note(text, [s]), [s.verifier()]) == (text, [s.name])


# ---------------------------------------------------------------------------------------------
# Round trips, rotation, unknown keys, tampering


def example_checkpoint(**changes: object) -> Checkpoint:
    fields: dict[str, object] = {
        "origin": "sinergi.example/ledger",
        "size": 8,
        "root": root_of([leaf_hash(x) for x in TD_LEAVES]),
    }
    fields.update(changes)
    return Checkpoint(**fields)  # type: ignore[arg-type]


def test_checkpoint_round_trip() -> None:
    s = Signer("sinergi.example/ledger", generate_signing_key())
    for cp in (
        example_checkpoint(),
        example_checkpoint(size=0, root=hashlib.sha256(b"").digest()),
        example_checkpoint(extensions=("ext one", "\u00e9tendue")),
        example_checkpoint(size=2**64 - 1),
    ):
        note = sign_checkpoint(cp, [s])
        assert note.startswith(cp.body() + b"\n\xe2\x80\x94 sinergi.example/ledger ")
        assert open_checkpoint(note, [s.verifier()]) == cp
        assert Checkpoint.parse(cp.body()) == cp
        assert open_checkpoint(note, [Verifier.from_vkey(s.verifier_key())]) == cp
        assert open_checkpoint(note, [s.verifier()], origin=cp.origin) == cp
        with pytest.raises(NoteError, match="origin"):
            open_checkpoint(note, [s.verifier()], origin="other.example/ledger")


def test_key_rotation_and_unknown_keys() -> None:
    old = Signer("sinergi.example/ledger", key(3))
    new = Signer("sinergi.example/ledger", key(4))
    witness = Signer("witness.example/w1", key(5))
    assert old.key_id != new.key_id
    note = sign_checkpoint(example_checkpoint(), [old, new, witness])
    cp = example_checkpoint()
    assert open_checkpoint(note, [old.verifier()]) == cp
    assert open_checkpoint(note, [new.verifier()]) == cp
    assert open_note(note, [new.verifier()])[1] == ["sinergi.example/ledger"]
    assert open_note(note, [witness.verifier(), old.verifier(), new.verifier()])[1] == [
        "sinergi.example/ledger",
        "sinergi.example/ledger",
        "witness.example/w1",
    ]
    # Only unknown keys: refused.
    stranger = Signer("sinergi.example/ledger", key(6))
    with pytest.raises(NoteError, match="no verifying signature"):
        open_checkpoint(note, [stranger.verifier()])
    # Same key under another name is another key (different key ID): unknown, so refused.
    renamed = Signer("other.example/ledger", key(3))
    with pytest.raises(NoteError, match="no verifying signature"):
        open_checkpoint(note, [renamed.verifier()])


def flip_base64_signature(note: bytes, line_no: int) -> bytes:
    text_end = note.rindex(b"\n\n") + 2
    lines = note[text_end:].decode().splitlines(keepends=True)
    prefix, b64 = lines[line_no].rstrip("\n").rsplit(" ", 1)
    raw = bytearray(base64.b64decode(b64))
    raw[-1] ^= 0x01  # a bit of the Ed25519 signature, not of the key ID
    lines[line_no] = f"{prefix} {base64.b64encode(bytes(raw)).decode()}\n"
    return note[:text_end] + "".join(lines).encode()


def test_tampering_is_a_note_error() -> None:
    a, b = Signer("sinergi.example/ledger", key(7)), Signer("witness.example/w1", key(8))
    va, vb = a.verifier(), b.verifier()
    note = sign_checkpoint(example_checkpoint(), [a, b])
    assert open_checkpoint(note, [va, vb]) == example_checkpoint()

    tampered_text = note.replace(b"\n8\n", b"\n9\n", 1)
    for verifiers in ([va], [vb], [va, vb]):
        with pytest.raises(NoteError, match="invalid signature"):
            open_note(tampered_text, verifiers)
    # A tampered signature by a known key fails the note, even when another known key verifies.
    bad_b = flip_base64_signature(note, 1)
    with pytest.raises(NoteError, match="invalid signature by known key witness"):
        open_note(bad_b, [va, vb])
    assert open_checkpoint(bad_b, [va]) == example_checkpoint()  # b unknown here: ignored
    with pytest.raises(NoteError):
        open_note(flip_base64_signature(note, 0), [va])
    # A signature of the wrong length by a known key.
    short = note.replace(b"\n\n", b"\n\n", 1)
    text_end = short.rindex(b"\n\n") + 2
    line = a.sign(b"x").decode().rstrip("\n").rsplit(" ", 1)
    raw = base64.b64decode(line[1])[:-1]
    bad_len = short[:text_end] + f"{line[0]} {base64.b64encode(raw).decode()}\n".encode()
    with pytest.raises(NoteError, match="invalid signature"):
        open_note(bad_len, [va])


@pytest.mark.parametrize(
    "mutate",
    [
        lambda n: n.replace(b"\n\n", b"\n", 1),  # no blank line before the signatures
        lambda n: n.rstrip(b"\n"),  # last signature line without its newline
        lambda n: n + b"\n",  # empty signature line
        lambda n: n + b"extra line\n",
        lambda n: n.replace(b"\xe2\x80\x94 ", b"- ", 1),  # hyphen instead of em dash
        lambda n: n.replace(b"\xe2\x80\x94 ", b"\xe2\x80\x94  ", 1),  # two spaces
        lambda n: n.replace(b"sinergi", b"sin\x01ergi", 1),  # control character in the text
        lambda n: n.replace(b"sinergi", b"sin\tergi", 1),  # tab
        lambda n: n.replace(b"sinergi", b"sin\rergi", 1),  # carriage return
        lambda n: n.replace(b"\n", b"\r\n"),  # CRLF
        lambda n: n.replace(b"sinergi", b"sin\xc3ergi", 1),  # invalid UTF-8
        lambda n: n.replace(b"sinergi", b"sin\xed\xa0\x80ergi", 1),  # UTF-8 surrogate
        lambda n: n[: n.rindex(b" ") + 1] + b"!!!!\n",  # signature not base64
        lambda n: n[: n.rindex(b" ") + 1] + b"AAAA\n",  # signature shorter than a key ID + 1
        lambda n: n[: n.rindex(b" ") + 1] + b"\n",  # empty signature
        lambda n: n[: n.rindex(b"=")] + b"\n",  # padding removed
    ],
)
def test_malformed_notes(mutate: object) -> None:
    s = Signer("sinergi.example/ledger", key(9))
    note = sign_checkpoint(example_checkpoint(), [s])
    bad = mutate(note)  # type: ignore[operator]
    assert bad != note
    with pytest.raises(NoteError):
        open_checkpoint(bad, [s.verifier()])


def test_sign_note_validates() -> None:
    s = Signer("sinergi.example/ledger", key(10))
    with pytest.raises(ValueError):
        sign_note(b"text\n", [])
    with pytest.raises(ValueError):
        sign_note(b"text\n", [s, s])
    for bad in (b"no newline", b"ctl\x00char\n", b"tab\there\n", b"\xff\n"):
        with pytest.raises(NoteError):
            sign_note(bad, [s])
    # Several signers: one line each, in order.
    t = Signer("witness.example/w1", key(11))
    note = sign_note(b"text\n", [s, t])
    assert note == b"text\n\n" + s.sign(b"text\n") + t.sign(b"text\n")


@pytest.mark.parametrize(
    "name",
    ["", "a b", "a+b", "a\tb", "a\nb", "a\u00a0b", "a\u2003b", "a\u3000b", "a\u0085b", "a\x01b"],
)
def test_invalid_key_names(name: str) -> None:
    with pytest.raises(ValueError):
        Signer(name, key(12))


def test_valid_key_names() -> None:
    for name in ("sinergi.example/ledger", "\u00e9t\u00e9", "a\u200bb", "x"):
        s = Signer(name, key(13))
        assert Verifier.from_vkey(s.verifier_key()).name == name


def test_verifier_verify_is_the_raw_primitive() -> None:
    s = Signer("n", key(14))
    v = s.verifier()
    line = s.sign(b"hello\n").decode()
    raw = base64.b64decode(line.rstrip("\n").rsplit(" ", 1)[1])
    assert raw[:4] == s.key_id
    assert v.verify(b"hello\n", raw[4:])
    assert not v.verify(b"hello!\n", raw[4:])
    assert not v.verify(b"hello\n", raw[4:-1])
    assert not v.verify(b"hello\n", b"")


# ---------------------------------------------------------------------------------------------
# Checkpoint parsing


def body(size: str = "8", root: str | None = None, extra: str = "") -> bytes:
    if root is None:
        root = base64.b64encode(root_of([leaf_hash(x) for x in TD_LEAVES])).decode()
    return f"sinergi.example/ledger\n{size}\n{root}\n{extra}".encode()


@pytest.mark.parametrize(
    "text",
    [
        body(size="08"),  # leading zero
        body(size="00"),
        body(size="020852163"),
        body(size="+8"),
        body(size="-1"),
        body(size=" 8"),
        body(size="8 "),
        body(size="8.0"),
        body(size="0x8"),
        body(size="\u0668"),  # ARABIC-INDIC DIGIT EIGHT
        body(size=""),
        body(size=str(2**64)),
        body(root=base64.b64encode(b"\x00" * 31).decode()),  # 31-byte root
        body(root=base64.b64encode(b"\x00" * 33).decode()),  # 33-byte root
        body(root=base64.b64encode(b"\x00" * 32).decode().rstrip("=")),  # unpadded
        body(root=base64.b64encode(b"\x00" * 32).decode()[:-2] + "B="),  # non-canonical bits
        body(root=base64.urlsafe_b64encode(b"\xff" * 32).decode()),  # URL-safe alphabet
        body(root=""),
        body(extra="\n"),  # empty extension line
        body(extra="ext"),  # extension without its newline
        body()[:-1],  # no final newline
        b"sinergi.example/ledger\n8\n",  # two lines
        b"\n8\n" + body().split(b"\n", 2)[2],  # empty origin
        body().replace(b"sinergi", b"sin\x01ergi"),  # control character
        body().replace(b"sinergi", b"\xff"),  # not UTF-8
        b"",
    ],
)
def test_checkpoint_parse_rejects(text: bytes) -> None:
    with pytest.raises(NoteError):
        Checkpoint.parse(text)


def test_checkpoint_parse_accepts() -> None:
    assert Checkpoint.parse(body(size="0")).size == 0
    assert Checkpoint.parse(body(size=str(2**64 - 1))).size == 2**64 - 1
    cp = Checkpoint.parse(body(extra="one\ntwo\n"))
    assert cp.extensions == ("one", "two")
    assert Checkpoint.parse(body().replace(b"sinergi.example", b"Moon Log")).origin.startswith(
        "Moon Log"
    )


@pytest.mark.parametrize(
    "changes",
    [
        {"origin": ""},
        {"origin": "a\nb"},
        {"size": -1},
        {"size": 2**64},
        {"size": True},
        {"root": b"\x00" * 31},
        {"root": "not bytes"},
        {"extensions": ("",)},
        {"extensions": ("a\nb",)},
        {"extensions": ["list"]},
    ],
)
def test_checkpoint_constructor_validates(changes: dict[str, object]) -> None:
    with pytest.raises(NoteError):
        example_checkpoint(**changes)
    assert issubclass(NoteError, LedgerError)


# ---------------------------------------------------------------------------------------------
# Key files


def test_pem_round_trip() -> None:
    k = generate_signing_key()
    loaded = load_private_key_pem(private_key_pem(k))
    assert private_key_pem(loaded) == private_key_pem(k)
    assert private_key_pem(k).startswith(b"-----BEGIN PRIVATE KEY-----")
    pub = load_public_key_pem(public_key_pem(k))
    assert public_key_pem(pub) == public_key_pem(k) == public_key_pem(k.public_key())
    s = Signer("n", loaded)
    assert Verifier("n", pub).verify(b"m\n", base64.b64decode(s.sign(b"m\n").split()[2])[4:])


def test_pem_wrong_type_or_garbage() -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ec_priv = ec_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    ec_pub = ec_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(NoteError, match="Ed25519"):
        load_private_key_pem(ec_priv)
    with pytest.raises(NoteError, match="Ed25519"):
        load_public_key_pem(ec_pub)
    for garbage in (b"", b"not pem", public_key_pem(generate_signing_key())):
        with pytest.raises(NoteError):
            load_private_key_pem(garbage)
    with pytest.raises(NoteError):
        load_public_key_pem(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    encrypted = generate_signing_key().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    with pytest.raises(NoteError):
        load_private_key_pem(encrypted)


# ---------------------------------------------------------------------------------------------
# docs/ledger-format.md section 3: the worked example, generated from these numbers

DOC_SEED = bytes(range(32))
DOC_NAME = "sinergi.example/ledger"


def doc_example() -> tuple[Signer, Checkpoint, bytes]:
    signer = Signer(DOC_NAME, Ed25519PrivateKey.from_private_bytes(DOC_SEED))
    cp = Checkpoint(DOC_NAME, 8, root_of([leaf_hash(x) for x in TD_LEAVES]))
    return signer, cp, sign_checkpoint(cp, [signer])


def render_checkpoint_example() -> str:
    signer, cp, note = doc_example()
    public = base64.b64decode(signer.verifier_key().split("+", 2)[2])[1:]
    kid_input = DOC_NAME.encode() + b"\n\x01" + public
    sig = base64.b64decode(note.decode().rstrip("\n").rsplit(" ", 1)[1])
    out = ["```"]
    out.append(f"key name             {DOC_NAME}")
    out.append(f"Ed25519 seed         {DOC_SEED.hex()}")
    out.append(f"Ed25519 public key   {public.hex()}")
    out.append(f"key ID input         {kid_input.hex()}")
    out.append(f"key ID               {signer.key_id.hex()}")
    out.append(f"vkey                 {signer.verifier_key()}")
    out.append(f"note text (hex)      {cp.body().hex()}")
    out.append(f"Ed25519 signature    {sig[4:].hex()}")
    out.append("```")
    out += ["", "The public key as PEM (`ledger.pub`):", "", "```"]
    out.append(public_key_pem(signer.public_key()).decode().rstrip("\n"))
    out += ["```", "", "The signed checkpoint, byte for byte (every line ends in U+000A):", ""]
    out += ["```", note.decode().rstrip("\n"), "```"]
    return "\n".join(out)


def test_doc_checkpoint_example_matches_code() -> None:
    check_doc_block("checkpoint-example", render_checkpoint_example())


def test_doc_checkpoint_example_verifies_from_the_markdown() -> None:
    """Take the vkey and the note from the document alone, and open the note."""
    doc = DOC.read_text(encoding="utf-8")
    start, stop = generated_block(doc, "checkpoint-example")
    block = doc[start:stop]
    vkey = re.search(r"^vkey +(\S+)$", block, re.M)
    assert vkey is not None
    fences = re.findall(r"```\n(.*?)```", block, re.S)
    note = fences[-1].encode()
    cp = open_checkpoint(note, [Verifier.from_vkey(vkey.group(1))])
    assert (cp.origin, cp.size) == (DOC_NAME, 8)
    pem = fences[1].encode()
    assert Verifier(DOC_NAME, load_public_key_pem(pem)).verifier_key() == vkey.group(1)


# RFC 8032 section 7.1, TEST 2: one message byte.
RFC8032_PUBLIC = bytes.fromhex("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c")
RFC8032_SIGNATURE = bytes.fromhex(
    "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
    "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
)
_L = 2**252 + 27742317777372353535851937790883648493  # the group order (RFC 8032 section 5.1)


def test_verify_follows_rfc_8032() -> None:
    verifier = Verifier("n", Ed25519PublicKey.from_public_bytes(RFC8032_PUBLIC))
    assert verifier.verify(b"\x72", RFC8032_SIGNATURE)
    assert not verifier.verify(b"\x73", RFC8032_SIGNATURE)
    assert not verifier.verify(b"\x72", RFC8032_SIGNATURE[:63])
    # The same signature with S + L: the equation still holds, but S must be below L (5.1.7).
    s = int.from_bytes(RFC8032_SIGNATURE[32:], "little") + _L
    assert not verifier.verify(b"\x72", RFC8032_SIGNATURE[:32] + s.to_bytes(32, "little"))


def test_verify_refuses_a_small_order_key_that_openssl_accepts() -> None:
    """The identity point as the key, R the identity and S = 0 satisfy [S]B = R + [k]A for
    every message: OpenSSL accepts that "signature" of anything; libsodium, which verifies
    here, refuses keys and R of small order."""
    identity = b"\x01" + bytes(31)
    public = Ed25519PublicKey.from_public_bytes(identity)
    forged = identity + bytes(32)
    public.verify(forged, b"any text\n")  # OpenSSL: no InvalidSignature
    assert not Verifier("n", public).verify(b"any text\n", forged)
