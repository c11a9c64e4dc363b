"""Verifying a live log over HTTP, and proving one event's inclusion.

The order of the checks is the order of trust. First the checkpoint's signature against a key
the verifier already holds (pinned, or saved); then the checkpoint against the last one this
verifier checked itself (smaller is a rollback, inconsistent is a rewrite or a fork); then the
new entries: each one's bytes, hashed here, appended to the saved frontier, must rebuild
exactly the signed root. The server is asked only for bytes and proofs, never for a verdict.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from immutablelog.checkpoint import Checkpoint, NoteError, Verifier
from immutablelog.entry import decode_entry
from immutablelog.merkle import EMPTY_ROOT, ProofError, node_hash, verify_consistency
from immutablelog.merkle import verify_inclusion as merkle_verify_inclusion
from immutablelog.verify.checks import ChunkResult, MalformedAnswer, check_page, parse_page
from immutablelog.verify.client import ClientSettings, LogClient
from immutablelog.verify.engine import (
    ChunkRunner,
    NoProgress,
    Progress,
    Rebuild,
    UnknownSubtree,
    auto_workers,
    finding_of,
    result_of,
)
from immutablelog.verify.report import CouldNotCheck, Finding, FindingKind, Report
from immutablelog.verify.state import VerifierState, load_state, now, save_state
from immutablelog.verify.tree import Frontier

#: The server answers at most 16384 binary entries a call; a power of two keeps each page one
#: aligned subtree.
PAGE_SIZE = 16384
#: How many altered entries to pinpoint through proofs before stopping (each costs ~2 log n
#: proof requests); more are summarized by the root mismatch.
LOCATE_LIMIT = 5

TOFU_WARNING = (
    "TRUST ON FIRST USE: the log key was taken from the server itself ({key}); nothing vouches "
    "for it. Compare it with the key the log's operator published, then pin it with --log-key."
)


T = TypeVar("T")


class _Stop(Exception):
    """A finding that makes every later check meaningless (bad signature, rollback, …)."""


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
) -> Report:
    """Verify the log behind ``client``; never raises for tampering or outages, reports them."""
    started = time.monotonic()
    report = Report("verify", client.url, state_file=str(state_path) if state_path else None)
    try:
        _verify_remote(
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
        )
    except _Stop:
        pass
    except CouldNotCheck as exc:
        report.error = exc
    report.elapsed_seconds = time.monotonic() - started
    return report


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
) -> None:
    state = load_state(state_path) if state_path is not None else None
    verifier = choose_key(client, report, pinned_key, state)
    checkpoint, tenant_name = fetch_checkpoint(client, report, verifier, tenant, state)
    if state is not None:
        check_against_state(client, report, state, checkpoint)

    old_size = state.tree_size if state is not None else 0
    start = 0 if full else old_size
    frontier = Frontier(old_size, state.frontier) if state is not None and not full else Frontier()
    # No prefix comparison online: the consistency proof already tied the signed tree to the
    # saved one, so any difference below it is an altered entry, which proofs pinpoint.
    rebuild = Rebuild(report, frontier, checkpoint.size)
    try:
        total = checkpoint.size - start
        n_workers = auto_workers(total, workers)
        progress.start(total)
        try:
            with ChunkRunner(n_workers) as runner:
                _download(
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
            _pinpoint_altered(client, rebuild, checkpoint, 0 if full else old_size)
        _probe_beyond(client, report, verifier, checkpoint, tenant_name)
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
        ),
    )
    report.state_saved = True


# --- trust: key, checkpoint, saved state ---------------------------------------------------


def choose_key(
    client: LogClient, report: Report, pinned_key: str | None, state: VerifierState | None
) -> Verifier:
    """The key checkpoints must be signed with: pinned, else saved, else trusted on first use."""
    if pinned_key is not None:
        pinned_key = pinned_key.strip()
        try:
            verifier = Verifier(pinned_key)
        except NoteError as exc:
            raise CouldNotCheck("bad_argument", f"--log-key is not a verifier key: {exc}") from None
        if state is not None and state.log_key != pinned_key:
            raise CouldNotCheck(
                "bad_argument",
                f"the state file was verified with log key {state.log_key}, not {pinned_key}; "
                "if the log's key really changed, start a new state file",
            )
        key, source = pinned_key, "pinned"
    elif state is not None:
        key, source = state.log_key, "saved in the state file"
        verifier = Verifier(key)
    else:
        key = client.log_key()
        try:
            verifier = Verifier(key)
        except NoteError as exc:
            raise CouldNotCheck(
                "malformed_answer", f"GET /v1/log-key answered no verifier key: {exc}"
            ) from None
        source = "trust on first use"
        report.warnings.append(TOFU_WARNING.format(key=key))
    report.log_key, report.key_source = key, source
    return verifier


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
        raise _Stop from None
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
        raise _Stop
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
        raise _Stop
    return checkpoint


def fetch_checkpoint(
    client: LogClient,
    report: Report,
    verifier: Verifier,
    tenant: str | None,
    state: VerifierState | None,
) -> tuple[Checkpoint, str]:
    """The latest signed checkpoint, and the tenant its origin names."""
    expected = f"{verifier.name}/{tenant}" if tenant is not None else None
    if state is not None:
        if expected is not None and state.origin != expected:
            raise CouldNotCheck(
                "bad_argument",
                f"the state file is for {state.origin!r}, not {expected!r}; use another --state",
            )
        expected = state.origin
    checkpoint = open_signed_checkpoint(
        report, verifier, client.checkpoint(), expected, "the latest checkpoint"
    )
    report.tree_size, report.root_hash = checkpoint.size, checkpoint.root_hash
    return checkpoint, checkpoint.origin[len(verifier.name) + 1 :]


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
        raise _Stop
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
        raise _Stop from None


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
            Frontier(size, state.frontier).ranges(), claimed, strict=True
        ):
            if saved != theirs:
                now_there = check_page(client.entries_page(start, start + 1), start, start + 1, "")
                return start, end, now_there.last_id
    except (CouldNotCheck, MalformedAnswer):
        pass
    return None, None, None


# --- downloading and rebuilding ------------------------------------------------------------


def _download(
    client: LogClient,
    rebuild: Rebuild,
    runner: ChunkRunner,
    start: int,
    size: int,
    tenant: str,
    concurrency: int,
    progress: Progress,
    content_from: int,
) -> None:
    """Fetch ``[start, size)`` page by page and apply the checked pages in order.

    With worker processes, each worker fetches the pages it checks (over its own client), so
    the page bytes never travel through this process. Without workers (or with a client bound
    to a custom transport), fetch threads only wait on the network (several pages in flight),
    and checks run right here — checking in the fetch threads would only make them fight over
    the GIL.
    """

    def check(raw: bytes, first: int, end: int) -> Future[ChunkResult]:
        # As in fetch_and_check_pages: entries a previous run checked only need hashing.
        return runner.submit(check_page, raw, first, end, tenant, end > content_from)

    settings = client.settings if runner.parallel else None

    def checked_now(first: int, end: int) -> ChunkResult:
        if settings is not None:
            pages = [(first, end)]
            future = runner.submit(fetch_and_check_pages, settings, pages, tenant, content_from)
            (page,) = _checked(future)
            return page
        return _checked(check(client.entries_page(first, end), first, end))

    if settings is not None:
        # Workers fetch the pages they check, a run of consecutive pages per task, fetching
        # the next page while checking one: the server is never idle waiting for a worker to
        # ask, and page bytes never cross a process boundary.
        runs: deque[tuple[list[tuple[int, int]], Future[list[ChunkResult]]]] = deque()
        per_run = _pages_per_run(size - start, runner.workers)
        bounds = [(f, min(f + PAGE_SIZE, size)) for f in range(start, size, PAGE_SIZE)]
        for i in range(0, len(bounds), per_run):
            run = bounds[i : i + per_run]
            runs.append(
                (run, runner.submit(fetch_and_check_pages, settings, run, tenant, content_from))
            )
            while len(runs) > runner.workers:
                _apply_run(rebuild, *runs.popleft(), checked_now, progress)
        while runs:
            _apply_run(rebuild, *runs.popleft(), checked_now, progress)
        return

    # Here worker processes (if any) only check: this process fetches, for them too.
    checking: deque[tuple[int, int, Future[ChunkResult]]] = deque()
    check_depth = 2 * runner.workers if runner.parallel else 1

    def apply_oldest() -> None:
        first, end, future = checking.popleft()
        _apply_page(rebuild, _checked(future), first, end, checked_now, progress)

    pages = iter(range(start, size, PAGE_SIZE))
    fetching: deque[tuple[int, int, Future[bytes]]] = deque()
    fetch_depth = max(1, concurrency) + check_depth
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="fetch") as pool:

        def refill() -> None:
            while len(fetching) < fetch_depth:
                first = next(pages, None)
                if first is None:
                    return
                end = min(first + PAGE_SIZE, size)
                fetching.append((first, end, pool.submit(client.entries_page, first, end)))

        refill()
        try:
            while fetching:
                first, end, raw = fetching.popleft()
                refill()
                checking.append((first, end, check(raw.result(), first, end)))
                while len(checking) >= check_depth:
                    apply_oldest()
            while checking:
                apply_oldest()
        finally:
            for _, _, pending in fetching:
                pending.cancel()


#: Each worker process's own client, by the settings it was opened with, and its one
#: prefetch thread.
_worker_clients: dict[ClientSettings, LogClient] = {}
_worker_prefetch: list[ThreadPoolExecutor] = []


def fetch_and_check_pages(
    settings: ClientSettings, pages: list[tuple[int, int]], tenant: str, content_from: int
) -> list[ChunkResult]:
    """In a worker process: fetch and check consecutive pages over the worker's own client,
    fetching each next page while checking the current one."""
    client = _worker_clients.get(settings)
    if client is None:
        client = _worker_clients[settings] = LogClient.from_settings(settings)
    if not _worker_prefetch:
        _worker_prefetch.append(ThreadPoolExecutor(1, thread_name_prefix="prefetch"))
    prefetch = _worker_prefetch[0]
    results: list[ChunkResult] = []
    upcoming = prefetch.submit(client.entries_page, *pages[0])
    for i, (first, end) in enumerate(pages):
        raw = upcoming.result()
        if i + 1 < len(pages):
            upcoming = prefetch.submit(client.entries_page, *pages[i + 1])
        # Entries below the saved size passed these checks in an earlier run; if the rebuilt
        # root matches, their bytes are those same bytes, so hashing them is enough.
        results.append(check_page(raw, first, end, tenant, end > content_from))
    return results


def _pages_per_run(entries: int, workers: int) -> int:
    """Pages per worker task: long runs keep the prefetch going, enough runs keep every
    worker busy to the end."""
    pages = -(-entries // PAGE_SIZE)
    return max(1, min(8, pages // (2 * workers)))


def _checked(future: Future[T]) -> T:
    try:
        return result_of(future)
    except MalformedAnswer as exc:
        raise CouldNotCheck("malformed_answer", f"GET /v1/entries: {exc}") from None


def _apply_run(
    rebuild: Rebuild,
    pages: list[tuple[int, int]],
    future: Future[list[ChunkResult]],
    checked: Callable[[int, int], ChunkResult],
    progress: Progress,
) -> None:
    results: list[ChunkResult] = _checked(future)
    for (first, end), result in zip(pages, results, strict=True):
        _apply_page(rebuild, result, first, end, checked, progress)


def _apply_page(
    rebuild: Rebuild,
    result: ChunkResult,
    first: int,
    end: int,
    checked: Callable[[int, int], ChunkResult],
    progress: Progress,
) -> None:
    """Apply a page; if the server answered less than asked (its page cap), ask for the rest."""
    position = first
    while True:
        rebuild.apply(result)
        progress.advance(result.received)
        if result.covered_to >= end:
            return
        if result.covered_to <= position:
            rebuild.missing(max(position, result.covered_to), end)
            return
        position = result.covered_to
        result = checked(position, end)


def _pinpoint_altered(
    client: LogClient, rebuild: Rebuild, checkpoint: Checkpoint, verified_below: int
) -> None:
    """The rebuilt root is not the signed one: find which entries differ, through proofs.

    Walk down the tree from the signed root. At each node, the server's inclusion proofs give
    its hashes for both children; they must hash to the node's (already authenticated) hash,
    so they are authenticated in turn, and a child whose hash differs from ours holds an
    altered entry. If the server's two hashes do not add up (its own storage is damaged too),
    one of ours may stand in for one of them; failing that, the node's range is reported as
    it is. ``verified_below`` is the size of the prefix a consistency proof already vouched
    for, which holds nothing to find.
    """
    report = rebuild.report
    size, root = checkpoint.size, checkpoint.root_hash
    proofs: dict[int, dict[tuple[int, int], bytes]] = {}
    found: list[tuple[int, bytes]] = []
    unresolved: list[tuple[int, int]] = []

    def siblings(leaf: int) -> dict[tuple[int, int], bytes]:
        if leaf not in proofs:
            path = _path_siblings(leaf, size)
            hashes = client.inclusion_proof(leaf, size)
            if len(hashes) != len(path):
                raise _Unlocatable(f"the inclusion proof for {leaf} has the wrong length")
            proofs[leaf] = dict(zip(path, hashes, strict=True))
        return proofs[leaf]

    def descend(start: int, end: int, committed: bytes) -> None:
        if len(found) >= LOCATE_LIMIT:
            return
        if end - start == 1:
            found.append((start, committed))
            return
        split = start + (1 << ((end - start - 1).bit_length() - 1))
        left = siblings(split)[(start, split)]
        right = siblings(start)[(split, end)]
        ours_left = rebuild.subtree_hash(start, split) if split > verified_below else None
        ours_right = rebuild.subtree_hash(split, end)
        if node_hash(left, right) != committed:
            if ours_left is not None and node_hash(ours_left, right) == committed:
                left = ours_left
            elif node_hash(left, ours_right) == committed:
                right = ours_right
            else:
                unresolved.append((start, end))
                return
        if ours_left is not None and ours_left != left:
            descend(start, split, left)
        if ours_right != right:
            descend(split, end, right)

    try:
        descend(0, size, root)
    except (_Unlocatable, UnknownSubtree) as exc:
        report.add(
            Finding(
                FindingKind.ROOT_MISMATCH,
                f"the entries do not rebuild the signed root {root.hex()} (got "
                f"{rebuild.frontier.root().hex()}); could not pinpoint further: {exc}",
            )
        )
        return
    located = [(p, h) for p, h in found if not rebuild.is_explained(p)]
    for position, committed in located:
        entry_id = None
        try:
            page = check_page(
                client.entries_page(position, position + 1), position, position + 1, ""
            )
            entry_id = page.last_id
        except (CouldNotCheck, MalformedAnswer):
            pass
        ours = rebuild.subtree_hash(position, position + 1)
        report.add(
            Finding(
                FindingKind.ALTERED_ENTRY,
                f"entry {position} hashes to {ours.hex()}, but the signed tree holds "
                f"{committed.hex()} at that index: its bytes were changed",
                position,
                entry_id=entry_id,
            )
        )
    for start, end in unresolved:
        if rebuild.overlaps_explained(start, end):
            continue
        report.add(
            Finding(
                FindingKind.ROOT_MISMATCH,
                f"the entries do not rebuild the signed root {root.hex()}; the server's own "
                f"hashes contradict it too; the difference lies in entries {start}..{end - 1}",
                start,
                end,
            )
        )
    if not found and not unresolved:
        report.add(
            Finding(
                FindingKind.ROOT_MISMATCH,
                f"the entries do not rebuild the signed root {root.hex()}",
            )
        )
    elif len(found) >= LOCATE_LIMIT and located:
        report.warnings.append(
            f"stopped pinpointing after {LOCATE_LIMIT} altered entries; there may be more"
        )
    report.findings.sort(key=lambda f: -1 if f.index is None else f.index)


class _Unlocatable(Exception):
    pass


def _path_siblings(leaf: int, size: int) -> list[tuple[int, int]]:
    """The ``[start, end)`` of each sibling on ``leaf``'s path, bottom-up (RFC 9162 order)."""
    out: list[tuple[int, int]] = []
    start, end = 0, size
    while end - start > 1:
        split = start + (1 << ((end - start - 1).bit_length() - 1))
        if leaf < split:
            out.append((split, end))
            end = split
        else:
            out.append((start, split))
            start = split
    out.reverse()
    return out


