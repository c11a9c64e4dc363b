"""Delivery guarantees: order, retries, backoff, spool, replay, dead letters, exit, threads, fork.

Every test talks to a real HTTP peer (:class:`FakeLedger`) and asserts behaviour — what was
stored, counted, spooled, logged — never how long something took.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from immutablelog._uuid import uuid7_millis
from immutablelog.sdk import DeliveryOptions, ImmutableLogClient, WireEvent
from immutablelog.sdk.capture import custom_capture
from immutablelog.sdk.events import UUIDS, UuidPool
from immutablelog.sdk.log_handler import ImmutableLogHandler
from immutablelog.sdk.retry import RetrySchedule
from immutablelog.sdk.transport import HttpTransport, ItemResult
from tests.sdk.conftest import spool_keys, wait_until, worker_threads
from tests.sdk.fake_ledger import FakeLedger, Fault

MakeClient = Callable[..., ImmutableLogClient]


def record_many(client: ImmutableLogClient, count: int, name: str = "job.step") -> list[str]:
    return [client.record(name, n=i) for i in range(count)]


# -- the happy path ---------------------------------------------------------------------------


def test_events_arrive_once_in_capture_order(sink: FakeLedger, make_client: MakeClient) -> None:
    client = make_client()
    ids = record_many(client, 300)
    assert client.flush(10)
    assert sink.stored_keys() == ids
    stats = client.stats()
    assert (stats.queued, stats.sent, stats.retried, stats.dropped) == (300, 300, 0, 0)


def test_batches_respect_the_configured_bounds(
    sink: FakeLedger, make_client: MakeClient, delivery: DeliveryOptions
) -> None:
    client = make_client(delivery=replace(delivery, max_batch_events=7))
    record_many(client, 30)
    assert client.flush(10)
    sizes = [len(json.loads(body)["events"]) for _, _, body in sink.requests]
    assert sum(sizes) == 30 and max(sizes) <= 7


def test_events_gather_into_one_batch_and_flush_does_not_wait_for_the_interval(
    sink: FakeLedger, make_client: MakeClient, delivery: DeliveryOptions
) -> None:
    client = make_client(delivery=replace(delivery, batch_interval=3600))
    ids = record_many(client, 5)
    assert client.flush(10), "flush must not wait out the batch interval"
    assert sink.stored_keys() == ids
    assert len(sink.requests) == 1, "events recorded together travel in one request"


def test_a_full_batch_is_sent_without_waiting_for_the_interval(
    sink: FakeLedger, make_client: MakeClient, delivery: DeliveryOptions
) -> None:
    client = make_client(delivery=replace(delivery, batch_interval=3600, max_batch_events=4))
    ids = record_many(client, 4)
    assert sink.wait_for(lambda: len(sink.stored) == 4)
    assert sink.stored_keys() == ids


def test_close_delivers_gathering_events_at_once(
    sink: FakeLedger, make_client: MakeClient, delivery: DeliveryOptions
) -> None:
    client = make_client(delivery=replace(delivery, batch_interval=3600))
    ids = record_many(client, 3)
    assert client.close(10)
    assert sink.stored_keys() == ids
    assert client.stats().backlog == 0


def test_a_sleeping_worker_is_woken_even_when_captures_race_in(
    sink: FakeLedger, make_client: MakeClient, delivery: DeliveryOptions
) -> None:
    client = make_client(delivery=replace(delivery, batch_interval=0))
    client.record("first")
    assert client.flush(10)
    pipeline = client.pipeline
    assert wait_until(lambda: pipeline.sleeping)
    # Another thread appended but has not yet looked at the queue's length: the capture
    # submitted now is the second one queued, and must still wake the worker.
    racing = custom_capture(
        "racing", "info", message=None, data={}, actor=None, request=None, request_id=None
    )
    pipeline._captures.append((client.builder.build, racing))
    client.record("second")
    assert sink.wait_for(lambda: len(sink.stored) == 3), "delivered without a flush"


def test_ids_made_before_an_idle_spell_are_not_handed_out_after_it(
    sink: FakeLedger,
    make_client: MakeClient,
    delivery: DeliveryOptions,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Event ids are UUIDv7s, which carry the time they were made: the rest of a chunk made
    before an idle spell would stamp new events with an old time."""
    monkeypatch.setattr(UuidPool, "MAX_AGE", 0.2)
    client = make_client(delivery=replace(delivery, batch_interval=0))
    before = client.record("before")
    assert client.flush(10)
    time.sleep(0.3)
    idle_end = time.time_ns() // 1_000_000
    after = client.record("after")
    assert uuid7_millis(after) > uuid7_millis(before)
    assert uuid7_millis(after) >= idle_end, "ids are renewed after an idle spell"
    assert client.flush(10)
    assert sink.stored_keys()[-2:] == [before, after]


