"""The verifier's memory: the last checkpoint it verified itself, and how to continue from it.

This file is what makes a rewritten history detectable. A server that replaces its whole log
and re-signs it passes every check that starts from nothing; it cannot produce a consistency
proof from a checkpoint it once showed us to its new one. So the state keeps the pinned log
key, the origin, the verified tree size and root, and the frontier (the roots of the perfect
subtrees of that tree), which is also what lets the next run hash only new entries.

Keep the file where the log's operator cannot write: whoever can edit it can make the verifier
forget. It is saved atomically (temporary file, fsync, rename), and only after a run found
the log intact, so a crash or a failed run never leaves a half-written or poisoned state.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import orjson

from immutablelog.checkpoint import NoteError, Verifier
from immutablelog.merkle import CompactRange
from immutablelog.verify.report import CouldNotCheck

STATE_FORMAT: Final = "immutablelog-verifier-state/1"


@dataclass(frozen=True)
class VerifierState:
    """A verified tree head plus its frontier, for one log key and origin."""

    log_key: str
    origin: str
    tree_size: int
    root_hash: bytes
    frontier: tuple[bytes, ...]
    url: str | None = None
    verified_at: str | None = None
    #: Keys this state trusted before the log rotated to ``log_key``, oldest first.
    replaced_keys: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        try:
            Verifier(self.log_key)
        except NoteError as exc:
            raise ValueError(f"log key: {exc}") from None
        if not isinstance(self.origin, str) or not self.origin:
            raise ValueError("origin must be a non-empty string")
        # The frontier must fold to the root it claims: a state that disagrees with itself is
        # corrupt, and continuing from it would blame the server for our own damage.
        if CompactRange(self.tree_size, self.frontier).root() != self.root_hash:
            raise ValueError("frontier does not hash to the saved root")

    def to_json(self) -> dict[str, Any]:
        body = self._body()
        return {**body, "checksum": _checksum(body)}

    def _body(self) -> dict[str, Any]:
        body = {
            "format": STATE_FORMAT,
            "url": self.url,
            "log_key": self.log_key,
            "origin": self.origin,
            "tree_size": self.tree_size,
            "root_hash": self.root_hash.hex(),
            "frontier": [h.hex() for h in self.frontier],
            "verified_at": self.verified_at,
        }
        if self.replaced_keys:  # absent until a rotation, so older files keep their checksum
            body["replaced_keys"] = list(self.replaced_keys)
        return body

    @classmethod
    def from_json(cls, data: Any) -> VerifierState:
        if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
            raise ValueError(f"not a {STATE_FORMAT} document")
        # The frontier does not commit to the tree size, so an edited size would go unnoticed
        # until the next run blamed the server for it; the checksum catches damage and
        # hand edits (not an attacker, who can recompute it: protect the file instead).
        body = {k: v for k, v in data.items() if k != "checksum"}
        if data.get("checksum") != _checksum(body):
            raise ValueError("checksum mismatch: the file was changed or damaged")
        size = data.get("tree_size")
        if type(size) is not int or size < 0:
            raise ValueError("tree_size must be a non-negative integer")
        frontier = data.get("frontier")
        if not isinstance(frontier, list) or not all(isinstance(h, str) for h in frontier):
            raise ValueError("frontier must be a list of hex hashes")
        for name in ("log_key", "origin", "root_hash"):
            if not isinstance(data.get(name), str):
                raise ValueError(f"{name} must be a string")
        url, verified_at = data.get("url"), data.get("verified_at")
        replaced = data.get("replaced_keys", [])
        if not isinstance(replaced, list) or not all(isinstance(k, str) for k in replaced):
            raise ValueError("replaced_keys must be a list of keys")
        return cls(
            log_key=data["log_key"],
            origin=data["origin"],
            tree_size=size,
            root_hash=bytes.fromhex(data["root_hash"]),
            frontier=tuple(bytes.fromhex(h) for h in frontier),
            url=url if isinstance(url, str) else None,
            verified_at=verified_at if isinstance(verified_at, str) else None,
            replaced_keys=tuple(replaced),
        )


def _checksum(body: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def load_state(path: Path) -> VerifierState | None:
    """The saved state, ``None`` if there is none yet; a damaged file cannot be checked (2)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CouldNotCheck("state_file", f"cannot read state file {path}: {exc}") from None
    try:
        return VerifierState.from_json(orjson.loads(raw))
    except (orjson.JSONDecodeError, ValueError) as exc:
        raise CouldNotCheck("state_file", f"state file {path} is damaged: {exc}") from None


def save_state(path: Path, state: VerifierState) -> None:
    """Replace the state file atomically: readers see the old state or the new one, whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = orjson.dumps(state.to_json(), option=orjson.OPT_INDENT_2) + b"\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # makes the rename durable; not possible everywhere
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def default_state_path(url: str, read_key: str) -> Path:
    """One state file per server and read key (a read key belongs to exactly one tenant).

    The key is in the name only as a short hash. A new read key starts a new state, which the
    verifier announces; pass ``--state`` to keep one file across key rotations.
    """
    base = os.environ.get("IMMUTABLELOG_STATE_DIR")
    if base:
        root = Path(base)
    else:
        xdg = os.environ.get("XDG_STATE_HOME")
        root = (Path(xdg) if xdg else Path.home() / ".local" / "state") / "immutablelog"
    host = re.sub(r"[^A-Za-z0-9.-]+", "_", url.split("://", 1)[-1]).strip("_")[:60]
    digest = hashlib.sha256(f"{url.rstrip('/')}\n{read_key}".encode()).hexdigest()[:12]
    return root / f"verify-{host}-{digest}.json"