def _probe_beyond(
    client: LogClient, report: Report, verifier: Verifier, checkpoint: Checkpoint, tenant: str
) -> None:
    """An entry stored past the signed tree was never signed for: a hidden insertion.

    New events may legitimately land between the two requests, so a hit only counts if the
    latest checkpoint still does not cover it.
    """
    size = checkpoint.size
    try:
        probe = check_page(client.entries_page(size, size + 1), size, size + 1, tenant)
    except MalformedAnswer as exc:
        raise CouldNotCheck("malformed_answer", f"GET /v1/entries: {exc}") from None
    if not probe.received:
        return
    latest = open_signed_checkpoint(
        report, verifier, client.checkpoint(), checkpoint.origin, "the latest checkpoint"
    )
    if latest.size <= size:
        report.add(
            Finding(
                FindingKind.EXTRA_ENTRY,
                f"the server stores an entry at index {size}, beyond its signed tree of size "
                f"{latest.size}",
                size,
                entry_id=probe.last_id,
            )
        )


# --- prove -----------------------------------------------------------------------------------


def prove_event(
    client: LogClient,
    index: int | None,
    *,
    pinned_key: str | None = None,
    state_path: Path | None = None,
    tenant: str | None = None,
    event_id: str | None = None,
) -> Report:
    """Prove locally that event ``index`` (or the event ``event_id``) is in the signed log: its
    bytes, hashed here, and an inclusion proof checked here against a checkpoint whose
    signature is checked here."""
    started = time.monotonic()
    report = Report("prove", client.url, state_file=str(state_path) if state_path else None)
    try:
        if index is None:
            if event_id is None:
                raise CouldNotCheck("usage", "name an event by index or by id")
            index = client.locate_event(event_id)
        state = load_state(state_path) if state_path is not None else None
        verifier = choose_key(client, report, pinned_key, state)
        checkpoint, tenant_name = fetch_checkpoint(client, report, verifier, tenant, state)
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
    except _Stop:
        pass
    except CouldNotCheck as exc:
        report.error = exc
    report.elapsed_seconds = time.monotonic() - started
    return report


def _prove(
    client: LogClient, report: Report, checkpoint: Checkpoint, tenant: str, index: int
) -> None:
    try:
        raw = client.entries_page(index, index + 1)
        page = check_page(raw, index, index + 1, tenant)
        data = parse_page(raw)[1][0] if page.contiguous == 1 else None
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
    event["leaf_hash"] = leaf.hex()
    report.event = event
