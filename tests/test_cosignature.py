"""C2SP tlog-cosignature v1: the spec's example, a third-party verifier, and forgeries."""

from __future__ import annotations

import base64

import pytest
from tlog_scales import tlog
from tlog_scales.signing import Vkey

from immutablelog.checkpoint import Checkpoint, NoteError, Signer, sign_checkpoint
from immutablelog.cosignature import CosignatureVerifier, Cosigner, cosigned_message

#: The example checkpoint and witness line of c2sp.org/tlog-cosignature (no key is published
#: for it, so what it fixes is the framing: key id, timestamp, and the signed message).
SPEC_BODY = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
SPEC_LINE = (
    "— witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJs"
    "X3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA=="
)
SPEC_MESSAGE = (
    "cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\n"
    "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
)


def test_the_spec_example_frames_like_ours() -> None:
    blob = base64.b64decode(SPEC_LINE.split(" ")[2])
    assert len(blob) == 4 + 8 + 64
    assert blob[:4].hex() == "8d66cf3f"
    timestamp = int.from_bytes(blob[4:12], "big")
    assert timestamp == 1679315147
    assert cosigned_message(SPEC_BODY, timestamp) == SPEC_MESSAGE.encode()
    # Our line for the same name, body and time has the same shape.
    ours = Cosigner.generate("witness.example.com/w1").cosign(SPEC_BODY, timestamp)
    name, b64 = ours.removeprefix("— ").removesuffix("\n").split(" ")
    assert name == "witness.example.com/w1"
    assert base64.b64decode(b64)[4:12] == blob[4:12]


def cosigned_note() -> tuple[Signer, Cosigner, str, str]:
    log = Signer.generate("example.com/log")
    note = sign_checkpoint(log, Checkpoint("example.com/log", 5, b"\x07" * 32))
    witness = Cosigner.generate("witness.example.com/w1")
    line = witness.cosign(note[: note.index("\n\n") + 1], 1_700_000_000)
    return log, witness, note, note + line


def test_our_cosignatures_verify_with_a_third_party_verifier() -> None:
    log, witness, _, cosigned = cosigned_note()
    checkpoint = tlog.Checkpoint.from_text(cosigned)
    checkpoint.verify(Vkey.from_string(log.verifier_key()))
    checkpoint.verify(Vkey.from_string(witness.verifier_key()))
    assert Vkey.from_string(witness.verifier_key()).sig_type == 0x04


def test_verifier_finds_checks_and_rejects() -> None:
    _, witness, note, cosigned = cosigned_note()
    verifier = CosignatureVerifier(witness.verifier_key())
    found = verifier.find(cosigned)
    assert found is not None
    assert found.timestamp == 1_700_000_000
    assert cosigned.endswith(found.line)
    assert verifier.find(note) is None  # not cosigned: absent, not an error
    # Another witness's key does not match the line.
    assert CosignatureVerifier(Cosigner.generate("other").verifier_key()).find(cosigned) is None
    # The same line on another checkpoint is a forgery.
    other = note.replace("\n5\n", "\n6\n")
    with pytest.raises(NoteError, match="does not verify"):
        verifier.find(other + found.line)
    # A changed timestamp breaks the signature.
    blob = bytearray(base64.b64decode(found.line.split(" ")[2]))
    blob[11] ^= 1
    forged = f"— {witness.name} {base64.b64encode(bytes(blob)).decode()}\n"
    with pytest.raises(NoteError, match="does not verify"):
        verifier.find(note + forged)


def test_cosigner_and_log_keys_are_not_interchangeable() -> None:
    log = Signer.generate("same-name")
    witness = Cosigner.generate("same-name")
    with pytest.raises(NoteError):
        CosignatureVerifier(log.verifier_key())  # 0x01: a log key, not a witness key
    assert witness.key_id != log.key_id


@pytest.mark.parametrize("timestamp", [-1, 1 << 63])
def test_timestamps_outside_int64_are_refused(timestamp: int) -> None:
    with pytest.raises(NoteError):
        cosigned_message(SPEC_BODY, timestamp)
