"""A witness policy: trust a checkpoint only if enough independent witnesses cosigned it.

A log key alone cannot rule out a split view: the operator can sign two histories and show
each reader one. Witnesses (C2SP tlog-witness) cosign a checkpoint only if it extends
everything they saw of that log, so a checkpoint carrying ``quorum`` valid cosignatures of
witnesses the reader chose is one those witnesses all saw as the log's one history.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from immutablelog.checkpoint import NoteError
from immutablelog.cosignature import CosignatureVerifier
from immutablelog.verify.report import CouldNotCheck, Finding, FindingKind, Report

#: How far a cosignature's time may be ahead of this machine's clock (clock skew), in seconds.
MAX_CLOCK_SKEW = 60


@dataclass(frozen=True)
class WitnessPolicy:
    witnesses: tuple[CosignatureVerifier, ...]
    quorum: int
    max_skew: float = MAX_CLOCK_SKEW

    @classmethod
    def parse(cls, keys: Sequence[str], quorum: int | None) -> WitnessPolicy:
        """From witness verifier keys and a quorum (default: all of them)."""
        try:
            witnesses = tuple(CosignatureVerifier(key) for key in keys)
        except NoteError as exc:
            raise ValueError(f"--witness: {exc}") from None
        if len({w.verifier_key for w in witnesses}) != len(witnesses):
            raise ValueError("--witness: the same witness key is given twice")
        needed = len(witnesses) if quorum is None else quorum
        if not 1 <= needed <= len(witnesses):
            raise ValueError(f"--quorum must be from 1 to the {len(witnesses)} witnesses given")
        return cls(witnesses, needed)

    def check(self, report: Report, note: str, what: str) -> list[str]:
        """The names of the witnesses whose cosignature on ``note`` is valid, if at least
        ``quorum``; else :class:`CouldNotCheck` (``witness_quorum``) saying which are missing.

        A cosignature line that claims a given witness's key but does not verify is forgery:
        a finding (exit 1), not an absent cosignature.
        """
        now = time.time()
        valid: list[str] = []
        problems: list[str] = []
        for witness in self.witnesses:
            try:
                found = witness.find(note)
            except NoteError as exc:
                report.add(Finding(FindingKind.BAD_SIGNATURE, f"{what}: {exc}"))
                problems.append(f"{witness.name}: forged cosignature")
                continue
            if found is None:
                problems.append(f"{witness.name}: no cosignature")
            elif found.timestamp > now + self.max_skew:
                problems.append(
                    f"{witness.name}: cosignature dated {found.timestamp}, in the future"
                )
            else:
                valid.append(witness.name)
        if len(valid) < self.quorum:
            raise CouldNotCheck(
                "witness_quorum",
                f"{what} has {len(valid)} valid cosignatures of the witnesses given, "
                f"{self.quorum} are required ({'; '.join(problems)}); without them it may be "
                "a view of the log that no witness saw (a split view)",
            )
        return valid