def test_batch_interval_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="batch_interval"):
        DeliveryOptions(batch_interval=-1)


def test_clients_to_one_destination_share_a_pipeline_and_the_last_one_dropped_drains_it(
    sink: FakeLedger, delivery: DeliveryOptions
) -> None:
    options = replace(delivery, batch_interval=3600)
    first = ImmutableLogClient(sink.url, "k", service_name="a", delivery=options)
    second = ImmutableLogClient(sink.url, "k", service_name="b", delivery=options)
    other = ImmutableLogClient(sink.url, "other-key", delivery=options)
    pipeline = first.pipeline
    assert second.pipeline is pipeline and other.pipeline is not pipeline
    ids = [first.record("from.a"), second.record("from.b")]
    assert len(worker_threads()) == 1
    assert other.close(5)
    del first
    gc.collect()
    assert not pipeline.closed, "the second client still uses it"
    del second
    gc.collect()
    # Nobody uses it any more: its gathering batch goes out at once, and it lets go.
    assert wait_until(lambda: pipeline.closed and not worker_threads())
    assert sink.stored_keys() == ids
    assert [s.meta["service"] for s in sink.stored] == ["a", "b"]


# -- transient failures -----------------------------------------------------------------------


def test_transient_failures_are_retried_then_delivered_once(
    sink: FakeLedger, make_client: MakeClient
) -> None:
    sink.fail_next(1, Fault(503, retry_after="0"))
    sink.fail_next(1, Fault(429, retry_after="0"))
    sink.fail_next(1, Fault(500))
    client = make_client()
    ids = record_many(client, 5)
    assert client.flush(10)
    assert sink.stored_keys() == ids
    stats = client.stats()
    assert stats.retried == 3 and stats.sent == 5 and stats.dead_lettered == 0


def test_retry_after_is_honoured_even_by_flush(sink: FakeLedger, make_client: MakeClient) -> None:
    sink.fail_next(1, Fault(503, retry_after="30"))
    client = make_client()
    client.record("x")
    assert sink.wait_for(lambda: len(sink.requests) == 1)
    assert not client.flush(0.3)
    assert len(sink.requests) == 1, "retried inside the server's Retry-After window"
    schedule = client.pipeline._retry
    assert schedule.next_attempt_at >= schedule.not_before > time.monotonic() + 25


def test_backoff_is_exponential_with_jitter_and_capped() -> None:
    schedule = RetrySchedule(1.0, 8.0)
    delays = [schedule.failed(100.0, None) - 100.0 for _ in range(7)]
    for attempt, delay in enumerate(delays):
        ceiling = min(8.0, 2.0**attempt)
        assert ceiling / 2 <= delay <= ceiling
    assert len({round(d, 6) for d in delays}) > 1, "no jitter"
    schedule.succeeded()
    assert schedule.failed(200.0, None) - 200.0 <= 1.0, "a success restarts the backoff"


def test_retry_after_is_a_floor_that_a_flush_keeps() -> None:
    schedule = RetrySchedule(0.5, 30.0)
    assert schedule.failed(100.0, 60.0) == 160.0
    schedule.hurry()
    assert schedule.next_attempt_at == 160.0
    schedule.failed(170.0, None)
    schedule.hurry()
    assert schedule.next_attempt_at == 0.0, "without Retry-After a flush retries at once"


