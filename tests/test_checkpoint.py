"""Tests for immutablelog.checkpoint: signed-note + tlog-checkpoint (Ed25519).

Interop vectors come from golang.org/x/mod/sumdb/note, golang.org/x/mod/sumdb/tlog
and the C2SP signed-note spec; matching them proves Go tooling can read our notes.
"""

from __future__ import annotations

import base64
import hashlib
import multiprocessing
import os
import pathlib
import stat
import threading
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from immutablelog.checkpoint import (
    MAX_NOTE_BYTES,
    MAX_SIGNATURES,
    MAX_TREE_SIZE,
    Checkpoint,
    NoteError,
    Signer,
    Verifier,
    load_or_create_signer,
    open_checkpoint,
    sign_checkpoint,
)

# --- published vectors ------------------------------------------------------

PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
QUOTE = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_SIG = (
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotp"
    "RZb6KE6RyyBwJnAM=\n"
)
ENOCH_SIG = (
    "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox3"
    "3WWd1RvMc+QQ=\n"
)

# C2SP signed-note example.
C2SP_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
C2SP_NOTE = (
    "This is an example message.\n"
    "\n"
    "— example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRK"
    "uwHjG1Yu72IneyaQM=\n"
)

# golang.org/x/mod/sumdb/tlog tree-note golden: root = RFC 6962 leaf hash of "hello world".
GO_TREE_TEXT = "go.sum database tree\n123456789012\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\n"
GO_TREE_ROOT = hashlib.sha256(b"\x00hello world").digest()

ROOT = bytes(range(32))
ORIGIN = "log.example.com/tenant-a"


@pytest.fixture(scope="module")
def peter() -> Signer:
    return Signer.from_private_key_string(PETER_SKEY)


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer.generate(ORIGIN)


@pytest.fixture(scope="module")
def verifier(signer: Signer) -> Verifier:
    return Verifier(signer.verifier_key())


def _reb64(b64: str, mutate: int) -> str:
    raw = bytearray(base64.b64decode(b64))
    raw[mutate] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


# --- Go / C2SP interop ------------------------------------------------------


def test_go_sign_vector(peter: Signer) -> None:
    assert peter.name == "PeterNeumann"
    assert peter.key_id == bytes.fromhex("c74f20a3")
    assert peter.verifier_key() == PETER_VKEY
    assert peter.private_key_string() == PETER_SKEY
    # Ed25519 is deterministic, so the signed note must match Go byte for byte.
    assert peter.sign(QUOTE) == QUOTE + "\n" + PETER_SIG


def test_go_open_vectors() -> None:
    peter_v = Verifier(PETER_VKEY)
    enoch_v = Verifier(ENOCH_VKEY)
    assert peter_v.name == "PeterNeumann" and peter_v.key_id.hex() == "c74f20a3"
    assert enoch_v.key_id.hex() == "af0cfe78"
    note = QUOTE + "\n" + PETER_SIG + ENOCH_SIG
    # Each verifier ignores the other's signature.
    assert peter_v.verify(note) == QUOTE
    assert enoch_v.verify(note) == QUOTE
    assert enoch_v.verify(QUOTE + "\n" + ENOCH_SIG) == QUOTE
    with pytest.raises(NoteError, match="no signature from key EnochRoot"):
        enoch_v.verify(QUOTE + "\n" + PETER_SIG)


def test_go_invalid_signature_vector() -> None:
    # Go's test: inserting "ABCD" into the base64 breaks the signature but not the key id.
    bad = PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]
    with pytest.raises(NoteError, match="invalid signature for key PeterNeumann\\+c74f20a3"):
        Verifier(PETER_VKEY).verify(QUOTE + "\n" + bad)


def test_c2sp_signed_note_vector() -> None:
    v = Verifier(C2SP_VKEY)
    assert v.name == "example.com/foo" and v.key_id.hex() == "530d903a"
    assert v.verify(C2SP_NOTE) == "This is an example message.\n"


def test_go_tree_note_parses_as_checkpoint() -> None:
    cp = Checkpoint.from_text(GO_TREE_TEXT)
    assert cp == Checkpoint("go.sum database tree", 123456789012, GO_TREE_ROOT)
    assert cp.to_text() == GO_TREE_TEXT


