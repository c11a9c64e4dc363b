"""Trust: which key checkpoints must be signed with, the signed checkpoint itself, and how it
relates to the one this verifier checked last time.

The order of the checks is the order of trust: first the checkpoint's signature against a key
the verifier already holds (pinned, or saved; trusted on first use only with a loud warning),
then the checkpoint against the saved one (smaller is a rollback, inconsistent is a rewrite or
a fork). Remote runs, proofs and offline bundles all start here.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from immutablelog.checkpoint import Checkpoint, NoteError, Verifier, _split_note
from immutablelog.merkle import EMPTY_ROOT, CompactRange, ProofError, node_hash, verify_consistency
from immutablelog.verify.checks import MalformedAnswer, check_page
from immutablelog.verify.client import LogClient
from immutablelog.verify.report import CouldNotCheck, Finding, FindingKind, Report
from immutablelog.verify.state import VerifierState
from immutablelog.verify.witnesses import WitnessPolicy

TOFU_WARNING = (
    "TRUST ON FIRST USE: the log key was taken from the server itself ({key}); nothing vouches "
    "for it. Compare it with the key the log's operator published, then pin it with --log-key."
)


class Stop(Exception):
    """A finding that makes every later check meaningless (bad signature, rollback, …)."""


def run_checks(report: Report, checks: Callable[[], None]) -> Report:
    """Run ``checks`` into ``report``: a :class:`Stop` ends them with what was found, an
    outage (:class:`CouldNotCheck`) becomes the report's error. Never raises for either."""
    started = time.monotonic()
    try:
        checks()
    except Stop:
        pass
    except CouldNotCheck as exc:
        report.error = exc
    report.elapsed_seconds = time.monotonic() - started
    return report


def choose_key(
    report: Report,
    pinned_key: str | None,
    state: VerifierState | None,
    *,
    unvouched: Callable[[], str],
    unvouched_source: str,
    unvouched_warning: str,
    unvouched_reason: str,
) -> Verifier:
    """The key checkpoints must be signed with: pinned, else saved in the state file, else
    ``unvouched()`` — the key the log itself names (the server's, a bundle's) — which proves
    only self-consistency, so it comes with ``unvouched_warning`` and ``unvouched_source``.

    A pinned key that contradicts the state file is refused rather than re-pinned, unless
    the state followed the log's own rotation from it (its ``replaced_keys``): a log whose
    key changed without a handover needs a new state file.
    """
    if pinned_key is not None:
        pinned_key = pinned_key.strip()
        try:
            verifier = Verifier(pinned_key)
        except NoteError as exc:
            raise CouldNotCheck("bad_argument", f"--log-key is not a verifier key: {exc}") from None
        source = "pinned"
        if state is not None and pinned_key in state.replaced_keys:
            pinned_key, verifier = state.log_key, Verifier(state.log_key)
            source = "pinned, then followed to its successor (state file)"
        elif state is not None and state.log_key != pinned_key:
            raise CouldNotCheck(
                "bad_argument",
                f"the state file was verified with log key {state.log_key}, not {pinned_key}; "
                "if the log's key really changed, start a new state file",
            )
        key = pinned_key
    elif state is not None:
        key, source = state.log_key, "saved in the state file"
        verifier = Verifier(key)
    else:
        key = unvouched()
        try:
            verifier = Verifier(key)
        except NoteError as exc:
            raise CouldNotCheck(unvouched_reason, f"{unvouched_source}: {exc}") from None
        source = unvouched_source
        report.warnings.append(unvouched_warning.format(key=key))
    report.log_key, report.key_source = key, source
    return verifier


def choose_server_key(
    client: LogClient, report: Report, pinned_key: str | None, state: VerifierState | None
) -> Verifier:
    """:func:`choose_key` for a live log: the unvouched key is the server's own."""
    return choose_key(
        report,
        pinned_key,
        state,
        unvouched=client.log_key,
        unvouched_source="trust on first use",
        unvouched_warning=TOFU_WARNING,
        unvouched_reason="malformed_answer",
    )


