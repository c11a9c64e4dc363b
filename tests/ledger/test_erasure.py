"""Erasure and retention on both backends: values gone for real (raw files, a dump, search),
every proof still valid, the integrity check telling erased from tampered."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from immutablelog.checkpoint import Verifier, open_checkpoint
from immutablelog.entry import validate_submission
from immutablelog.erasure import ERASURE_EVENT
from immutablelog.ledger import Accepted, Ledger, LedgerConfig
from immutablelog.ledger.erasing import ErasureRefused
from immutablelog.ledger.key_history import Job
from immutablelog.ledger.retention import RetentionSweeper
from immutablelog.ledger.sqlite import SQLiteStorage
from immutablelog.ledger.storage import EventQuery, Tenant
from immutablelog.merkle import leaf_hash, verify_consistency, verify_inclusion
from tests.format1 import as_format_1, writing_format_1
from tests.ledger.test_storage_contract import backend_location, raw_sql

META = {"type": "info", "event_name": "user.login", "service": "web"}
SECRET = "zanzibar-quokka-7731"  # a value that occurs nowhere else


def event(n: int, actor: str, word: str = "routine") -> Any:
    payload = json.dumps({"n": n, "note": f"{word} {actor}-note"})
    return validate_submission(payload, {**META, "actor": actor}, f"key-{actor}-{n}")


@pytest.fixture(params=["sqlite", "postgres"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    location = backend_location(request, tmp_path)
    data_dir = tmp_path / "data"
    if isinstance(location, Path):
        config = LedgerConfig(data_dir=location)
    else:
        config = LedgerConfig(data_dir=data_dir, database_url=location)
    with Ledger.open(config) as opened:
        opened.create_tenant("default")
        yield opened


def append(ledger: Ledger, tenant: Tenant, submissions: list[Any]) -> list[Accepted]:
    results = ledger.append(tenant, submissions)
    assert all(isinstance(r, Accepted) for r in results)
    return [r for r in results if isinstance(r, Accepted)]


def wait_indexed(ledger: Ledger) -> None:
    while ledger.storage.index_search(100_000):
        pass


def raw_bytes(ledger: Ledger) -> bytes:
    """Every byte the database keeps: the SQLite files (with their write-ahead logs), or a
    plain dump of the PostgreSQL database."""
    storage = ledger.storage
    while storage.purge_erased():  # what the upkeep thread's rounds do after an erasure
        pass
    if isinstance(storage, SQLiteStorage):
        files = [*storage.path.parent.glob("ledger*")]
        return b"".join(f.read_bytes() for f in files if f.is_file())
    dump = shutil.which("pg_dump")
    if dump is None:
        pytest.skip("pg_dump is not installed")
    url = storage.url  # type: ignore[attr-defined]
    return subprocess.run([dump, "--data-only", url], check=True, capture_output=True).stdout


def holds(ledger: Ledger, text: str) -> bool:
    """Whether the database keeps ``text`` anywhere (as text, or hex in a dump's bytea)."""
    raw = raw_bytes(ledger)
    return text.encode() in raw or text.encode().hex().encode() in raw


def assert_proofs_hold(ledger: Ledger, tenant: Tenant, old_size: int) -> None:
    latest = ledger.checkpoint(tenant)
    signed = open_checkpoint(Verifier(ledger.verifier_key()), latest.note, ledger.origin(tenant))
    for stored in ledger.entries(tenant, 0, signed.size):
        proof = ledger.inclusion_proof(tenant, stored.index, signed.size)
        verify_inclusion(stored.index, signed.size, leaf_hash(stored.data), proof, signed.root_hash)
    old = ledger.checkpoint_at(tenant, old_size)
    verify_consistency(
        old_size,
        signed.size,
        ledger.consistency_proof(tenant, old_size, signed.size),
        old.root,
        signed.root_hash,
    )


def test_erasing_one_event_deletes_its_values_and_keeps_every_proof(ledger: Ledger) -> None:
    tenant = ledger.tenant("default")
    results = append(ledger, tenant, [event(n, "alice") for n in range(5)])
    target = append(ledger, tenant, [event(99, "bob", SECRET)])[0]
    size_before = ledger.checkpoint(tenant).size
    wait_indexed(ledger)
    assert holds(ledger, SECRET)
    assert [e.index for e in ledger.query(tenant, EventQuery(text=SECRET))] == [target.index]

    outcome = ledger.erasures.erase_ids(tenant, [target.entry_id], "subject asked", "op")
    assert outcome.erased == 1 and outcome.ranges == [(target.index, target.index + 1)]
    (record_index,) = outcome.records

    view = ledger.event_view(tenant, ledger.entry(tenant, target.entry_id))
    assert view["payload"] is None and "actor" not in view
    assert view["erased"]["index"] == record_index
    assert view["erased"]["reason"] == "subject asked" and view["erased"]["by"] == "op"
    record = ledger.event_view(tenant, next(ledger.entries(tenant, record_index, record_index + 1)))
    assert record["event_name"] == ERASURE_EVENT and "bob" not in record["payload"]
    others = [ledger.event_view(tenant, e) for e in ledger.entries(tenant, 0, target.index)]
    assert [e["index"] for e in others if e["payload"] and e.get("actor") == "alice"] == [
        r.index for r in results
    ]

    assert not holds(ledger, SECRET)
    assert ledger.query(tenant, EventQuery(text=SECRET)) == []
    assert ledger.query(tenant, EventQuery(actor="bob")) == []
    report = ledger.check_integrity(tenant)
    assert report.valid and report.events_erased == 1, report.breaks
    assert_proofs_hold(ledger, tenant, size_before)
    # Erasing again changes nothing and records nothing.
    again = ledger.erasures.erase_ids(tenant, [target.entry_id], "subject asked", "op")
    assert again.erased == 0 and again.records == []


def test_every_event_of_one_actor_among_thousands(ledger: Ledger) -> None:
    tenant = ledger.tenant("default")
    actors = ["alice", "bob", "carol"]
    subs = [event(n, actors[n % 3], SECRET if n % 3 == 1 else "routine") for n in range(3000)]
    for start in range(0, len(subs), 1000):
        append(ledger, tenant, subs[start : start + 1000])
    size_before = ledger.checkpoint(tenant).size
    wait_indexed(ledger)
    bobs = [e.index for e in ledger.query(tenant, EventQuery(actor="bob", limit=1000))]
    assert len(bobs) == 1000

    outcome = ledger.erasures.erase_actor(tenant, "bob", "GDPR Art. 17 request", "op")
    assert outcome.erased == 1000
    assert not holds(ledger, SECRET)
    assert ledger.query(tenant, EventQuery(actor="bob")) == []
    assert ledger.query(tenant, EventQuery(text=SECRET)) == []
    assert len(ledger.query(tenant, EventQuery(actor="alice", limit=1000))) == 1000
    assert len(ledger.query(tenant, EventQuery(text="routine", limit=1000))) == 1000
    report = ledger.check_integrity(tenant)
    assert report.valid and report.events_erased == 1000, report.breaks
    assert_proofs_hold(ledger, tenant, size_before)


def test_values_deleted_behind_the_ledger_are_tampering_pinpointed(ledger: Ledger) -> None:
    tenant = ledger.tenant("default")
    accepted = append(ledger, tenant, [event(n, "alice") for n in range(4)])
    raw_sql(ledger.storage, f"DELETE FROM erasables WHERE idx = {accepted[2].index}")
    report = ledger.check_integrity(tenant)
    assert [(b.kind, b.index) for b in report.breaks] == [("missing_erasable", accepted[2].index)]
    view = ledger.event_view(tenant, ledger.entry(tenant, accepted[2].entry_id))
    assert view["payload"] is None and "tampered" in view and "erased" not in view


def test_a_changed_salt_is_tampering(ledger: Ledger) -> None:
    tenant = ledger.tenant("default")
    accepted = append(ledger, tenant, [event(n, "alice") for n in range(3)])
    index = accepted[1].index
    (salt, values) = raw_sql(
        ledger.storage, f"SELECT salt, erasable_values FROM erasables WHERE idx = {index}"
    )[0]
    raw_sql(ledger.storage, f"DELETE FROM erasables WHERE idx = {index}")
    other = bytes(b ^ 1 for b in bytes(salt)).hex()
    literal = f"X'{other}'" if isinstance(ledger.storage, SQLiteStorage) else f"'\\x{other}'"
    value_literal = (
        f"X'{bytes(values).hex()}'"
        if isinstance(ledger.storage, SQLiteStorage)
        else f"'\\x{bytes(values).hex()}'"
    )
    raw_sql(
        ledger.storage,
        f"INSERT INTO erasables VALUES ({tenant.id}, {index}, {literal}, {value_literal})",
    )
    report = ledger.check_integrity(tenant)
    assert [(b.kind, b.index) for b in report.breaks] == [("altered_erasable", index)]


def test_a_retention_sweep_erases_what_is_older_than_the_window(ledger: Ledger) -> None:
    tenant = ledger.tenant("default")
    old = append(ledger, tenant, [event(n, "alice", SECRET) for n in range(10)])
    ledger.set_retention(tenant, 1)
    # Nothing is a day old yet.
    assert ledger.erasures.sweep_retention([tenant]) == 0
    later = datetime.now(UTC) + timedelta(days=1, minutes=1)
    new = append(ledger, tenant, [event(n, "alice") for n in range(10, 13)])
    assert ledger.erasures.sweep_retention([tenant], later) == 10 + len(new)
    (record,) = ledger.erasures.index.records(tenant.id)
    assert record.by == "retention" and record.reason.startswith("retention: values kept 1 days")
    assert not holds(ledger, SECRET)
    assert ledger.check_integrity(tenant).valid
    assert ledger.event_view(tenant, ledger.entry(tenant, old[0].entry_id))["payload"] is None


def test_only_the_holder_of_the_retention_lease_sweeps(ledger: Ledger) -> None:
    """Every process of a deployment runs a sweeper; two sweeping at once would log the same
    erasure twice. While another process holds the lease, this one's rounds do nothing."""
    tenant = ledger.tenant("default")
    due = append(ledger, tenant, [event(n, "alice", SECRET) for n in range(5)])
    ledger.storage.set_retention_days(tenant.id, 0)  # everything received so far is due
    sweeper = RetentionSweeper(ledger.erasures, lambda: [tenant], 0.02, ledger.storage.lease)
    with ledger.storage.lease(Job.RETENTION) as elsewhere:  # held by "another process"
        assert elsewhere is not None
        sweeper.start()
        time.sleep(0.5)  # rounds come and go, each finding the lease taken
        assert ledger.erasures.index.records(tenant.id) == []
    deadline = time.monotonic() + 30
    while not ledger.erasures.index.records(tenant.id) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # more rounds: nothing is left to erase, so no second record
    assert sweeper.stop()
    (record,) = ledger.erasures.index.records(tenant.id)
    assert record.by == "retention"
    assert record.ranges == ((due[0].index, due[-1].index + 1),)


def test_an_erasure_left_pending_by_a_crash_is_finished(ledger: Ledger) -> None:
    tenant = ledger.tenant("default")
    accepted = append(ledger, tenant, [event(n, "alice", SECRET) for n in range(3)])
    # The record was committed, then the process died before deleting the values.
    payload = json.dumps(
        {
            "message": ERASURE_EVENT,
            "reason": "r",
            "by": "op",
            "count": 1,
            "ranges": [[accepted[1].index, accepted[1].index + 1]],
        }
    )
    ledger.record_admin_event(tenant, ERASURE_EVENT, json.loads(payload) | {}).result()
    assert ledger.check_integrity(tenant).valid  # pending, not tampered
    assert ledger.erasures.apply_pending([tenant]) == 1
    assert ledger.erasures.apply_pending([tenant]) == 0
    view = ledger.event_view(tenant, ledger.entry(tenant, accepted[1].entry_id))
    assert view["erased"]["reason"] == "r"


def test_format_1_entries_in_the_same_log_keep_verifying_and_cannot_be_erased(
    ledger: Ledger,
) -> None:
    tenant = ledger.tenant("default")
    with writing_format_1():
        old = append(ledger, tenant, as_format_1([event(n, "alice") for n in range(3)]))
    new = append(ledger, tenant, [event(n, "alice") for n in range(3, 6)])
    assert json.loads(ledger.entry(tenant, old[0].entry_id).data)["v"] == 1
    with pytest.raises(ErasureRefused) as refused:
        ledger.erasures.erase_ids(tenant, [old[0].entry_id], "r", "op")
    assert refused.value.reason == "not_erasable"
    # The log's own records cannot be erased either.
    (record,) = [
        e
        for e in ledger.entries(tenant, 0, 10)
        if json.loads(e.data).get("event_name") == "immutablelog.tenant.created"
    ]
    with pytest.raises(ErasureRefused):
        ledger.erasures.erase_ids(tenant, [record.id], "r", "op")
    assert ledger.erasures.erase_actor(tenant, "alice", "r", "op").erased == len(new)
    report = ledger.check_integrity(tenant)
    assert report.valid and report.events_erased == 3
    assert ledger.event_view(tenant, ledger.entry(tenant, old[0].entry_id))["actor"] == "alice"


def test_a_replay_of_an_erased_event_is_answered_as_the_original(ledger: Ledger) -> None:
    tenant = ledger.tenant("default")
    (original,) = append(ledger, tenant, [event(1, "alice")])
    ledger.erasures.erase_ids(tenant, [original.entry_id], "r", "op")
    (replay,) = ledger.append(tenant, [event(1, "alice")])
    assert isinstance(replay, Accepted) and replay.duplicate
    assert (replay.index, replay.entry_id) == (original.index, original.entry_id)


def test_a_reason_is_required(ledger: Ledger) -> None:
    tenant = ledger.tenant("default")
    (original,) = append(ledger, tenant, [event(1, "alice")])
    for reason in ["", "  ", "two\nlines", "x" * 2000]:
        with pytest.raises(ErasureRefused) as refused:
            ledger.erasures.erase_ids(tenant, [original.entry_id], reason, "op")
        assert refused.value.status == 400
    with pytest.raises(ErasureRefused) as missing:
        ledger.erasures.erase_ids(tenant, ["no-such-id"], "r", "op")
    assert missing.value.status == 404