@pytest.mark.parametrize(
    "bad",
    [
        GO_TREE_TEXT.replace("123456789012", "0xabcdef"),
        GO_TREE_TEXT.replace("Bb0=", "BTOOBIG="),
    ],
)
def test_go_bad_trees(bad: str) -> None:
    with pytest.raises(NoteError):
        Checkpoint.from_text(bad)


def test_go_vkey_manglings_rejected() -> None:
    # Every proper substring and every single-byte increment must be refused.
    b = PETER_VKEY
    for i in range(len(b) + 1):
        for j in range(i + 1, len(b) + 1):
            if (i, j) != (0, len(b)):
                with pytest.raises(NoteError):
                    Verifier(b[i:j])
    for i in range(len(b)):
        mangled = b[:i] + chr(ord(b[i]) + 1) + b[i + 1 :]
        with pytest.raises(NoteError):
            Verifier(mangled)


@pytest.mark.parametrize(
    "vkey",
    [
        # wrong-length key, with adjusted key id (from Go's tests)
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
        # unknown algorithm, with adjusted key id
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        PETER_VKEY.replace("c74f20a3", "C74F20A3"),  # hex must be lowercase
        PETER_VKEY + "+extra",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "",
    ],
)
def test_bad_vkeys(vkey: str) -> None:
    with pytest.raises(NoteError):
        Verifier(vkey)


def test_go_skey_manglings_rejected() -> None:
    b = PETER_SKEY
    for i in range(len(b) + 1):
        for j in range(i + 1, len(b) + 1):
            if (i, j) != (0, len(b)):
                with pytest.raises(NoteError):
                    Signer.from_private_key_string(b[i:j])
    for i in range(len(b)):
        mangled = b[:i] + chr(ord(b[i]) + 1) + b[i + 1 :]
        with pytest.raises(NoteError):
            Signer.from_private_key_string(mangled)


# --- signing and verifying --------------------------------------------------


def test_generate_roundtrip(signer: Signer, verifier: Verifier) -> None:
    assert verifier.name == signer.name and verifier.key_id == signer.key_id
    assert len(signer.key_id) == 4
    again = Signer.from_private_key_string(signer.private_key_string())
    assert again.verifier_key() == signer.verifier_key()
    text = "hello\n\nworld with a blank line\n"
    assert verifier.verify(signer.sign(text)) == text
    assert "PRIVATE" not in repr(signer)


def test_signer_from_key_object() -> None:
    key = Ed25519PrivateKey.generate()
    s = Signer("a.example/b", key)
    assert Verifier(s.verifier_key()).public_key.public_bytes_raw() == (
        key.public_key().public_bytes_raw()
    )


def test_checkpoint_roundtrip(signer: Signer, verifier: Verifier) -> None:
    for cp in [
        Checkpoint(ORIGIN, 0, ROOT),
        Checkpoint(ORIGIN, 12345, ROOT, ("ext one", "— looks like a sig but is body")),
        Checkpoint(ORIGIN, MAX_TREE_SIZE, ROOT),
    ]:
        note = sign_checkpoint(signer, cp)
        assert note.startswith(cp.to_text() + "\n— " + signer.name + " ")
        assert open_checkpoint(verifier, note) == cp
        assert open_checkpoint(verifier, note, expected_origin=ORIGIN) == cp


def test_checkpoint_text_format() -> None:
    cp = Checkpoint(ORIGIN, 7, ROOT, ("x",))
    root = base64.b64encode(ROOT).decode()
    assert cp.to_text() == f"{ORIGIN}\n7\n{root}\nx\n"
    assert Checkpoint.from_text(cp.to_text()) == cp


def test_origin_mismatch_rejected(signer: Signer, verifier: Verifier) -> None:
    note = sign_checkpoint(signer, Checkpoint(ORIGIN, 1, ROOT))
    with pytest.raises(NoteError, match="does not match expected"):
        open_checkpoint(verifier, note, expected_origin="log.example.com/tenant-b")


