"""The log's signing keys over time, and what witnesses said of its checkpoints: the rows and
the part of the storage interface that keeps them (``storage.py`` holds the rest).

Both live in the ledger's own database, so every host of a deployment reads the same
answer: which keys sign now (a host never decides that alone), which checkpoint hands trust
from an old key to a new one, and which cosignatures each checkpoint has.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


@dataclass(frozen=True, slots=True)
class LogKey:
    """One key in the log's history: signing from ``added_at`` until ``retired_at``."""

    key: str
    added_at: str
    retired_at: str | None

    def signs_at(self, now: str) -> bool:
        """Whether checkpoints made at ``now`` (an RFC 3339 UTC timestamp) carry this key's
        signature; timestamps share one fixed-width format, so they compare as strings."""
        return self.retired_at is None or now < self.retired_at


@dataclass(frozen=True, slots=True)
class Handover:
    """A checkpoint of one tenant signed by both ``old_key`` and ``new_key``: what lets a
    verifier that trusts the old key trust the new one."""

    old_key: str
    new_key: str
    size: int
    note: str


def signing_keys(history: Sequence[LogKey], now: str) -> list[LogKey]:
    """The keys that sign a checkpoint made at ``now``, oldest first."""
    return [key for key in history if key.signs_at(now)]


class LogKeyTransaction(Protocol):
    """The key history inside a write transaction (see ``WriteTransaction``)."""

    def log_keys(self) -> list[LogKey]:
        """The whole history, oldest first, as of this transaction."""
        ...

    def add_log_key(self, key: str, now: str) -> None: ...

    def retire_log_keys(self, keep: str, at: str) -> None:
        """Every key but ``keep`` stops signing at ``at`` (or earlier, if it already
        retires earlier)."""
        ...

    def insert_handover(self, tenant_id: int, handover: Handover) -> None: ...


class Job(StrEnum):
    """A background job that one process of a deployment runs at a time."""

    WITNESSING = "witnessing"  # pushes checkpoints to the witnesses (server/witnessing.py)
    RETENTION = "retention"  # erases what tenants keep past their policy (retention.py)


class Lease(Protocol):
    """Held by the one process of a deployment that runs a :class:`Job`."""

    def alive(self) -> bool:
        """Whether the lease still holds (a lost database connection loses it)."""
        ...

    def release(self) -> None: ...


class KeyHistoryStorage(Protocol):
    """Reads of the key history, and the witnesses' cosignatures (shared by every host)."""

    def log_keys(self) -> list[LogKey]:
        """The log's keys, oldest first."""
        ...

    def handovers(self, tenant_id: int) -> list[Handover]:
        """The tenant's checkpoints signed by an outgoing and an incoming key, oldest first."""
        ...

    def add_cosignature(
        self, tenant_id: int, size: int, witness: str, timestamp: int, line: str, quorum: int
    ) -> None:
        """Keep a witness's cosignature line of the tenant's checkpoint of ``size``, and forget
        those of sizes below the newest one ``quorum`` witnesses cosigned (no longer served),
        in one transaction."""
        ...

    def cosignature_lines(self, tenant_id: int, size: int) -> list[str]:
        """The cosignature lines of the tenant's checkpoint of ``size``, by witness."""
        ...

    def newest_cosigned(self, tenant_id: int, quorum: int) -> int | None:
        """The largest size cosigned by at least ``quorum`` witnesses."""
        ...

    def cosigned_sizes(self, tenant_id: int) -> dict[str, int]:
        """The size each witness (by its key) last cosigned for the tenant."""
        ...

    def record_witness(self, witness: str, error: str | None) -> None:
        """A request to ``witness`` succeeded (``error`` None) or failed once more."""
        ...

    def witness_failures(self) -> dict[str, int]:
        """Consecutive failures by witness key."""
        ...

    def lease(self, job: Job) -> AbstractContextManager[Lease | None]:
        """The deployment's lease of ``job`` if no other process holds it, else None."""
        ...