def test_an_outage_spools_and_replays_in_order(
    sink: FakeLedger, make_client: MakeClient, tmp_path: Path
) -> None:
    client = make_client()
    before = record_many(client, 5, "before")
    assert client.flush(10)
    sink.stop()
    during = record_many(client, 40, "during")
    assert not client.flush(0.3)
    assert wait_until(lambda: client.stats().backlog == 40)
    assert client.stats().spooled == 40
    assert sorted(spool_keys(tmp_path / "spool")) == sorted(during)
    sink.start()
    after = record_many(client, 5, "after")
    assert client.flush(10)
    assert sink.stored_keys() == before + during + after
    assert client.stats().backlog == 0


def test_a_full_spool_drops_new_events_counted_and_logged(
    sink: FakeLedger,
    make_client: MakeClient,
    delivery: DeliveryOptions,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = make_client(delivery=replace(delivery, spool_max_bytes=4_000))
    sink.stop()
    ids = record_many(client, 40)
    assert not client.flush(0.3)
    assert wait_until(lambda: client.stats().spooled + client.stats().dropped == 40)
    stats = client.stats()
    assert stats.spooled > 0 and stats.dropped > 0
    assert 0 < stats.backlog_bytes <= 4_000
    assert any(
        "dropped" in r.getMessage() and "spool is full" in r.getMessage() for r in caplog.records
    )
    sink.start()
    assert client.flush(10)
    assert sink.stored_keys() == ids[: stats.spooled], "the oldest events are kept, in order"


def test_events_spooled_by_a_closed_process_are_replayed_by_the_next(
    sink: FakeLedger, make_client: MakeClient
) -> None:
    sink.stop()
    first = make_client()
    ids = record_many(first, 20)
    assert not first.close(timeout=0.3)
    assert first.stats().backlog == 20
    sink.start()
    second = make_client()
    assert second.flush(10)
    assert sink.stored_keys() == ids
    assert second.stats().adopted == 20


# -- permanent failures -----------------------------------------------------------------------


def dead_letters(tmp_path: Path) -> list[dict[str, object]]:
    path = tmp_path / "spool" / "dead-letter.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_rejected_events_go_to_the_dead_letter_file_logged_once(
    sink: FakeLedger, make_client: MakeClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sink.reject_event_names = {"bad.event"}
    client = make_client()
    good1 = client.record("good.event")
    bad1 = client.record("bad.event")
    assert client.flush(10)
    bad2 = client.record("bad.event")
    good2 = client.record("good.event")
    assert client.flush(10)
    assert sink.stored_keys() == [good1, good2]
    lines = dead_letters(tmp_path)
    assert [line["event"]["idempotency_key"] for line in lines] == [bad1, bad2]  # type: ignore[index]
    assert {line["reason"] for line in lines} == {"invalid_event"}
    assert client.stats().dead_lettered == 2
    errors = [
        r for r in caplog.records if r.levelno == logging.ERROR and "dead-letter" in r.getMessage()
    ]
    assert len(errors) == 1


def test_a_rejected_request_dead_letters_the_batch(
    sink: FakeLedger, make_client: MakeClient, tmp_path: Path
) -> None:
    sink.permanent_fault = Fault(401, reason="unauthorized")
    client = make_client()
    ids = record_many(client, 3)
    assert client.flush(10)
    assert [line["event"]["idempotency_key"] for line in dead_letters(tmp_path)] == ids  # type: ignore[index]
    assert client.stats().dead_lettered == 3 and client.stats().retried == 0


def test_too_large_batches_are_split_not_dead_lettered(
    sink: FakeLedger, make_client: MakeClient
) -> None:
    client = make_client()
    sink.max_batch_events = 2
    sink.fail_next(1, Fault(hang=True))
    ids = [client.record("first")]
    assert sink.wait_for(lambda: len(sink.requests) == 1)
    ids += record_many(client, 6)  # queued behind the stuck request: one batch of 7 later
    sink.hang_release.set()
    assert client.flush(10)
    assert sink.stored_keys() == ids and client.stats().dead_lettered == 0
    sizes = [len(json.loads(body)["events"]) for path, _, body in sink.requests[1:]]
    assert max(sizes) > 2, "a batch too large for the server was sent and split"


# -- never blocking, never silently losing ----------------------------------------------------


def test_a_full_queue_drops_instead_of_blocking(
    sink: FakeLedger,
    make_client: MakeClient,
    delivery: DeliveryOptions,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink.fail_next(1, Fault(hang=True))
    client = make_client(delivery=replace(delivery, max_queue=5))
    client.record("first")
    assert sink.wait_for(lambda: len(sink.requests) == 1), "worker is now stuck in a request"
    for i in range(20):
        client.record("burst", n=i)  # returns at once although the worker is stuck
    stats = client.stats()
    assert stats.dropped == 15 and stats.queued == 6
    assert any("queue is full" in r.getMessage() for r in caplog.records)
    sink.hang_release.set()
    assert client.flush(10)
    assert len(sink.stored_keys()) == 6


def test_flush_times_out_without_losing_anything(sink: FakeLedger, make_client: MakeClient) -> None:
    sink.stop()
    client = make_client()
    record_many(client, 3)
    assert client.flush(0.2) is False
    assert wait_until(lambda: client.stats().backlog == 3)
    assert client.stats().dropped == 0


def test_close_spools_a_batch_stuck_in_a_hanging_request(
    sink: FakeLedger, make_client: MakeClient, tmp_path: Path
) -> None:
    sink.permanent_fault = Fault(hang=True)
    client = make_client()
    ids = record_many(client, 3)
    assert sink.wait_for(lambda: len(sink.requests) >= 1)
    assert client.close(timeout=0.3) is False
    assert sorted(spool_keys(tmp_path / "spool")) == sorted(ids)
    sink.permanent_fault = None
    sink.hang_release.set()
    successor = make_client()
    assert successor.flush(10)
    assert sorted(sink.stored_keys()) == sorted(ids)


class _FlakyTransport:
    """Raises an unexpected (non-delivery) exception once, then delegates."""

    def __init__(self, inner: HttpTransport) -> None:
        self.inner = inner
        self.failed = False

    def send_batch(self, events: Sequence[WireEvent]) -> list[ItemResult]:
        if not self.failed:
            self.failed = True
            raise RuntimeError("transport bug")
        return self.inner.send_batch(events)

    def close(self) -> None:
        self.inner.close()


def test_a_transport_bug_is_retried_not_lost(sink: FakeLedger, make_client: MakeClient) -> None:
    client = make_client(transport=_FlakyTransport(HttpTransport(sink.url, "k")))
    ids = record_many(client, 4)
    assert client.flush(10)
    assert sink.stored_keys() == ids and client.stats().retried == 1


def test_record_rejects_unknown_kinds(make_client: MakeClient) -> None:
    with pytest.raises(ValueError, match="kind"):
        make_client().record("x", kind="fatal")


# -- concurrency ------------------------------------------------------------------------------


def test_many_threads_recording_at_once(
    sink: FakeLedger,
    make_client: MakeClient,
    delivery: DeliveryOptions,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # No gathering: the worker builds batches while the threads keep appending.
    client = make_client(delivery=replace(delivery, batch_interval=0))
    ids: list[list[str]] = [[] for _ in range(8)]
    start = threading.Barrier(8)

    def work(slot: int) -> None:
        start.wait()
        ids[slot] = record_many(client, 250, f"thread.{slot}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert client.flush(20)
    stored = sink.stored_keys()
    assert len(stored) == len(set(stored)) == 2000
    assert set(stored) == {i for chunk in ids for i in chunk}
    for chunk in ids:  # each thread's events keep their relative order
        positions = [stored.index(i) for i in chunk]
        assert positions == sorted(positions)
    stats = client.stats()
    assert stats.queued == stats.sent == 2000
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "the worker never fails"


def test_captures_queued_while_the_worker_builds_a_batch_are_kept(
    sink: FakeLedger, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client()
    pipeline = client.pipeline
    late: list[str] = []

    def build_while_a_request_thread_appends(capture: object) -> WireEvent:
        if not late:  # what a request thread does at this very moment
            late.append(client.record("appended.during.build"))
        return client.builder.build(capture)

    first = custom_capture(
        "first", "info", message=None, data={}, actor=None, request=None, request_id=None
    )
    second = first._replace(event_id=UUIDS.take(), event_name="second")
    pipeline.submit(first, build_while_a_request_thread_appends)
    pipeline.submit(second, build_while_a_request_thread_appends)
    assert client.flush(10)
    assert client.flush(10), "and the one appended during the first flush"
    assert sink.stored_keys() == [first.event_id, second.event_id, *late]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "the worker never fails"


def _wait_child(pid: int, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError("the forked child deadlocked")


def test_fork_while_the_worker_is_busy_gives_the_child_a_working_pipeline(
    sink: FakeLedger, make_client: MakeClient
) -> None:
    client = make_client()
    parent_ids = record_many(client, 3, "parent.before")
    assert client.flush(10)
    # Park the parent's worker inside a request, holding whatever it holds, then fork.
    sink.fail_next(1, Fault(hang=True))
    parent_ids += record_many(client, 2, "parent.stuck")
    assert sink.wait_for(lambda: len(sink.requests) == 2)
    pid = os.fork()
    if pid == 0:  # child: only this thread exists; must not touch the parent's state
        code = 1
        try:
            record_many(client, 4, "child")
            code = 0 if client.flush(10) and client.stats().sent == 4 else 2
        finally:
            os._exit(code)
    assert _wait_child(pid) == 0
    assert sink.event_names().count("child") == 4
    sink.hang_release.set()
    assert client.flush(10)
    assert [k for k in sink.stored_keys() if k in parent_ids] == parent_ids
    assert client.stats().sent == 5, "the child's sends are not counted by the parent"


# -- process exit -----------------------------------------------------------------------------

SCRIPT = """
import os, sys, time
from immutablelog.sdk import DeliveryOptions, ImmutableLogClient
client = ImmutableLogClient(
    sys.argv[1], "k",
    delivery=DeliveryOptions(spool_dir=sys.argv[2], backoff_initial=0.01, backoff_max=0.05,
                             shutdown_timeout=float(sys.argv[4]), read_timeout=30),
)
mode = sys.argv[3]
if mode == "exit":
    for i in range(100):
        client.record("exit.test", n=i)
    # no flush: the atexit drain must deliver
elif mode == "burst":
    i = 0
    while True:
        client.record("burst", n=i)
        i += 1
        if i % 25 == 0:
            print(client.stats().spooled, flush=True)
            time.sleep(0.005)
"""


def run_script(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(SCRIPT))
    return subprocess.Popen(
        [sys.executable, str(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_events_are_drained_at_interpreter_exit(sink: FakeLedger, tmp_path: Path) -> None:
    proc = run_script(tmp_path, sink.url, str(tmp_path / "spool"), "exit", "10")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert sink.event_names().count("exit.test") == 100


def test_exit_is_bounded_when_the_server_hangs_and_nothing_is_lost(
    sink: FakeLedger, make_client: MakeClient, tmp_path: Path
) -> None:
    sink.permanent_fault = Fault(hang=True)
    proc = run_script(tmp_path, sink.url, str(tmp_path / "spool"), "exit", "0.5")
    _, err = proc.communicate(timeout=60)  # returns: the exit drain gave up as configured
    assert proc.returncode == 0, err
    assert "stay in the spool" in err
    assert len(spool_keys(tmp_path / "spool")) == 100
    sink.permanent_fault = None
    sink.hang_release.set()
    successor = make_client()
    assert successor.flush(10)
    assert sink.event_names().count("exit.test") == 100


def test_kill_9_mid_burst_loses_nothing_that_was_spooled(
    sink: FakeLedger, make_client: MakeClient, tmp_path: Path
) -> None:
    sink.stop()  # the app sees an outage and spools
    proc = run_script(tmp_path, sink.url, str(tmp_path / "spool"), "burst", "5")
    assert proc.stdout is not None
    for line in proc.stdout:
        if int(line) >= 200:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    proc.stdout.close()
    assert proc.stderr is not None
    proc.stderr.close()
    spooled = spool_keys(tmp_path / "spool")
    assert len(spooled) >= 200
    sink.start()
    successor = make_client()
    assert successor.flush(20)
    assert sink.stored_keys()[: len(spooled)] == spooled, "replayed completely and in order"
    assert successor.stats().adopted == len(spooled)


# -- the logging handler ----------------------------------------------------------------------


def test_log_records_become_events(sink: FakeLedger, make_client: MakeClient) -> None:
    client = make_client()
    handler = client.logging_handler(logging.INFO)
    log = logging.getLogger("billing.refunds")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    try:
        log.debug("below the handler's level")
        log.warning(
            "refund %s issued", 42, extra={"imtbl_data": {"amount": 5, "card_number": "4111"}}
        )
        try:
            raise KeyError("missing")
        except KeyError:
            log.exception("lookup failed")
        log.info("named", extra={"imtbl_event_name": "billing.custom"})
        logging.getLogger("immutablelog.sdk").error("never shipped (feedback loop)")
        logging.getLogger("httpx").error("never shipped either")
    finally:
        log.removeHandler(handler)
    assert client.flush(10)
    assert [s.meta["event_name"] for s in sink.stored] == [
        "log.billing.refunds",
        "log.billing.refunds",
        "billing.custom",
    ]
    warning, error, named = sink.stored
    assert warning.meta["type"] == "warning" and error.meta["type"] == "error"
    doc = warning.document
    assert doc["message"] == "refund 42 issued"
    assert doc["data"]["extra"] == {"amount": 5, "card_number": "[Filtered]"}
    assert doc["data"]["logger"] == "billing.refunds" and doc["data"]["level"] == "WARNING"
    assert error.document["data"]["exception"] == {"type": "KeyError", "message": "'missing'"}
    assert named.meta["type"] == "info"


def test_handler_errors_do_not_propagate(make_client: MakeClient) -> None:
    class Broken:
        def record(self, *args: object, **kwargs: object) -> str:
            raise RuntimeError("boom")

    handler = ImmutableLogHandler(Broken())  # type: ignore[arg-type]
    handler.handleError = lambda record: None  # type: ignore[method-assign]
    handler.emit(logging.LogRecord("x", logging.ERROR, __file__, 1, "m", None, None))


IMPORT_CHECK = """
import sys, tempfile
from immutablelog.sdk import DeliveryOptions, ImmutableLogClient
options = DeliveryOptions(spool_dir=tempfile.mkdtemp())
client = ImmutableLogClient(sys.argv[1], "k", delivery=options)
before = set(sys.modules)
client.record("x")
assert client.flush(10)
print(sorted(set(sys.modules) - before))
"""


def test_the_worker_thread_never_imports_a_module(sink: FakeLedger, tmp_path: Path) -> None:
    """A fork while another thread is importing leaves the child a half-initialized module
    (gunicorn --preload after the app recorded an event did exactly that with httpcore), so
    everything a delivery needs is imported before the worker thread exists."""
    script = tmp_path / "imports.py"
    script.write_text(IMPORT_CHECK)
    out = subprocess.run(
        [sys.executable, str(script), sink.url], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_close_racing_a_slow_spool_write_places_each_event_once(
    sink: FakeLedger, make_client: MakeClient, tmp_path: Path
) -> None:
    sink.stop()
    client = make_client()
    backlog = client.pipeline.backlog
    real_append = backlog.append
    entered, gate = threading.Event(), threading.Event()

    def slow_append(events: Sequence[WireEvent], *, own: bool = True) -> int:
        entered.set()
        gate.wait(10)  # an fsync that takes a while, while close() gives up waiting
        return real_append(events, own=own)

    backlog.append = slow_append  # type: ignore[method-assign]
    ids = record_many(client, 10)
    assert entered.wait(10)
    opener = threading.Timer(0.5, gate.set)
    opener.start()
    try:
        client.close(timeout=0.1)  # rescues while the worker is inside the write
    finally:
        opener.join()
    assert sorted(spool_keys(tmp_path / "spool")) == sorted(ids), "no event spooled twice"


def test_memory_backlog_reports_the_size_it_holds() -> None:
    from immutablelog.sdk.events import WireEvent
    from immutablelog.sdk.spool import MemoryBacklog

    backlog = MemoryBacklog(max_events=2)
    events = [WireEvent(f"k{i}", "{}", {"type": "info"}) for i in range(3)]
    assert backlog.append(events) == 2  # bounded by count, like the spool by bytes
    assert backlog.bytes_used() == sum(len(e.encoded) for e in events[:2]) > 0
    backlog.remove([backlog.peek(1, 10_000)[0].seq])
    assert backlog.bytes_used() == len(events[1].encoded)