def test_tampered_body_rejected(signer: Signer, verifier: Verifier) -> None:
    note = sign_checkpoint(signer, Checkpoint(ORIGIN, 10, ROOT))
    tampered = note.replace("\n10\n", "\n11\n", 1)
    assert tampered != note
    with pytest.raises(NoteError, match="invalid signature"):
        open_checkpoint(verifier, tampered)


def test_tampered_signature_rejected(signer: Signer, verifier: Verifier) -> None:
    note = signer.sign("body\n")
    head, _, b64 = note.rstrip("\n").rpartition(" ")
    # Flip a bit in the signature, and separately a bit in the key id.
    with pytest.raises(NoteError, match="invalid signature"):
        verifier.verify(f"{head} {_reb64(b64, 10)}\n")
    with pytest.raises(NoteError, match="no signature from key"):
        verifier.verify(f"{head} {_reb64(b64, 0)}\n")
    # A known key with a signature of the wrong length is bad, not unknown.
    short = base64.b64encode(signer.key_id + b"\x00" * 10).decode()
    with pytest.raises(NoteError, match="invalid signature"):
        verifier.verify(f"{head} {short}\n")


def test_wrong_key_rejected(signer: Signer) -> None:
    other = Signer.generate(signer.name)  # same name, different key id
    note = other.sign("body\n")
    with pytest.raises(NoteError, match="no signature from key"):
        Verifier(signer.verifier_key()).verify(note)


def test_unknown_signatures_ignored(signer: Signer, verifier: Verifier) -> None:
    text = Checkpoint(ORIGIN, 3, ROOT).to_text()
    ours = signer.sign(text)[len(text) + 1 :]
    witness = Signer.generate("witness.example/w1").sign(text)[len(text) + 1 :]
    # Same name as ours but another key: unknown, so ignored even though it
    # doesn't verify with our key.
    imposter = Signer.generate(signer.name).sign("other\n")[len("other\n") + 1 :]
    for sig_block in [witness + ours, ours + witness, imposter + witness + ours]:
        assert verifier.verify(text + "\n" + sig_block) == text


def test_max_signatures(signer: Signer, verifier: Verifier) -> None:
    text = "body\n"
    ours = signer.sign(text)[len(text) + 1 :]
    others = [
        f"— w{i} " + base64.b64encode(b"\x00\x00\x00\x00" + b"\x01" * 64).decode() + "\n"
        for i in range(MAX_SIGNATURES)
    ]
    assert verifier.verify(text + "\n" + "".join(others[:-1]) + ours) == text
    with pytest.raises(NoteError, match="more than"):
        verifier.verify(text + "\n" + "".join(others) + ours)