def open_signed_checkpoint(
    report: Report, verifier: Verifier, note: str, expected_origin: str | None, what: str
) -> Checkpoint:
    """Check a checkpoint's signature and origin; a failure is a finding, then a stop."""
    if "\n\n\u2014 " not in note:
        raise CouldNotCheck("malformed_answer", f"{what} is not a signed note")
    try:
        text = verifier.verify(note)
    except NoteError as exc:
        report.add(Finding(FindingKind.BAD_SIGNATURE, f"{what}: {exc}"))
        raise Stop from None
    try:
        checkpoint = Checkpoint.from_text(text)
    except NoteError as exc:
        raise CouldNotCheck("malformed_answer", f"{what} is signed but unreadable: {exc}") from None
    report.origin = checkpoint.origin
    if expected_origin is not None and checkpoint.origin != expected_origin:
        report.add(
            Finding(
                FindingKind.WRONG_ORIGIN,
                f"{what} is for log {checkpoint.origin!r}, not {expected_origin!r}",
            )
        )
        raise Stop
    if not checkpoint.origin.startswith(f"{verifier.name}/") or checkpoint.origin == (
        f"{verifier.name}/"
    ):
        report.add(
            Finding(
                FindingKind.WRONG_ORIGIN,
                f"{what} has origin {checkpoint.origin!r}, not '{verifier.name}/<tenant>' "
                "as the log key requires",
            )
        )
        raise Stop
    return checkpoint


def fetch_checkpoint(
    client: LogClient,
    report: Report,
    verifier: Verifier,
    tenant: str | None,
    state: VerifierState | None,
    witnesses: WitnessPolicy | None = None,
) -> tuple[Checkpoint, str, Verifier]:
    """The latest signed checkpoint (with ``witnesses``: the newest one they cosigned, with
    their quorum), the tenant its origin names, and the key it is signed with (the trusted
    one's successor if the log rotated its key, see :func:`follow_rotation`)."""
    expected = f"{verifier.name}/{tenant}" if tenant is not None else None
    if state is not None:
        if expected is not None and state.origin != expected:
            raise CouldNotCheck(
                "bad_argument",
                f"the state file is for {state.origin!r}, not {expected!r}; use another --state",
            )
        expected = state.origin
    note = client.checkpoint()
    verifier = follow_rotation(client, report, verifier, note, expected)
    checkpoint = open_signed_checkpoint(report, verifier, note, expected, "the latest checkpoint")
    tenant_name = checkpoint.origin[len(verifier.name) + 1 :]
    if witnesses is not None:
        what = "the cosigned checkpoint"
        note = client.cosigned_checkpoint(tenant_name)
        checkpoint = open_signed_checkpoint(report, verifier, note, checkpoint.origin, what)
        report.witnesses = witnesses.check(report, note, what)
    report.tree_size, report.root_hash = checkpoint.size, checkpoint.root_hash
    return checkpoint, tenant_name, verifier


#: More key rotations than this between two runs is not a log's ordinary life.
MAX_ROTATIONS = 16


def follow_rotation(
    client: LogClient, report: Report, trusted: Verifier, note: str, expected: str | None
) -> Verifier:
    """The key to check ``note`` with: ``trusted``, or its successor if the log rotated it.

    Only a note that carries a signature of another key of the log's name (a rotation under
    way or done) makes the verifier look: the log's handovers are checkpoints of this log
    signed by the key trusted so far *and* by the next one, and each one checked here moves
    the trust one key on (said in the report, and kept in the state file). A note signed by
    a key with no handover from the trusted key is then refused as before (bad signature).
    """
    try:
        text, signatures = _split_note(note)
        origin = Checkpoint.from_text(text).origin
    except NoteError:
        return trusted  # open_signed_checkpoint says what is wrong with it
    if not any(n == trusted.name and k != trusted.key_id for n, k, _ in signatures):
        return trusted
    expected = expected or origin
    handovers = client.handovers()
    for _ in range(MAX_ROTATIONS):
        successor = _handed_over(report, trusted, handovers, expected)
        if successor is None:
            break
        trusted = successor
    return trusted


