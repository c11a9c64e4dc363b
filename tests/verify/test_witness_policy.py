"""The verifier's witness policy: quorum, forged and future-dated cosignatures."""

from __future__ import annotations

import time

import pytest

from immutablelog.checkpoint import Checkpoint, Signer, sign_checkpoint
from immutablelog.cosignature import Cosigner
from immutablelog.verify.report import CouldNotCheck, FindingKind, Report
from immutablelog.verify.witnesses import MAX_CLOCK_SKEW, WitnessPolicy

LOG = Signer.generate("log")
NOTE = sign_checkpoint(LOG, Checkpoint("log/t", 3, b"\x01" * 32))
TEXT = NOTE[: NOTE.index("\n\n") + 1]
W1, W2, W3 = (Cosigner.generate(f"w{n}") for n in (1, 2, 3))


def policy(quorum: int | None = None) -> WitnessPolicy:
    return WitnessPolicy.parse([w.verifier_key() for w in (W1, W2, W3)], quorum)


def test_quorum_counts_valid_cosignatures_of_the_given_witnesses() -> None:
    now = int(time.time())
    note = NOTE + W1.cosign(TEXT, now) + W3.cosign(TEXT, now)
    assert policy(2).check(Report("verify", "x"), note, "it") == ["w1", "w3"]
    with pytest.raises(CouldNotCheck) as refused:
        policy().check(Report("verify", "x"), note, "it")
    assert refused.value.reason == "witness_quorum"
    assert "w2: no cosignature" in refused.value.message
    # A witness nobody asked for does not count.
    stranger = Cosigner.generate("w4").cosign(TEXT, now)
    with pytest.raises(CouldNotCheck):
        policy(3).check(Report("verify", "x"), note + stranger, "it")


def test_future_cosignatures_do_not_count() -> None:
    now = int(time.time())
    late = now + MAX_CLOCK_SKEW + 600
    note = NOTE + W1.cosign(TEXT, now) + W2.cosign(TEXT, late)
    with pytest.raises(CouldNotCheck) as refused:
        policy(2).check(Report("verify", "x"), note, "it")
    assert f"w2: cosignature dated {late}, in the future" in refused.value.message


def test_a_forged_cosignature_is_a_finding() -> None:
    now = int(time.time())
    other = sign_checkpoint(LOG, Checkpoint("log/t", 4, b"\x02" * 32))
    stolen = W1.cosign(other[: other.index("\n\n") + 1], now)  # cosigns another checkpoint
    report = Report("verify", "x")
    with pytest.raises(CouldNotCheck):
        policy(1).check(report, NOTE + stolen, "it")
    assert [f.kind for f in report.findings] == [FindingKind.BAD_SIGNATURE]
    assert report.exit_code == 1


@pytest.mark.parametrize(
    ("keys", "quorum"),
    [
        (["not a key"], None),
        ([W1.verifier_key(), W1.verifier_key()], None),
        ([W1.verifier_key()], 2),
        ([W1.verifier_key()], 0),
        ([LOG.verifier_key()], None),
    ],
)
def test_bad_policies_are_refused(keys: list[str], quorum: int | None) -> None:
    with pytest.raises(ValueError):
        WitnessPolicy.parse(keys, quorum)
