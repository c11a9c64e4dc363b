"""A request's audit context travels into background work: a Flask view queues a Celery task
or an RQ job on the machine's Redis, a real ``celery worker`` / ``rq worker`` process runs it,
and the event it records carries the request's id and actor (read back from the real ledger)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, g

from immutablelog.flask import ImmutableLogAudit
from immutablelog.sdk import DeliveryOptions
from immutablelog.sdk.context import AuditContext, bound, current
from tests.live import LiveServer
from tests.sdk.conftest import wait_until

BROKER = os.environ.get("IMMUTABLELOG_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

JOBS = textwrap.dedent(
    """
    import os
    from celery import Celery
    from immutablelog.celery import carry_audit_context
    from immutablelog.sdk import DeliveryOptions, ImmutableLogClient

    app = Celery("jobs", broker=os.environ["BROKER"])
    app.conf.task_default_queue = os.environ["QUEUE"]
    app.conf.broker_connection_retry_on_startup = True
    carry_audit_context()
    _audit = []

    @app.task
    def send_invoice(number):
        if not _audit:
            _audit.append(ImmutableLogClient(
                service_name="billing-worker",
                delivery=DeliveryOptions(spool_dir=os.environ["SPOOL_DIR"]),
            ))
        _audit[0].record("invoice.sent", invoice=number)
        _audit[0].flush(10)
    """
)


@pytest.fixture
def broker() -> str:
    redis = pytest.importorskip("redis")
    try:
        redis.Redis.from_url(BROKER, socket_connect_timeout=2).ping()
    except Exception as exc:
        if os.environ.get("IMMUTABLELOG_REQUIRE_POSTGRES") == "1":  # CI: services are required
            pytest.fail(f"no Redis broker at {BROKER}: {exc}")
        pytest.skip(f"no Redis broker at {BROKER}: {exc}")
    return BROKER


@pytest.fixture
def jobs(
    tmp_path: Path, live_server: LiveServer, broker: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    (tmp_path / "jobs.py").write_text(JOBS)
    pythonpath = f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    env = {
        "BROKER": broker,
        "QUEUE": f"immutablelog-test-{uuid.uuid4().hex}",
        "SPOOL_DIR": str(tmp_path / "worker-spool"),
        "IMMUTABLELOG_URL": live_server.url,
        "IMMUTABLELOG_API_KEY": live_server.ingest_key,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.syspath_prepend(str(tmp_path))
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "jobs", "worker", "--pool", "solo",
         "--queues", env["QUEUE"], "--without-heartbeat", "--without-gossip",
         "--without-mingle", "--loglevel", "WARNING"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": pythonpath},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    import jobs as module

    try:
        yield module
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        sys.modules.pop("jobs", None)


def queuing_app(
    server: LiveServer, tmp_path: Path, actor: Any, queue: Callable[[int], object]
) -> tuple[Flask, ImmutableLogAudit]:
    """A Flask app, audited, whose view queues the invoice's job as ``actor``."""
    app = Flask("shop")

    @app.post("/invoices/<int:number>/send")
    def send(number: int) -> str:
        g.imtbl_actor = actor
        queue(number)
        return "queued"

    audit = ImmutableLogAudit(
        app,
        api_key=server.ingest_key,
        api_url=server.url,
        delivery=DeliveryOptions(spool_dir=str(tmp_path / "app-spool")),
    )
    return app, audit


def sent_events(server: LiveServer) -> list[dict[str, Any]]:
    return [e for e in server.entries() if e["event_name"] == "invoice.sent"]


def test_a_task_queued_in_a_request_records_with_its_request_id_and_actor(
    live_server: LiveServer, jobs: Any, tmp_path: Path
) -> None:
    app, audit = queuing_app(
        live_server, tmp_path, {"id": "ann", "password": "hunter2"}, jobs.send_invoice.delay
    )
    try:
        answer = app.test_client().post("/invoices/7/send", headers={"X-Request-Id": "req-inv-7"})
        assert answer.status_code == 200
        jobs.send_invoice.delay(8)  # queued outside any request: no context to carry
        assert audit.flush(30)
        assert wait_until(lambda: len(sent_events(live_server)) == 2, 60)
    finally:
        audit.close(10)
    by_invoice = {json.loads(e["payload"])["data"]["invoice"]: e for e in sent_events(live_server)}
    carried = by_invoice[7]
    assert carried["request_id"] == "req-inv-7" and carried["service"] == "billing-worker"
    payload = json.loads(carried["payload"])
    assert payload["context"]["actor"] == {"id": "ann", "password": "[Filtered]"}
    assert by_invoice[8]["request_id"] != "req-inv-7"
    assert "actor" not in json.loads(by_invoice[8]["payload"]).get("context", {})
    # The request itself was recorded once, under the same id.
    requests = [e for e in live_server.entries() if e["request_id"] == "req-inv-7"]
    assert sorted(e["event_name"] for e in requests) == sorted(
        ["invoice.sent", "http.POST./invoices/7/send"]
    )


RQ_JOBS = textwrap.dedent(
    """
    import os
    from immutablelog.sdk import DeliveryOptions, ImmutableLogClient

    def send_invoice(number):
        audit = ImmutableLogClient(
            service_name="billing-rq",
            delivery=DeliveryOptions(spool_dir=os.environ["SPOOL_DIR"]),
        )
        audit.record("invoice.sent", invoice=number)
        audit.close(10)
    """
)


def test_an_rq_job_enqueued_in_a_request_records_with_its_request_id_and_actor(
    live_server: LiveServer, broker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis

    from immutablelog.rq import AuditQueue

    (tmp_path / "rq_jobs.py").write_text(RQ_JOBS)
    monkeypatch.syspath_prepend(str(tmp_path))
    import rq_jobs  # type: ignore[import-not-found]

    queue = AuditQueue(
        f"immutablelog-test-{uuid.uuid4().hex}", connection=redis.Redis.from_url(broker)
    )
    app, audit = queuing_app(
        live_server, tmp_path, "ann", lambda number: queue.enqueue(rq_jobs.send_invoice, number)
    )
    try:
        answer = app.test_client().post("/invoices/9/send", headers={"X-Request-Id": "req-rq-9"})
        assert answer.status_code == 200
    finally:
        audit.close(10)
    env = {
        **os.environ,
        "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "SPOOL_DIR": str(tmp_path / "worker-spool"),
        "IMMUTABLELOG_URL": live_server.url,
        "IMMUTABLELOG_API_KEY": live_server.ingest_key,
    }
    worker = subprocess.run(
        [sys.executable, "-m", "rq.cli", "worker", "--burst", "--url", broker,
         "--job-class", "immutablelog.rq.AuditJob", queue.name],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert worker.returncode == 0, worker.stderr[-3000:]
    (event,) = [e for e in live_server.entries() if e["service"] == "billing-rq"]
    assert event["request_id"] == "req-rq-9"
    assert json.loads(event["payload"])["context"]["actor"] == "ann"
    sys.modules.pop("rq_jobs", None)


def test_the_context_is_bound_only_inside_its_block() -> None:
    assert current() is None
    with bound(AuditContext("r-1", lambda: "ann")):
        context = current()
        assert context is not None and context.carried() == {"request_id": "r-1", "actor": "ann"}
    assert current() is None
    broken = AuditContext("r-2", lambda: 1 / 0)
    assert broken.actor() is None  # an actor that cannot be told never breaks the work
    assert AuditContext.from_carried({"request_id": 5}) is None
    assert AuditContext.from_carried("junk") is None