def _handed_over(
    report: Report, trusted: Verifier, handovers: list[tuple[str, str, str]], origin: str
) -> Verifier | None:
    """The key a valid handover from ``trusted`` names, after saying so in the report."""
    old = report.log_key
    for old_key, new_key, handover in handovers:
        if old_key != old:
            continue
        try:
            successor = Verifier(new_key)
            if successor.name != trusted.name:
                raise NoteError(f"the new key is named {successor.name!r}")
            trusted.verify(handover)
            checkpoint = Checkpoint.from_text(successor.verify(handover))
            if checkpoint.origin != origin:
                raise NoteError(f"it is a checkpoint of {checkpoint.origin!r}")
        except NoteError as exc:
            report.warnings.append(f"ignored a handover from {old_key} to {new_key}: {exc}")
            continue
        report.key_rotations.append(
            f"the log's key changed from {old_key} to {new_key}: its checkpoint of size "
            f"{checkpoint.size} is signed by both; now trusting {new_key}"
        )
        report.replaced_keys.append(old_key)
        report.log_key = new_key
        return successor
    return None


def check_against_state(
    client: LogClient, report: Report, state: VerifierState, checkpoint: Checkpoint
) -> None:
    """The new checkpoint must extend the one verified last time: no rollback, no rewrite."""
    report.previous_size = state.tree_size
    if checkpoint.size < state.tree_size:
        report.add(
            Finding(
                FindingKind.ROLLBACK,
                f"the server's checkpoint has size {checkpoint.size}, but size "
                f"{state.tree_size} was verified on {state.verified_at}: the log shrank",
                checkpoint.size,
                state.tree_size,
            )
        )
        raise Stop
    proof = client.consistency_proof(state.tree_size, checkpoint.size) if state.tree_size else []
    try:
        verify_consistency(
            state.tree_size,
            checkpoint.size,
            proof,
            state.root_hash if state.tree_size else EMPTY_ROOT,
            checkpoint.root_hash,
        )
    except ProofError as exc:
        first, end, entry_id = _locate_divergence(client, state)
        where = f"; the server's tree differs within entries {first}..{end - 1}" if end else ""
        report.add(
            Finding(
                FindingKind.INCONSISTENT_HISTORY,
                f"the checkpoint of size {checkpoint.size} does not extend the one verified on "
                f"{state.verified_at} (size {state.tree_size}, root {state.root_hash.hex()}): "
                f"history was rewritten or forked{where} ({exc})",
                first,
                end,
                entry_id,
            )
        )
        raise Stop from None


def _locate_divergence(
    client: LogClient, state: VerifierState
) -> tuple[int | None, int | None, str | None]:
    """Which saved frontier subtree the server's current tree no longer matches.

    The inclusion proof of the last leaf of the saved tree lists the server's hashes for every
    frontier subtree but the last, which is rebuilt from the proof and that leaf's entry.
    Best effort: this names a range; the verdict does not depend on it.
    """
    size = state.tree_size
    try:
        proof = client.inclusion_proof(size - 1, size)
        last = check_page(client.entries_page(size - 1, size), size - 1, size, "")
        low = (size & -size).bit_length() - 1
        if len(proof) != (size - 1).bit_count() or last.contiguous != 1:
            return None, None, None
        h = last.leaves
        for sibling in proof[:low]:
            h = node_hash(sibling, h)
        claimed = [*reversed(proof[low:]), h]
        for (start, end, saved), theirs in zip(
            CompactRange(size, state.frontier).ranges(), claimed, strict=True
        ):
            if saved != theirs:
                now_there = check_page(client.entries_page(start, start + 1), start, start + 1, "")
                return start, end, now_there.last_id
    except (CouldNotCheck, MalformedAnswer):
        pass
    return None, None, None
