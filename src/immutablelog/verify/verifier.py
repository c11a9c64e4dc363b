"""Verifying a live log over HTTP: the run that ties the other modules together.

The order of the checks is the order of trust (``trust.py``): the checkpoint's signature
against a key the verifier already holds, then the checkpoint against the last one this
verifier checked itself. Then the new entries (``download.py``): each one's bytes, hashed here,
appended to the saved frontier, must rebuild exactly the signed root; if they do not, proofs
pinpoint the entries that differ (``pinpoint.py``). The server is asked only for bytes and
proofs, never for a verdict.
"""

from __future__ import annotations

from pathlib import Path

from immutablelog.merkle import CompactRange
from immutablelog.verify import download as downloading
from immutablelog.verify.client import LogClient
from immutablelog.verify.engine import ChunkRunner, NoProgress, Progress, Rebuild, auto_workers
from immutablelog.verify.pinpoint import pinpoint_altered, probe_beyond
from immutablelog.verify.prove import prove_event
from immutablelog.verify.report import Report
from immutablelog.verify.state import VerifierState, load_state, now, save_state
from immutablelog.verify.trust import (
    check_against_state,
    choose_server_key,
    fetch_checkpoint,
    run_checks,
)

__all__ = ["prove_event", "verify_remote"]
from immutablelog.verify.witnesses import WitnessPolicy


def verify_remote(
    client: LogClient,
    *,
    state_path: Path | None,
    pinned_key: str | None = None,
    tenant: str | None = None,
    full: bool = False,
    save: bool = True,
    workers: int | None = None,
    concurrency: int = 4,
    progress: Progress | None = None,
    witnesses: WitnessPolicy | None = None,
) -> Report:
    """Verify the log behind ``client``; never raises for tampering or outages, reports them.

    With ``witnesses``, the checkpoint verified is the newest one the log's witnesses
    cosigned, and it must carry the policy's quorum of valid cosignatures.
    """
    report = Report("verify", client.url, state_file=str(state_path) if state_path else None)
    return run_checks(
        report,
        lambda: _verify_remote(
            report,
            client,
            state_path,
            pinned_key,
            tenant,
            full,
            save,
            workers,
            concurrency,
            progress or NoProgress(),
            witnesses,
        ),
    )


def _verify_remote(
    report: Report,
    client: LogClient,
    state_path: Path | None,
    pinned_key: str | None,
    tenant: str | None,
    full: bool,
    save: bool,
    workers: int | None,
    concurrency: int,
    progress: Progress,
    witnesses: WitnessPolicy | None,
) -> None:
    state = load_state(state_path) if state_path is not None else None
    verifier = choose_server_key(client, report, pinned_key, state)
    checkpoint, tenant_name, verifier = fetch_checkpoint(
        client, report, verifier, tenant, state, witnesses
    )
    if state is not None:
        check_against_state(client, report, state, checkpoint)

    old_size = state.tree_size if state is not None else 0
    start = 0 if full else old_size
    frontier = (
        CompactRange(old_size, state.frontier) if state is not None and not full else CompactRange()
    )
    # No prefix comparison online: the consistency proof already tied the signed tree to the
    # saved one, so any difference below it is an altered entry, which proofs pinpoint.
    rebuild = Rebuild(report, frontier, checkpoint.size)
    try:
        total = checkpoint.size - start
        n_workers = auto_workers(total, workers)
        progress.start(total)
        try:
            with ChunkRunner(n_workers) as runner:
                downloading.download(
                    client,
                    rebuild,
                    runner,
                    start,
                    checkpoint.size,
                    tenant_name,
                    concurrency,
                    progress,
                    old_size,
                )
        finally:
            progress.stop()
        rebuild.finish()
        if rebuild.broken_at is None and rebuild.frontier.root() != checkpoint.root_hash:
            pinpoint_altered(client, rebuild, checkpoint, 0 if full else old_size)
        probe_beyond(client, report, verifier, checkpoint, tenant_name)
    finally:
        rebuild.close()

    if report.findings_total or not save or state_path is None:
        return
    save_state(
        state_path,
        VerifierState(
            log_key=report.log_key or "",
            origin=checkpoint.origin,
            tree_size=checkpoint.size,
            root_hash=checkpoint.root_hash,
            frontier=rebuild.frontier.hashes,
            url=client.url,
            verified_at=now(),
            replaced_keys=(*(state.replaced_keys if state else ()), *report.replaced_keys),
        ),
    )
    report.state_saved = True
