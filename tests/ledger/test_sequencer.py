"""The sequencer: group commit, idempotency inside a group, and what a failed commit leaves."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from typing import Any

import pytest

from immutablelog.entry import validate_submission
from immutablelog.ledger import Accepted, Ledger, LedgerClosed, Rejected, StorageError
from immutablelog.ledger.sequencer import CommitStats
from immutablelog.merkle import leaf_hash, root_from_leaves

META = {"type": "info", "event_name": "e", "service": "s"}


def sub(n: int, key: str | None = None, payload: Any = None) -> Any:
    body = json.dumps(payload if payload is not None else {"n": n})
    return validate_submission(body, META, key or f"key-{n}")


class GatedWrites:
    """Wraps the real storage so a test can hold the writer inside a commit, or fail one."""

    def __init__(self, storage: Any) -> None:
        self._storage = storage
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.fail_next = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)

    @contextmanager
    def write(self) -> Iterator[Any]:
        with self._storage.write() as tx:
            self.entered.set()
            self.release.wait(10)
            yield tx
            if self.fail_next:
                self.fail_next = False
                raise StorageError("disk full (simulated)")


@pytest.fixture
def gated(ledger: Ledger) -> Iterator[tuple[Ledger, GatedWrites, list[CommitStats]]]:
    gate = GatedWrites(ledger.storage)
    ledger._sequencer._storage = gate  # the only fault we cannot provoke for real
    stats: list[CommitStats] = []
    ledger.add_commit_listener(stats.append)
    yield ledger, gate, stats


def test_requests_queued_during_a_commit_share_the_next_one(gated: Any) -> None:
    ledger, gate, stats = gated
    tenant = ledger.tenant("default")
    base = ledger.checkpoint(tenant).size  # the log's own "tenant created" event
    gate.release.clear()
    first = ledger.submit(tenant, [sub(0)])
    assert gate.entered.wait(10)
    waiting = [ledger.submit(tenant, [sub(n)]) for n in range(1, 51)]
    gate.release.set()
    assert first.result(10)[0].index == base  # type: ignore[union-attr]
    indexes = [f.result(10)[0].index for f in waiting]  # type: ignore[union-attr]
    assert sorted(indexes) == list(range(base + 1, base + 51))
    assert [s.events for s in stats] == [1, 50]  # 51 requests, two commits, two fsyncs
    checkpoint = ledger.checkpoint(tenant)
    assert checkpoint.size == base + 51
    stored = [e.data for e in ledger.entries(tenant, 0, base + 51)]
    assert root_from_leaves(leaf_hash(d) for d in stored) == checkpoint.root


def test_same_key_within_one_group_is_stored_once(ledger: Ledger) -> None:
    tenant = ledger.tenant("default")
    base = ledger.checkpoint(tenant).size
    results = ledger.append(tenant, [sub(1, "dup"), sub(1, "dup"), sub(2, "dup")])
    first, second, third = results
    assert isinstance(first, Accepted) and not first.duplicate
    assert isinstance(second, Accepted) and second.duplicate
    assert second.entry_id == first.entry_id
    assert isinstance(third, Rejected) and third.reason == "idempotency_key_reused"
    assert ledger.checkpoint(tenant).size == base + 1


def test_replays_and_repeats_across_the_requests_of_one_group(gated: Any) -> None:
    ledger, gate, stats = gated
    tenant = ledger.tenant("default")
    stored_a, _ = ledger.append(tenant, [sub(0, "a"), sub(1, "b")])
    gate.entered.clear()
    gate.release.clear()
    holder = ledger.submit(tenant, [sub(2)])  # keeps the writer busy while the group queues
    assert gate.entered.wait(10)
    first = ledger.submit(tenant, [sub(0, "a"), sub(5, "n1"), sub(9, "b")])
    second = ledger.submit(tenant, [sub(5, "n1"), sub(6, "n2"), sub(7, "n1")])
    gate.release.set()
    size = holder.result(10)[0].index + 1  # type: ignore[union-attr]
    replay_a, new_1, reused_b = first.result(10)
    again_1, new_2, reused_1 = second.result(10)
    assert replay_a == replace(stored_a, duplicate=True)  # the stored answer
    assert isinstance(reused_b, Rejected) and reused_b.reason == "idempotency_key_reused"
    assert isinstance(new_1, Accepted) and isinstance(new_2, Accepted)
    assert (new_1.index, new_2.index) == (size, size + 1)  # no gap for the replays
    assert not new_1.duplicate and again_1 == replace(new_1, duplicate=True)
    assert isinstance(reused_1, Rejected) and reused_1.reason == "idempotency_key_reused"
    assert (stats[-1].events, stats[-1].duplicates) == (2, 2)
    assert ledger.checkpoint(tenant).size == size + 2


def test_a_failed_commit_fails_its_requests_and_leaves_no_trace(gated: Any) -> None:
    ledger, gate, _ = gated
    tenant = ledger.tenant("default")
    ledger.append(tenant, [sub(0)])
    size = ledger.checkpoint(tenant).size
    gate.fail_next = True
    with pytest.raises(StorageError):
        ledger.append(tenant, [sub(1), sub(2)])
    assert ledger.checkpoint(tenant).size == size
    # The retried events land right after, and the tree stays whole.
    again = ledger.append(tenant, [sub(1), sub(2)])
    assert [r.index for r in again] == [size, size + 1]  # type: ignore[union-attr]
    assert not any(r.duplicate for r in again)  # type: ignore[union-attr]
    stored = [e.data for e in ledger.entries(tenant, 0, size + 2)]
    assert root_from_leaves(leaf_hash(d) for d in stored) == ledger.checkpoint(tenant).root


def test_another_writer_on_the_same_file_is_noticed(ledger: Ledger) -> None:
    tenant = ledger.tenant("default")
    ledger.append(tenant, [sub(0)])
    size = ledger.checkpoint(tenant).size
    with Ledger.open(ledger.config) as other:  # a second process, as far as SQLite knows
        other.append(other.tenant("default"), [sub(1)])
    result = ledger.append(tenant, [sub(2)])[0]
    assert isinstance(result, Accepted) and result.index == size + 1
    stored = [e.data for e in ledger.entries(tenant, 0, size + 2)]
    assert root_from_leaves(leaf_hash(d) for d in stored) == ledger.checkpoint(tenant).root


def test_stop_commits_what_was_submitted_then_refuses(ledger: Ledger) -> None:
    tenant = ledger.tenant("default")
    futures = [ledger.submit(tenant, [sub(n)]) for n in range(20)]
    ledger._sequencer.stop()
    assert all(isinstance(f.result(10)[0], Accepted) for f in futures)
    with pytest.raises(LedgerClosed):
        ledger.submit(tenant, [sub(99)])


def test_tenants_have_separate_logs(ledger: Ledger) -> None:
    other = ledger.create_tenant("other")
    a = ledger.append(ledger.tenant("default"), [sub(0, "same")])[0]
    b = ledger.append(other, [sub(0, "same")])[0]
    assert isinstance(a, Accepted) and isinstance(b, Accepted)
    # Each log starts with its own "tenant created" event at index 0.
    assert (a.index, b.index, b.duplicate) == (1, 1, False)
    assert ledger.checkpoint(other).note.startswith("immutablelog/other\n2\n")


def test_append_only_is_enforced_by_the_database(ledger: Ledger) -> None:
    import sqlite3

    ledger.append(ledger.tenant("default"), [sub(n) for n in range(4)])
    conn = sqlite3.connect(ledger.config.data_dir / "ledger.db")
    for statement in (
        "UPDATE entries SET entry = x'00'",
        "DELETE FROM entries",
        "DELETE FROM nodes",
        "UPDATE checkpoints SET note = ''",
        "INSERT INTO entries SELECT tenant_id, idx + 5, 'x', received_at, type, "
        "event_name, service, env, request_id, actor, 'k2', entry FROM entries",
    ):
        with pytest.raises(sqlite3.DatabaseError):
            conn.execute(statement)
    conn.close()


def test_idempotency_keys_expire_after_the_retention_window(tmp_path: Any) -> None:
    from datetime import timedelta

    from immutablelog.ledger import LedgerConfig

    config = LedgerConfig(data_dir=tmp_path / "short", idempotency_retention=timedelta(0))
    with Ledger.open(config) as short:
        tenant = short.create_tenant("default")
        first = short.append(tenant, [sub(1, "k")])[0]
        again = short.append(tenant, [sub(1, "k")])[0]
    assert isinstance(first, Accepted) and isinstance(again, Accepted)
    assert (again.index, again.duplicate) == (first.index + 1, False)


def test_stop_reports_a_writer_still_inside_a_commit(gated: Any) -> None:
    ledger, gate, _ = gated
    tenant = ledger.tenant("default")
    gate.release.clear()
    pending = ledger.submit(tenant, [sub(1)])
    assert gate.entered.wait(10)
    assert ledger._sequencer.stop(timeout=0.1) is False  # so close() keeps its connections
    gate.release.set()
    assert isinstance(pending.result(10)[0], Accepted)
    assert ledger._sequencer.stop(timeout=10) is True


def test_prefix_queries_agree_inside_and_beyond_the_newest_window(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    from immutablelog.ledger.sqlite import search as sqlite_search
    from immutablelog.ledger.storage import EventQuery

    monkeypatch.setattr(sqlite_search, "_PREFIX_WINDOW", 3)
    tenant = ledger.tenant("default")
    names = ["auth.login", "page.view", "auth.logout", *["page.view"] * 6, "auth.login"]
    subs = [
        validate_submission("{}", {**META, "event_name": n}, f"p{i}") for i, n in enumerate(names)
    ]
    ledger.append(tenant, subs)
    for descending in (True, False):
        seen: list[str] = []
        after = None
        while True:  # page by two: the first pages come from the window, later ones do not
            page = ledger.query(
                tenant,
                EventQuery(
                    event_name_prefix="auth.", limit=2, descending=descending, after_index=after
                ),
            )
            seen += [json.loads(e.data)["event_name"] for e in page]
            if len(page) < 2:
                break
            after = page[-1].index
        expected = ["auth.login", "auth.logout", "auth.login"]
        assert seen == (expected[::-1] if descending else expected)


def test_key_use_is_recorded_in_the_background(ledger: Ledger) -> None:
    import time

    secret, record = ledger.create_api_key("default", frozenset({"ingest"}))
    assert record.last_used_at is None
    before = time.time()
    assert ledger.authenticate(secret) is not None
    ledger._sequencer._maintain()  # what the writer does once a second
    (used,) = [k for k in ledger.api_keys("default") if k.id == record.id]
    assert used.last_used_at is not None
    stamped = datetime.fromisoformat(used.last_used_at).timestamp()
    assert before - 1 <= stamped <= time.time() + 1
