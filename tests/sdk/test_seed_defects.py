"""Each defect of the seed's extension, reproduced on its verbatim code, and shown fixed in ours.

Both extensions send to the same real in-test HTTP peer (:class:`FakeLedger`, which implements
the server's idempotency rules), so every assertion is about what actually reached the log.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask, request

from immutablelog.flask import ImmutableLogAudit
from tests.fixtures import seed_middleware
from tests.sdk.fake_ledger import FakeLedger, Fault

MakeApp = Callable[..., tuple[Flask, ImmutableLogAudit]]


def add_routes(app: Flask) -> None:
    @app.get("/ok")
    def ok() -> str:
        return "ok"

    @app.get("/boom")
    def boom() -> str:
        raise ZeroDivisionError("division by zero")

    @app.post("/login")
    def login() -> tuple[str, int]:
        assert request.form["password"] != "the right one"
        return "invalid credentials", 401

    @app.post("/upload")
    def upload() -> str:
        received = 0
        while chunk := request.stream.read(65536):
            received += len(chunk)
        return str(received)


@pytest.fixture
def seed_app(sink: FakeLedger) -> Flask:
    app = Flask("seed")
    seed_middleware.ImmutableLogAudit(app, api_key="k", api_url=sink.url)
    add_routes(app)
    return app


@pytest.fixture
def our_app(make_app: MakeApp) -> tuple[Flask, ImmutableLogAudit]:
    app, audit = make_app()
    add_routes(app)
    return app, audit


def stored_docs(sink: FakeLedger) -> list[dict[str, Any]]:
    return [s.document | {"_meta": s.meta} for s in sink.stored]


@pytest.fixture
def in_background() -> Iterator[Callable[[Callable[[], object]], threading.Thread]]:
    threads: list[threading.Thread] = []

    def start(work: Callable[[], object]) -> threading.Thread:
        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        threads.append(thread)
        return thread

    yield start
    for thread in threads:
        thread.join(10)


# 1. Blocking --------------------------------------------------------------------------------------


def test_seed_blocks_the_request_on_the_log_server(
    sink: FakeLedger, seed_app: Flask, in_background: Callable[..., threading.Thread]
) -> None:
    sink.permanent_fault = Fault(hang=True)
    request_done = threading.Event()

    def serve() -> None:
        seed_app.test_client().get("/ok")
        request_done.set()

    in_background(serve)
    assert sink.wait_for(lambda: len(sink.requests) == 1)
    # The log server has the event and is holding its answer: the user's request is stuck too.
    assert not request_done.wait(0.3)
    sink.hang_release.set()
    assert request_done.wait(10)


def test_ours_answers_while_the_log_server_holds_its_answer(
    sink: FakeLedger, our_app: tuple[Flask, ImmutableLogAudit]
) -> None:
    app, audit = our_app
    sink.fail_next(1, Fault(hang=True))
    client = app.test_client()
    assert client.get("/ok").status_code == 200
    assert sink.wait_for(lambda: len(sink.requests) == 1)
    assert client.get("/ok").status_code == 200  # returned with the sink still holding
    assert not sink.hang_release.is_set()
    sink.hang_release.set()
    assert audit.flush(10) and len(sink.stored) == 2


# 2. Double events ---------------------------------------------------------------------------------


def test_seed_emits_twice_for_an_unhandled_exception(sink: FakeLedger, seed_app: Flask) -> None:
    assert seed_app.test_client().get("/boom").status_code == 500
    assert len(sink.requests) == 2, "after_request's 500 event and teardown's exception event"
    # Both share one idempotency key, so the server keeps the first — the one without the
    # exception — and refuses the second.
    (stored,) = stored_docs(sink)
    assert "exception" not in stored["error"]


def test_ours_emits_one_event_with_the_exception(
    sink: FakeLedger, our_app: tuple[Flask, ImmutableLogAudit]
) -> None:
    app, audit = our_app
    assert app.test_client().get("/boom").status_code == 500
    assert audit.flush(10)
    (stored,) = stored_docs(sink)
    assert stored["error"]["exception"] == "ZeroDivisionError"
    assert stored["error"]["exception_message"] == "division by zero"


# 3. Secrets in an immutable log -------------------------------------------------------------------


def login(app: Flask) -> None:
    app.test_client().post(
        "/login?token=reset-token-123", data={"user": "bob", "password": "hunter2"}
    )


def test_seed_writes_passwords_and_tokens_into_the_log(sink: FakeLedger, seed_app: Flask) -> None:
    login(seed_app)
    (stored,) = stored_docs(sink)
    assert "hunter2" in stored["error"]["request_body"]
    assert stored["request"]["query_params"]["token"] == "reset-token-123"


def test_ours_redacts_them(sink: FakeLedger, our_app: tuple[Flask, ImmutableLogAudit]) -> None:
    app, audit = our_app
    login(app)
    assert audit.flush(10)
    (stored,) = sink.stored
    assert "hunter2" not in stored.payload and "reset-token-123" not in stored.payload
    assert "bob" in json.loads(stored.payload)["error"]["request_body"]


# 4. Audit suppression through X-Request-Id --------------------------------------------------------


def twice_with_the_same_request_id(app: Flask) -> None:
    client = app.test_client()
    client.get("/ok", headers={"X-Request-Id": "same"})
    client.get("/ok", headers={"X-Request-Id": "same"})


def test_seed_lets_a_client_suppress_audit_events(sink: FakeLedger, seed_app: Flask) -> None:
    twice_with_the_same_request_id(seed_app)
    assert len(sink.requests) == 2
    assert len(sink.stored) == 1, "the second event reused the first one's idempotency key"
    assert sink.stored[0].headers["Idempotency-Key"] == "http.GET./ok-same"


def test_ours_records_both(sink: FakeLedger, our_app: tuple[Flask, ImmutableLogAudit]) -> None:
    app, audit = our_app
    twice_with_the_same_request_id(app)
    assert audit.flush(10)
    assert [s.meta["request_id"] for s in sink.stored] == ["same", "same"]
    assert len(set(sink.stored_keys())) == 2


# 5. Forged client IP ------------------------------------------------------------------------------


def forged(app: Flask) -> None:
    app.test_client().get("/ok", headers={"X-Forwarded-For": "6.6.6.6"})


def test_seed_records_a_forged_client_ip(sink: FakeLedger, seed_app: Flask) -> None:
    forged(seed_app)
    assert stored_docs(sink)[0]["context"]["ip"] == "6.6.6.6"


def test_ours_records_the_peer_unless_proxies_are_trusted(
    sink: FakeLedger, our_app: tuple[Flask, ImmutableLogAudit]
) -> None:
    app, audit = our_app
    forged(app)
    assert audit.flush(10)
    assert stored_docs(sink)[0]["context"]["ip"] == "127.0.0.1"


# 6. Unvalidated X-Request-Id ----------------------------------------------------------------------

HOSTILE_ID = "<img src=x onerror=alert(1)>" + "A" * 5000


def test_seed_echoes_any_request_id(sink: FakeLedger, seed_app: Flask) -> None:
    response = seed_app.test_client().get("/ok", headers={"X-Request-Id": HOSTILE_ID})
    assert response.headers["X-Request-Id"] == HOSTILE_ID
    assert sink.stored[0].meta["request_id"] == HOSTILE_ID


def test_ours_replaces_an_unsafe_request_id(
    sink: FakeLedger, our_app: tuple[Flask, ImmutableLogAudit]
) -> None:
    app, audit = our_app
    response = app.test_client().get("/ok", headers={"X-Request-Id": HOSTILE_ID})
    generated = response.headers["X-Request-Id"]
    assert uuid.UUID(generated).version == 7
    assert audit.flush(10)
    assert sink.stored[0].meta["request_id"] == generated
    assert "onerror" not in sink.stored[0].payload


# 7. Memory: the whole body is read before the view ------------------------------------------------

BIG_BODY = b"z" * 2_000_000


def test_seed_reads_the_whole_body_and_breaks_streaming(sink: FakeLedger, seed_app: Flask) -> None:
    response = seed_app.test_client().post(
        "/upload", data=BIG_BODY, content_type="application/octet-stream"
    )
    assert response.get_data() == b"0", "the view's stream was already drained into memory"


def test_ours_leaves_the_stream_to_the_view(
    sink: FakeLedger, our_app: tuple[Flask, ImmutableLogAudit]
) -> None:
    app, audit = our_app
    response = app.test_client().post(
        "/upload", data=BIG_BODY, content_type="application/octet-stream"
    )
    assert response.get_data() == str(len(BIG_BODY)).encode()
    assert audit.flush(10)


# 8. Lost events -----------------------------------------------------------------------------------


def test_seed_loses_an_event_the_server_could_not_take(sink: FakeLedger, seed_app: Flask) -> None:
    sink.fail_next(1, Fault(503, retry_after="1"))
    seed_app.test_client().get("/ok")
    seed_app.test_client().get("/ok")  # the server is fine again
    assert len(sink.stored) == 1, "the first event is gone for good"


def test_ours_retries_until_stored(
    sink: FakeLedger, our_app: tuple[Flask, ImmutableLogAudit]
) -> None:
    app, audit = our_app
    sink.fail_next(1, Fault(503, retry_after="0"))
    app.test_client().get("/ok")
    app.test_client().get("/ok")
    assert audit.flush(10)
    assert len(sink.stored) == 2


# 9. Latency from the wall clock -------------------------------------------------------------------


@pytest.fixture
def clock_stepped_back(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Make the wall clock jump back 10 s on every reading (NTP step, VM resume)."""
    readings = itertools.count()
    real = time.time

    def stepping() -> float:
        return real() - 10.0 * next(readings)

    def start() -> None:
        monkeypatch.setattr(time, "time", stepping)

    return start


def test_seed_reports_negative_latency_when_the_clock_steps(
    sink: FakeLedger,
    seed_app: Flask,
    clock_stepped_back: Callable[[], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = seed_app.test_client()
    clock_stepped_back()
    client.get("/ok")
    monkeypatch.undo()
    assert stored_docs(sink)[0]["metrics"]["latency_ms"] < 0


def test_ours_measures_latency_on_a_monotonic_clock(
    sink: FakeLedger,
    our_app: tuple[Flask, ImmutableLogAudit],
    clock_stepped_back: Callable[[], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app, audit = our_app
    client = app.test_client()
    clock_stepped_back()
    client.get("/ok")
    monkeypatch.undo()
    assert audit.flush(10)
    assert stored_docs(sink)[0]["metrics"]["latency_ms"] >= 0
