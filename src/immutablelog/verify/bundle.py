"""Verifying an export bundle offline: no network, constant memory.

A bundle is JSON Lines. The first line is the header::

    {"format": "immutablelog-bundle/2", "origin": "...", "log_key": "<verifier key>",
     "checkpoint": "<signed note text>", "tree_size": N}

then one line per entry, ``{"index": i, "entry": "<entry text>"}`` for i = 0 … N-1 in order,
with ``"erasable": {"salt": "<hex>", "values": "<text>"}`` for a format 2 entry whose erasable
part the bundle carries. A header with ``"erasable": "omitted"`` says the bundle carries none
(one for a reader who must not see personal data): it proves every entry's clear fields and
commitment, and the values it lacks are reported as withheld, not as missing.
The file is read in blocks of whole lines, each checked (in worker processes for big bundles)
exactly like a page from the server, and the rebuilt root must be the signed one.

A bundle carries its own log key, which proves only that the bundle agrees with itself: pin the
key (``--log-key``, or a state file from earlier online runs) to prove it is the operator's log.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, BinaryIO, Final

import orjson

from immutablelog.merkle import CompactRange
from immutablelog.verify.checks import ChunkResult, check_lines
from immutablelog.verify.engine import (
    ChunkRunner,
    NoProgress,
    Progress,
    Rebuild,
    auto_workers,
    result_of,
)
from immutablelog.verify.report import CouldNotCheck, Finding, FindingKind, Report
from immutablelog.verify.state import load_state
from immutablelog.verify.trust import Stop, choose_key, open_signed_checkpoint, run_checks
from immutablelog.verify.witnesses import WitnessPolicy

BUNDLE_FORMAT: Final = "immutablelog-bundle/2"
#: Format 1 bundles (before erasable parts) read the same way.
READABLE_FORMATS: Final = frozenset({"immutablelog-bundle/1", BUNDLE_FORMAT})
_BLOCK_BYTES: Final = 4 << 20
_MAX_LINE_BYTES: Final = 64 << 20
_MAX_HEADER_BYTES: Final = 4 << 20

BUNDLE_KEY_WARNING = (
    "the log key came from the bundle itself ({key}): this proves the bundle is consistent, "
    "not that the log's operator signed it. Pin the operator's key with --log-key."
)


def verify_bundle(
    path: Path,
    *,
    pinned_key: str | None = None,
    state_path: Path | None = None,
    tenant: str | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
    witnesses: WitnessPolicy | None = None,
) -> Report:
    """Verify a bundle file; a state file, if given, is read (never written). With
    ``witnesses``, its checkpoint must carry their quorum of cosignatures."""
    report = Report("verify", str(path), state_file=str(state_path) if state_path else None)

    def checks() -> None:
        try:
            with path.open("rb") as handle:
                _verify(
                    report,
                    handle,
                    pinned_key,
                    state_path,
                    tenant,
                    workers,
                    progress or NoProgress(),
                    witnesses,
                )
        except OSError as exc:
            raise CouldNotCheck("bundle", f"cannot read bundle {path}: {exc}") from None

    return run_checks(report, checks)


def _read_header(handle: BinaryIO) -> dict[str, Any]:
    line = handle.readline(_MAX_HEADER_BYTES)
    try:
        header = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise CouldNotCheck("bundle", "the first line is not a JSON bundle header") from None
    if not isinstance(header, dict) or header.get("format") not in READABLE_FORMATS:
        raise CouldNotCheck("bundle", f"not an {BUNDLE_FORMAT} (or /1) bundle")
    for name in ("origin", "log_key", "checkpoint"):
        if not isinstance(header.get(name), str):
            raise CouldNotCheck("bundle", f"the bundle header has no string {name!r}")
    if type(header.get("tree_size")) is not int:
        raise CouldNotCheck("bundle", "the bundle header has no integer 'tree_size'")
    if header.get("erasable", "included") not in ("included", "omitted"):
        raise CouldNotCheck("bundle", "the bundle header's 'erasable' is not included/omitted")
    return header


def _verify(
    report: Report,
    handle: BinaryIO,
    pinned_key: str | None,
    state_path: Path | None,
    tenant: str | None,
    workers: int | None,
    progress: Progress,
    witnesses: WitnessPolicy | None,
) -> None:
    header = _read_header(handle)
    state = load_state(state_path) if state_path is not None else None
    named = header["log_key"]
    verifier = choose_key(
        report,
        pinned_key,
        state,
        unvouched=lambda: named,
        unvouched_source="taken from the bundle",
        unvouched_warning=BUNDLE_KEY_WARNING,
        unvouched_reason="bundle",
    )
    if report.log_key != named:
        report.add(
            Finding(
                FindingKind.WRONG_LOG_KEY,
                f"the bundle names log key {named}, not {report.log_key} ({report.key_source})",
            )
        )

    expected = f"{verifier.name}/{tenant}" if tenant is not None else header["origin"]
    if state is not None and state.origin != expected:
        report.add(
            Finding(
                FindingKind.WRONG_ORIGIN,
                f"the bundle is for {expected!r}, the state file for {state.origin!r}",
            )
        )
        raise Stop
    checkpoint = open_signed_checkpoint(
        report, verifier, header["checkpoint"], expected, "the bundle's checkpoint"
    )
    if witnesses is not None:
        report.witnesses = witnesses.check(report, header["checkpoint"], "the bundle's checkpoint")
    if header["origin"] != checkpoint.origin:
        report.add(
            Finding(
                FindingKind.WRONG_ORIGIN,
                f"the bundle header says origin {header['origin']!r}, its checkpoint "
                f"{checkpoint.origin!r}",
            )
        )
    report.tree_size, report.root_hash = checkpoint.size, checkpoint.root_hash
    if header["tree_size"] != checkpoint.size:
        report.add(
            Finding(
                FindingKind.MALFORMED_BUNDLE,
                f"the bundle header says tree_size {header['tree_size']}, its signed "
                f"checkpoint {checkpoint.size}",
            )
        )
    tenant_name = checkpoint.origin[len(verifier.name) + 1 :]

    prefix = None
    if state is not None:
        report.previous_size = state.tree_size
        if state.tree_size <= checkpoint.size:
            prefix = (state.tree_size, state.root_hash, state.frontier)
        else:
            report.warnings.append(
                f"the bundle (size {checkpoint.size}) is older than the state file (size "
                f"{state.tree_size}); it cannot be compared with it offline"
            )
    if prefix is not None and prefix[0] == 0:
        prefix = None
    withheld = header.get("erasable") == "omitted"
    rebuild = Rebuild(report, CompactRange(), checkpoint.size, prefix, withheld=withheld)
    try:
        progress.start(checkpoint.size)
        try:
            with ChunkRunner(auto_workers(checkpoint.size, workers)) as runner:
                _check_blocks(handle, rebuild, runner, tenant_name, progress)
        finally:
            progress.stop()
        rebuild.finish()
        if rebuild.broken_at is None and rebuild.frontier.root() != checkpoint.root_hash:
            # Offline there are no proofs to pinpoint with; the per-entry checks above and a
            # state file's prefix check are what narrows it down.
            report.add(
                Finding(
                    FindingKind.ROOT_MISMATCH,
                    f"the bundle's entries rebuild root {rebuild.frontier.root().hex()}, not "
                    f"the signed {checkpoint.root_hash.hex()}: an entry was changed",
                )
            )
    finally:
        rebuild.close()


def _blocks(handle: BinaryIO) -> Iterator[bytes]:
    """Whole lines, about ``_BLOCK_BYTES`` at a time, each block ending with a newline."""
    carry = b""
    while True:
        chunk = handle.read(_BLOCK_BYTES)
        if not chunk:
            break
        data = carry + chunk
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            if len(data) > _MAX_LINE_BYTES:
                raise CouldNotCheck("bundle", "a bundle line is longer than 64 MiB")
            carry = data
            continue
        carry = data[cut:]
        yield data[:cut]
    if carry.strip():
        yield carry + b"\n"


def _check_blocks(
    handle: BinaryIO, rebuild: Rebuild, runner: ChunkRunner, tenant: str, progress: Progress
) -> None:
    depth = 2 * runner.workers if runner.parallel else 1
    window: deque[Future[ChunkResult]] = deque()
    position = 0
    for block in _blocks(handle):
        window.append(runner.submit(check_lines, block, position, tenant))
        position += block.count(b"\n")
        while len(window) >= depth:
            _apply(rebuild, result_of(window.popleft()), progress)
    while window:
        _apply(rebuild, result_of(window.popleft()), progress)


def _apply(rebuild: Rebuild, result: ChunkResult, progress: Progress) -> None:
    rebuild.apply(result)
    progress.advance(result.received)
