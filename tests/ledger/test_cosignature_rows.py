"""The witnesses' cosignatures and status, kept in the ledger's database (both backends), so
every host of a deployment serves the same cosigned checkpoints; and one witnessing lease."""

from __future__ import annotations

import pytest

from immutablelog.ledger.key_history import Job
from immutablelog.ledger.storage import Storage
from tests.ledger.test_storage_contract import NOW, storage

__all__ = ["storage"]


def test_cosignatures_are_kept_per_size_and_witness_and_pruned_below_the_served(
    storage: Storage,
) -> None:
    with storage.write() as tx:
        tenant = tx.create_tenant("acme", NOW)
    t = tenant.id
    storage.add_cosignature(t, 5, "w1", 100, "— w1 AAAA\n", 2)
    storage.add_cosignature(t, 5, "w2", 101, "— w2 BBBB\n", 2)
    storage.add_cosignature(t, 9, "w1", 102, "— w1 CCCC\n", 2)
    assert storage.newest_cosigned(t, 2) == 5 and storage.newest_cosigned(t, 1) == 9
    assert storage.cosigned_sizes(t) == {"w1": 9, "w2": 5}
    # Size 9 reaches the quorum: size 5 is no longer served, so it goes.
    storage.add_cosignature(t, 9, "w2", 103, "— w2 DDDD\n", 2)
    assert storage.cosignature_lines(t, 9) == ["— w1 CCCC\n", "— w2 DDDD\n"]
    assert storage.cosignature_lines(t, 5) == []
    # A witness asked again replaces its line.
    storage.add_cosignature(t, 9, "w2", 104, "— w2 EEEE\n", 2)
    assert storage.cosignature_lines(t, 9) == ["— w1 CCCC\n", "— w2 EEEE\n"]
    assert storage.cosignature_lines(t + 1, 9) == []


def test_witness_failures_count_until_it_answers(storage: Storage) -> None:
    storage.record_witness("w1", "refused")
    storage.record_witness("w1", "timed out")
    storage.record_witness("w2", None)
    assert storage.witness_failures() == {"w1": 2, "w2": 0}
    storage.record_witness("w1", None)
    assert storage.witness_failures() == {"w1": 0, "w2": 0}


@pytest.mark.parametrize("job", list(Job))
def test_one_lease_of_a_job_at_a_time(storage: Storage, job: Job) -> None:
    with storage.lease(job) as first:
        assert first is not None and first.alive()
        with storage.lease(job) as second:
            assert second is None
        others = [other for other in Job if other is not job]
        for other in others:  # each job has a lease of its own
            with storage.lease(other) as held:
                assert held is not None
    with storage.lease(job) as again:
        assert again is not None
