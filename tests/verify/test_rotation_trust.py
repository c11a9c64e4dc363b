"""Following a key rotation is trust moving from one key to the next, and only that way.

The server here is a stand-in that answers what a hostile log would (forged handovers, a
checkpoint signed by a key nothing vouches for): a live server never serves those.
"""

from __future__ import annotations

from typing import Any, cast

import pytest

from immutablelog.checkpoint import Checkpoint, Signer, Verifier, sign_checkpoint
from immutablelog.verify.client import LogClient
from immutablelog.verify.report import FindingKind, Report
from immutablelog.verify.trust import Stop, follow_rotation, open_signed_checkpoint

ORIGIN = "immutablelog/default"
OLD, NEW, THIRD, ATTACKER = (Signer.generate("immutablelog") for _ in range(4))


def note(*signers: Signer, size: int = 5) -> str:
    return sign_checkpoint(list(signers), Checkpoint(ORIGIN, size, bytes(32)))


class HostileLog:
    def __init__(self, handovers: list[tuple[str, str, str]]) -> None:
        self._handovers = handovers
        self.asked = 0

    def handovers(self) -> list[tuple[str, str, str]]:
        self.asked += 1
        return self._handovers


def follow(log: HostileLog, latest: str, trusted: Signer = OLD) -> tuple[Report, Verifier]:
    report = Report("verify", "test")
    report.log_key = trusted.verifier_key()
    client = cast(LogClient, cast(Any, log))
    return report, follow_rotation(client, report, Verifier(report.log_key), latest, ORIGIN)


def handover(old: Signer, new: Signer, *signers: Signer) -> tuple[str, str, str]:
    return (old.verifier_key(), new.verifier_key(), note(*signers, size=3))


def test_a_checkpoint_of_the_trusted_key_alone_asks_for_nothing() -> None:
    log = HostileLog([])
    report, verifier = follow(log, note(OLD))
    assert log.asked == 0 and verifier.key_id == OLD.key_id and report.key_rotations == []


def test_a_chain_of_handovers_is_followed_key_by_key() -> None:
    log = HostileLog([handover(NEW, THIRD, NEW, THIRD), handover(OLD, NEW, OLD, NEW)])
    report, verifier = follow(log, note(THIRD))
    assert verifier.key_id == THIRD.key_id
    assert report.log_key == THIRD.verifier_key()
    assert report.replaced_keys == [OLD.verifier_key(), NEW.verifier_key()]
    assert len(report.key_rotations) == 2


@pytest.mark.parametrize(
    "forged",
    [
        handover(OLD, ATTACKER, ATTACKER),  # not signed by the trusted key
        handover(OLD, ATTACKER, OLD),  # not signed by the key it names
        (OLD.verifier_key(), "immutablelog+00000000+AAAA", note(OLD)),  # not a key
        (OLD.verifier_key(), ATTACKER.verifier_key(), "not a note"),
    ],
)
def test_a_forged_handover_is_ignored_and_the_checkpoint_refused(
    forged: tuple[str, str, str],
) -> None:
    report, verifier = follow(HostileLog([forged]), note(ATTACKER))
    assert verifier.key_id == OLD.key_id and report.key_rotations == []
    assert any("ignored a handover" in w for w in report.warnings)
    with pytest.raises(Stop):
        open_signed_checkpoint(report, verifier, note(ATTACKER), ORIGIN, "the latest checkpoint")
    assert report.findings[0].kind is FindingKind.BAD_SIGNATURE


def test_a_handover_of_another_tenant_does_not_count() -> None:
    other = sign_checkpoint([OLD, NEW], Checkpoint("immutablelog/other", 3, bytes(32)))
    log = HostileLog([(OLD.verifier_key(), NEW.verifier_key(), other)])
    report, verifier = follow(log, note(NEW))
    assert verifier.key_id == OLD.key_id
    assert "immutablelog/other" in report.warnings[0]