def test_note_size_bound(signer: Signer, verifier: Verifier) -> None:
    with pytest.raises(NoteError, match="larger than"):
        signer.sign("a" * MAX_NOTE_BYTES + "\n")
    with pytest.raises(NoteError, match="larger than"):
        verifier.verify("é" * (MAX_NOTE_BYTES // 2) + "\n\n— a AAAAAAA=\n")


# --- malformed notes --------------------------------------------------------

_GOOD = QUOTE + "\n" + PETER_SIG


@pytest.mark.parametrize(
    ("note", "why"),
    [
        (QUOTE, "no blank line"),
        (QUOTE + "\n", "no signature lines"),
        (QUOTE + "\n" + PETER_SIG[:-1], "end with a newline"),
        ("\x01" + _GOOD, "control character"),
        (_GOOD.replace("\n", "\r\n", 1), "control character"),
        ("\ud800" + _GOOD, "UTF-8"),
        (_GOOD.replace("PeterNeumann", "Bad Name"), "base64"),
        (_GOOD + "Unexpected line.\n", "does not start with"),
        (_GOOD.replace("— ", "- "), "does not start with"),
        (_GOOD.replace("— ", "—"), "does not start with"),
        (_GOOD.replace("PeterNeumann", "Peter+Neumann"), "'\\+'"),
        (_GOOD.replace("— PeterNeumann ", "—  "), "non-empty"),
        (_GOOD.replace(" x08go", ""), "must be"),
        (_GOOD.replace("AM=", "AM"), "base64"),
        (_GOOD.replace("AM=", "AN="), "non-canonical"),
        (_GOOD.replace("x08go", "x08g*"), "base64"),
        (QUOTE + "\n— PeterNeumann x08g\n", "too short"),
        (_GOOD + PETER_SIG, "duplicate"),
        (QUOTE + "\n" + ENOCH_SIG + ENOCH_SIG + PETER_SIG, "duplicate"),
        # the last blank line wins: the first signature becomes body text
        (QUOTE + "\n" + PETER_SIG + "\n" + PETER_SIG, "invalid signature"),
        (123, "must be str"),
    ],
)
def test_malformed_notes_rejected(note: str, why: str) -> None:
    with pytest.raises(NoteError, match=why):
        Verifier(PETER_VKEY).verify(note)


def test_blank_line_split_uses_last_blank_line() -> None:
    # A signature line in the body is body text; only lines after the last
    # blank line are signatures, so this note carries no Peter signature.
    note = QUOTE + "\n" + PETER_SIG + "\n" + ENOCH_SIG
    with pytest.raises(NoteError, match="no signature from key PeterNeumann"):
        Verifier(PETER_VKEY).verify(note)


@pytest.mark.parametrize(
    "text", ["no newline", "", "ctrl\x00\n", "tab\tinside\n", "bad \udcff\n", b"bytes\n"]
)
def test_sign_rejects_bad_text(peter: Signer, text: str) -> None:
    with pytest.raises(NoteError):
        peter.sign(text)


@pytest.mark.parametrize(
    "name", ["", "a b", "a+b", "a\tb", "a\u00a0b", "a\u2003b", "a\x01b", "a\nb", "\ud800"]
)
def test_bad_key_names_rejected(name: str) -> None:
    with pytest.raises(NoteError):
        Signer.generate(name)


# --- malformed checkpoints --------------------------------------------------

_ROOT64 = base64.b64encode(ROOT).decode()
_URLSAFE_ROOT = base64.urlsafe_b64encode(b"\xff" * 32).decode()


@pytest.mark.parametrize(
    "text",
    [
        f"{ORIGIN}\n1\n{_ROOT64}",  # no final newline
        f"{ORIGIN}\n1\n",  # too few lines
        f"\n1\n{_ROOT64}\n",  # empty origin
        f"{ORIGIN}\n01\n{_ROOT64}\n",  # leading zero
        f"{ORIGIN}\n00\n{_ROOT64}\n",
        f"{ORIGIN}\n-1\n{_ROOT64}\n",
        f"{ORIGIN}\n+1\n{_ROOT64}\n",
        f"{ORIGIN}\n 1\n{_ROOT64}\n",
        f"{ORIGIN}\n1.0\n{_ROOT64}\n",
        f"{ORIGIN}\n\u0661\n{_ROOT64}\n",  # ARABIC-INDIC DIGIT ONE
        f"{ORIGIN}\n\n{_ROOT64}\n",
        f"{ORIGIN}\n{MAX_TREE_SIZE + 1}\n{_ROOT64}\n",
        f"{ORIGIN}\n{'9' * 5000}\n{_ROOT64}\n",
        f"{ORIGIN}\n1\n{base64.b64encode(ROOT[:31]).decode()}\n",  # 31-byte root
        f"{ORIGIN}\n1\n{base64.b64encode(ROOT + b'x').decode()}\n",  # 33-byte root
        f"{ORIGIN}\n1\n{_ROOT64.rstrip('=')}\n",  # missing padding
        f"{ORIGIN}\n1\n{_URLSAFE_ROOT}\n",  # URL alphabet
        f"{ORIGIN}\n1\n{_ROOT64[:-2]}9=\n",  # non-canonical trailing bits
        f"{ORIGIN}\n1\n\n",  # empty root
        f"{ORIGIN}\n1\n{_ROOT64}\n\n",  # empty extension line
        f"{ORIGIN}\n1\n{_ROOT64}\next\n\n",
        f"{ORIGIN}\r\n1\n{_ROOT64}\n",
    ],
)
def test_malformed_checkpoints_rejected(text: str) -> None:
    with pytest.raises(NoteError):
        Checkpoint.from_text(text)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"origin": "", "size": 0, "root_hash": ROOT},
        {"origin": "a\nb", "size": 0, "root_hash": ROOT},
        {"origin": ORIGIN, "size": -1, "root_hash": ROOT},
        {"origin": ORIGIN, "size": MAX_TREE_SIZE + 1, "root_hash": ROOT},
        {"origin": ORIGIN, "size": True, "root_hash": ROOT},
        {"origin": ORIGIN, "size": 1, "root_hash": ROOT[:31]},
        {"origin": ORIGIN, "size": 1, "root_hash": bytearray(ROOT)},
        {"origin": ORIGIN, "size": 1, "root_hash": ROOT, "extensions": ("",)},
        {"origin": ORIGIN, "size": 1, "root_hash": ROOT, "extensions": ("a\nb",)},
        {"origin": ORIGIN, "size": 1, "root_hash": ROOT, "extensions": ("a\x00",)},
    ],
)
def test_invalid_checkpoint_construction(kwargs: dict[str, object]) -> None:
    with pytest.raises(NoteError):
        Checkpoint(**kwargs)  # type: ignore[arg-type]


