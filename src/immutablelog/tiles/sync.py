"""Write a tenant's tlog-tiles tree into a directory, as static files, incrementally.

The directory then serves as the log for any web server or CDN: the same paths and bytes as
``/tlog/<tenant>/``. Each run writes only what the tree gained since the checkpoint the
directory holds (full tiles are never rewritten; the new partial tiles are added beside the
old ones, which clients of older checkpoints may still need), makes the tiles durable, and
only then replaces ``checkpoint``: a reader never sees a checkpoint whose tiles are missing.
Before writing, the new checkpoint is proven consistent with the one in the directory, so a
directory is never switched to a different history.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from immutablelog.checkpoint import NoteError, open_checkpoint
from immutablelog.ledger import Ledger, Tenant
from immutablelog.merkle import ProofError, verify_consistency
from immutablelog.tiles.layout import available, tiles_for_size
from immutablelog.tiles.source import tile_bytes

CHECKPOINT_FILE = "checkpoint"


class SyncError(Exception):
    """The directory holds something this log cannot continue."""


@dataclass(frozen=True)
class SyncResult:
    size: int
    previous_size: int
    tiles_written: int


def sync_tiles(ledger: Ledger, tenant: Tenant, directory: Path) -> SyncResult:
    """Bring ``directory`` up to the tenant's latest checkpoint."""
    latest = ledger.checkpoint(tenant)
    previous = _previous_size(ledger, tenant, directory, latest.size, latest.root)
    written = 0
    for tile in tiles_for_size(latest.size):
        target = directory / tile.path()
        # Tiles the last finished run wrote are durable; any other file may be a crashed
        # run's, never synced, so it is written again.
        if available(tile, previous) and target.exists():
            continue
        _write(target, tile_bytes(ledger, tenant, tile))
        written += 1
    if written or previous != latest.size or not (directory / CHECKPOINT_FILE).exists():
        os.sync()  # every tile durable before the checkpoint that needs them
        _write(directory / CHECKPOINT_FILE, latest.note.encode("utf-8"), durable=True)
    return SyncResult(latest.size, previous, written)


def _previous_size(ledger: Ledger, tenant: Tenant, directory: Path, size: int, root: bytes) -> int:
    """The size of the checkpoint in ``directory`` (0 if none), once proven that the
    tree of ``size`` and ``root`` extends it."""
    path = directory / CHECKPOINT_FILE
    try:
        note = path.read_text("utf-8")
    except FileNotFoundError:
        return 0
    except (OSError, UnicodeDecodeError) as exc:
        raise SyncError(f"cannot read {path}: {exc}") from None
    try:
        old = open_checkpoint(ledger.verifiers(), note, ledger.origin(tenant))
    except NoteError as exc:
        raise SyncError(f"{path} is not a checkpoint of this log: {exc}") from None
    if old.size > size:
        raise SyncError(f"{path} is at size {old.size}, beyond this log's {size}")
    try:
        proof = ledger.consistency_proof(tenant, old.size, size)
        verify_consistency(old.size, size, proof, old.root_hash, root)
    except ProofError as exc:
        raise SyncError(f"{path} holds a different history than this log: {exc}") from None
    return old.size


def _write(path: Path, data: bytes, *, durable: bool = False) -> None:
    """Replace ``path`` atomically: a reader sees the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
