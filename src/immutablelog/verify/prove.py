"""``prove``: one event's inclusion, proven here — its bytes hashed here, an inclusion proof
checked here against a checkpoint whose signature is checked here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from immutablelog.checkpoint import Checkpoint
from immutablelog.entry import EntryError, decode_entry, decode_erasable, is_committed, reveal
from immutablelog.merkle import ProofError
from immutablelog.merkle import verify_inclusion as merkle_verify_inclusion
from immutablelog.verify.checks import MalformedAnswer, check_page, parse_page
from immutablelog.verify.client import LogClient
from immutablelog.verify.engine import finding_of
from immutablelog.verify.report import CouldNotCheck, Finding, FindingKind, Report
from immutablelog.verify.state import load_state
from immutablelog.verify.trust import (
    check_against_state,
    choose_server_key,
    fetch_checkpoint,
    run_checks,
)
from immutablelog.verify.witnesses import WitnessPolicy


def prove_event(
    client: LogClient,
    index: int | None,
    *,
    pinned_key: str | None = None,
    state_path: Path | None = None,
    tenant: str | None = None,
    event_id: str | None = None,
    witnesses: WitnessPolicy | None = None,
) -> Report:
    """Prove locally that event ``index`` (or the event ``event_id``) is in the signed log: its
    bytes, hashed here, and an inclusion proof checked here against a checkpoint whose
    signature is checked here."""
    report = Report("prove", client.url, state_file=str(state_path) if state_path else None)

    def checks() -> None:
        nonlocal index
        if index is None:
            if event_id is None:
                raise CouldNotCheck("usage", "name an event by index or by id")
            index = client.locate_event(event_id)
        state = load_state(state_path) if state_path is not None else None
        verifier = choose_server_key(client, report, pinned_key, state)
        checkpoint, tenant_name, _ = fetch_checkpoint(
            client, report, verifier, tenant, state, witnesses
        )
        if state is not None:
            check_against_state(client, report, state, checkpoint)
        if not 0 <= index < checkpoint.size:
            raise CouldNotCheck(
                "not_found", f"index {index} is not in the log (tree size {checkpoint.size})"
            )
        _prove(client, report, checkpoint, tenant_name, index)
        found = report.event.get("id") if report.event else None
        if event_id is not None and found is not None and found != event_id:
            report.add(
                Finding(
                    FindingKind.ALTERED_ENTRY,
                    f"the server places event {event_id} at index {index}, "
                    f"but the entry there is {found}",
                    index,
                    entry_id=found,
                )
            )

    return run_checks(report, checks)


def _prove(
    client: LogClient, report: Report, checkpoint: Checkpoint, tenant: str, index: int
) -> None:
    try:
        raw = client.entries_page(index, index + 1)
        page = check_page(raw, index, index + 1, tenant)
        _, datas, parts = parse_page(raw)
        data, part = (datas[0], parts[0]) if page.contiguous == 1 else (None, None)
    except MalformedAnswer as exc:
        raise CouldNotCheck("malformed_answer", f"GET /v1/entries: {exc}") from None
    report.entries_checked = page.received
    for anomaly in page.anomalies:
        report.add(finding_of(anomaly))
    for run in page.index_runs:
        report.add(
            Finding(
                FindingKind.WRONG_INDEX,
                f"the entry at index {index} says it is index {index + run.shift}",
                index,
                entry_id=run.first_id,
            )
        )
    if data is None:
        if not report.findings_total:
            report.add(Finding(FindingKind.MISSING_ENTRY, f"no entry at index {index}", index))
        return
    leaf = page.leaves
    proof = client.inclusion_proof(index, checkpoint.size)
    try:
        merkle_verify_inclusion(index, checkpoint.size, leaf, proof, checkpoint.root_hash)
    except ProofError as exc:
        report.add(
            Finding(
                FindingKind.ALTERED_ENTRY,
                f"entry {index} (leaf {leaf.hex()}) is not in the signed tree: {exc}",
                index,
                entry_id=page.last_id,
            )
        )
    if report.findings_total:
        return
    event = decode_entry(data)
    if is_committed(event):
        if part is None:
            erased = _prove_erasure(client, report, checkpoint, tenant, index, event["id"])
            if erased is None:
                return
            event = {**event, "payload": None, "erased": erased}
        else:
            try:
                event = reveal(event, decode_erasable(event, part))
            except EntryError as exc:  # hashes to the commitment, so committed so
                report.add(Finding(FindingKind.ALTERED_VALUES, exc.message, index))
                return
    event["leaf_hash"] = leaf.hex()
    report.event = event


def _prove_erasure(
    client: LogClient,
    report: Report,
    checkpoint: Checkpoint,
    tenant: str,
    index: int,
    event_id: str,
) -> dict[str, Any] | None:
    """An entry served without its values is proven erased only by an erasure record that
    is itself in the signed tree and covers it; the server names the record, this checks it.
    Returns what the record says, or ``None`` after a finding."""
    hint = client.erasure_hint(event_id)
    record = None
    if hint is not None and index < hint < checkpoint.size:
        try:
            raw = client.entries_page(hint, hint + 1)
            page = check_page(raw, hint, hint + 1, tenant)
        except MalformedAnswer as exc:
            raise CouldNotCheck("malformed_answer", f"GET /v1/entries: {exc}") from None
        if page.contiguous == 1 and not page.anomalies:
            proof = client.inclusion_proof(hint, checkpoint.size)
            try:
                merkle_verify_inclusion(
                    hint, checkpoint.size, page.leaves, proof, checkpoint.root_hash
                )
                record = page.erasures[0] if page.erasures else None
            except ProofError:
                record = None
    if record is None or not any(start <= index < end for start, end in record.ranges):
        report.add(
            Finding(
                FindingKind.MISSING_VALUES,
                f"the payload and meta of entry {index} are gone, and the server names no "
                "erasure record in the signed log that covers it",
                index,
                entry_id=event_id,
            )
        )
        return None
    report.erased_entries = 1
    erased = {"index": record.index, "at": record.received_at, "reason": record.reason}
    erased["by"] = record.by
    report.erasures.append({**erased, "count": sum(e - s for s, e in record.ranges)})
    return erased