def test_signed_note_with_bad_checkpoint_body(signer: Signer, verifier: Verifier) -> None:
    # A correctly signed note whose body is not a checkpoint must still fail.
    note = signer.sign(f"{ORIGIN}\n007\n{_ROOT64}\n")
    assert verifier.verify(note)
    with pytest.raises(NoteError, match="canonical decimal"):
        open_checkpoint(verifier, note)


# --- key files --------------------------------------------------------------


def test_key_file_created_0600_and_reloaded(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "log.key"
    old = os.umask(0o022)
    try:
        s1 = load_or_create_signer(path, ORIGIN)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == s1.private_key_string() + "\n"
    s2 = load_or_create_signer(path, ORIGIN)
    assert s2.private_key_string() == s1.private_key_string()
    assert s2.verifier_key() == s1.verifier_key()
    # No temp files left behind.
    assert [p.name for p in tmp_path.iterdir()] == ["log.key"]


def test_key_file_go_format_loaded(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "peter.key"
    path.write_text(PETER_SKEY + "\n")
    assert load_or_create_signer(path, "PeterNeumann").verifier_key() == PETER_VKEY


def test_key_file_name_mismatch(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "log.key"
    load_or_create_signer(path, ORIGIN)
    with pytest.raises(NoteError, match="expected"):
        load_or_create_signer(path, "someone.else/x")


@pytest.mark.parametrize("content", [b"", b"garbage\n", b"\xff\xfe", PETER_VKEY.encode()])
def test_key_file_corrupt(tmp_path: pathlib.Path, content: bytes) -> None:
    path = tmp_path / "log.key"
    path.write_bytes(content)
    with pytest.raises(NoteError):
        load_or_create_signer(path, "PeterNeumann")


def test_key_file_bad_name_creates_nothing(tmp_path: pathlib.Path) -> None:
    with pytest.raises(NoteError):
        load_or_create_signer(tmp_path / "log.key", "bad name")
    assert list(tmp_path.iterdir()) == []


def test_key_file_concurrent_threads(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "log.key"
    barrier = threading.Barrier(8)
    results: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        barrier.wait()
        vkey = load_or_create_signer(path, ORIGIN).verifier_key()
        with lock:
            results.append(vkey)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8 and len(set(results)) == 1
    assert results[0] == load_or_create_signer(path, ORIGIN).verifier_key()
    assert [p.name for p in tmp_path.iterdir()] == ["log.key"]


def _proc_worker(path: str, start: Any, out: Any) -> None:
    start.wait()
    out.put(load_or_create_signer(pathlib.Path(path), ORIGIN).verifier_key())


def test_key_file_concurrent_processes(tmp_path: pathlib.Path) -> None:
    ctx = multiprocessing.get_context()
    path = tmp_path / "log.key"
    start = ctx.Event()
    out = ctx.Queue()
    procs = [ctx.Process(target=_proc_worker, args=(str(path), start, out)) for _ in range(4)]
    for p in procs:
        p.start()
    start.set()
    vkeys = {out.get(timeout=30) for _ in procs}
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert vkeys == {load_or_create_signer(path, ORIGIN).verifier_key()}
