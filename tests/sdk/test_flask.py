"""The Flask extension: seed-compatible surface, one event per request, safe capture."""

from __future__ import annotations

import io
import json
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from flask import (
    Blueprint,
    Flask,
    abort,
    copy_current_request_context,
    g,
    request,
    url_for,
)

import immutablelog
from immutablelog.flask import ImmutableLogAudit
from immutablelog.sdk import DeliveryOptions
from immutablelog.sdk.redaction import FILTERED
from tests.sdk.conftest import worker_threads
from tests.sdk.fake_ledger import FakeLedger, Fault

MakeApp = Callable[..., tuple[Flask, ImmutableLogAudit]]


def routes(app: Flask) -> None:
    @app.get("/ok")
    def ok() -> str:
        return "ok"

    @app.post("/created")
    def created() -> tuple[str, int]:
        return "made", 201

    @app.get("/redirect")
    def redirect() -> tuple[str, int, dict[str, str]]:
        return "", 302, {"Location": "/ok"}

    @app.get("/forbidden")
    def forbidden() -> str:
        abort(403)

    @app.get("/boom")
    def boom() -> str:
        raise ZeroDivisionError("division by zero")

    @app.get("/health")
    def health() -> str:
        return "up"

    @app.post("/login")
    def login() -> tuple[str, int]:
        assert request.form["user"] == "bob"
        return "denied", 401

    @app.post("/json")
    def json_view() -> tuple[str, int]:
        assert request.get_json()["user"] == "bob"
        return "bad", 422

    @app.post("/upload")
    def upload() -> tuple[str, int]:
        assert request.files["file"].read() == b"file-bytes"
        assert request.form["password"] == "p"
        return "bad upload", 400

    @app.post("/stream")
    def stream() -> tuple[str, int]:
        total = 0
        while chunk := request.stream.read(1000):
            total += len(chunk)
        return str(total), 500

    @app.get("/named")
    def named() -> str:
        g.imtbl_event_name = "report.viewed"
        g.imtbl_actor = "alice"
        return "ok"


@pytest.fixture
def app_and_audit(make_app: MakeApp) -> tuple[Flask, ImmutableLogAudit]:
    app, audit = make_app()
    routes(app)
    return app, audit


def flushed(sink: FakeLedger, audit: ImmutableLogAudit) -> list[dict[str, Any]]:
    assert audit.flush(10)
    return [s.document | {"_meta": s.meta} for s in sink.stored]


# -- compatibility ----------------------------------------------------------------------------


def test_importable_from_the_package_and_registered_like_the_seed(
    app_and_audit: tuple[Flask, ImmutableLogAudit],
) -> None:
    app, audit = app_and_audit
    assert immutablelog.ImmutableLogAudit is ImmutableLogAudit
    assert app.extensions["immutablelog"] is audit


def test_seed_positional_constructor_and_defaults(
    sink: FakeLedger, delivery: DeliveryOptions
) -> None:
    app = Flask("positional")
    audit = ImmutableLogAudit(app, "key", sink.url, "svc", "staging", ["/skip"], delivery=delivery)
    try:
        assert (audit.api_key, audit.api_url, audit.service_name, audit.env) == (
            "key",
            sink.url,
            "svc",
            "staging",
        )
        assert audit.skip_paths == {"/skip"}
        assert ImmutableLogAudit(delivery=delivery).skip_paths == {"/health", "/healthz"}
    finally:
        audit.close(1)


@pytest.mark.parametrize(
    ("path", "status", "kind", "block"),
    [
        ("/ok", 200, "success", {"success": {"status_code": 200, "result": "ok"}}),
        ("/redirect", 302, "info", {"info": {"status_code": 302, "action": "get"}}),
        ("/forbidden", 403, "error", {"error": {"status_code": 403, "retryable": False}}),
        ("/missing", 404, "error", {"error": {"status_code": 404, "retryable": False}}),
    ],
)
def test_one_event_per_request_with_the_seed_schema(
    sink: FakeLedger,
    app_and_audit: tuple[Flask, ImmutableLogAudit],
    path: str,
    status: int,
    kind: str,
    block: dict[str, Any],
) -> None:
    app, audit = app_and_audit
    response = app.test_client().get(path, headers={"User-Agent": "tester/1"})
    assert response.status_code == status
    (event,) = flushed(sink, audit)
    request_id = response.headers["X-Request-Id"]
    assert event["_meta"] == {
        "type": kind,
        "event_name": f"http.GET.{path}",
        "service": "flask-service",
        "request_id": request_id,
        "env": "production",
    }
    assert event["kind"] == kind
    assert event["request"] == {
        "request_id": request_id,
        "method": "GET",
        "path": path,
        "query_params": None,
    }
    assert event["context"] == {"ip": "127.0.0.1", "user_agent": "tester/1"}
    assert event["metrics"]["status_code"] == status
    assert isinstance(event["metrics"]["latency_ms"], int)
    for key, value in block.items():
        assert event[key] == value


def test_unhandled_exception_in_production_mode_yields_exactly_one_event(
    sink: FakeLedger, app_and_audit: tuple[Flask, ImmutableLogAudit]
) -> None:
    app, audit = app_and_audit
    assert app.test_client().get("/boom").status_code == 500
    (event,) = flushed(sink, audit)
    assert event["message"] == "GET /boom failed with exception: ZeroDivisionError"
    assert event["error"]["exception"] == "ZeroDivisionError"
    assert event["error"]["exception_message"] == "division by zero"
    assert event["metrics"]["status_code"] == 500


def test_unhandled_exception_when_propagating_still_yields_one_event(
    sink: FakeLedger, app_and_audit: tuple[Flask, ImmutableLogAudit]
) -> None:
    app, audit = app_and_audit
    app.testing = True  # PROPAGATE_EXCEPTIONS: after_request never runs
    with pytest.raises(ZeroDivisionError):
        app.test_client().get("/boom")
    (event,) = flushed(sink, audit)
    assert event["error"]["exception"] == "ZeroDivisionError"
    assert event["metrics"]["status_code"] == 500


def test_skip_paths(sink: FakeLedger, app_and_audit: tuple[Flask, ImmutableLogAudit]) -> None:
    app, audit = app_and_audit
    client = app.test_client()
    assert "X-Request-Id" not in client.get("/health").headers
    client.get("/ok")
    assert [e["request"]["path"] for e in flushed(sink, audit)] == ["/ok"]


def test_custom_event_name_and_actor_from_g(
    sink: FakeLedger, app_and_audit: tuple[Flask, ImmutableLogAudit]
) -> None:
    app, audit = app_and_audit
    app.test_client().get("/named")
    (event,) = flushed(sink, audit)
    assert event["_meta"]["event_name"] == "report.viewed"
    assert event["context"]["actor"] == "alice"


def test_actor_loader(sink: FakeLedger, make_app: MakeApp) -> None:
    app, audit = make_app(actor_loader=lambda: {"id": 7, "email": "a@b.c"})
    routes(app)
    app.test_client().get("/ok")
    (event,) = flushed(sink, audit)
    assert event["context"]["actor"] == {"id": 7, "email": "a@b.c"}


def test_actor_objects_are_turned_into_text_in_the_request(
    sink: FakeLedger, make_app: MakeApp
) -> None:
    class User:
        def __str__(self) -> str:
            return "user:42"

    app, audit = make_app(actor_loader=User)
    routes(app)
    app.test_client().get("/ok")
    (event,) = flushed(sink, audit)
    assert event["context"]["actor"] == "user:42"


def test_a_failing_actor_loader_does_not_break_requests(
    sink: FakeLedger, make_app: MakeApp
) -> None:
    def broken() -> str:
        raise LookupError("no user")

    app, audit = make_app(actor_loader=broken)
    routes(app)
    assert app.test_client().get("/ok").status_code == 200
    (event,) = flushed(sink, audit)
    assert "actor" not in event["context"]


def test_blueprints_need_no_setup(sink: FakeLedger, make_app: MakeApp) -> None:
    app, audit = make_app()
    payments = Blueprint("payments", __name__, url_prefix="/payments")

    @payments.post("/checkout")
    def checkout() -> dict[str, str]:
        g.imtbl_event_name = "payment.checkout.initiated"
        return {"status": "ok"}

    app.register_blueprint(payments)
    app.test_client().post("/payments/checkout")
    (event,) = flushed(sink, audit)
    assert event["_meta"]["event_name"] == "payment.checkout.initiated"


# -- configuration ----------------------------------------------------------------------------


def test_configuration_from_app_config(sink: FakeLedger, delivery: DeliveryOptions) -> None:
    app = Flask("configured")
    app.config.update(
        IMMUTABLELOG_API_KEY="config-key",
        IMMUTABLELOG_URL=sink.url,
        IMMUTABLELOG_SERVICE_NAME="billing",
        IMMUTABLELOG_ENV="staging",
        IMMUTABLELOG_SKIP_PATHS=["/ping"],
        IMMUTABLELOG_TRUSTED_PROXIES=1,
        IMMUTABLELOG_REDACT_KEYS=["email"],
    )
    routes(app)
    audit = ImmutableLogAudit(delivery=delivery)
    audit.init_app(app)
    try:
        app.test_client().get("/ok?email=a@b.c", headers={"X-Forwarded-For": "203.0.113.9"})
        (event,) = flushed(sink, audit)
        assert event["_meta"]["service"] == "billing" and event["_meta"]["env"] == "staging"
        assert event["context"]["ip"] == "203.0.113.9"
        assert event["request"]["query_params"] == {"email": FILTERED}
        assert sink.requests[0][1]["Authorization"] == "Bearer config-key"
        assert audit.skip_paths == {"/ping"}
    finally:
        audit.close(1)


def test_explicit_arguments_beat_config_which_beats_environment(
    sink: FakeLedger, delivery: DeliveryOptions, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMTBL_API_KEY", "env-key")
    monkeypatch.setenv("IMTBL_URL", "http://127.0.0.1:9")
    app = Flask("precedence")
    app.config.update(IMMUTABLELOG_URL=sink.url, IMMUTABLELOG_SERVICE_NAME="from-config")
    audit = ImmutableLogAudit(app, service_name="explicit", delivery=delivery)
    try:
        assert audit.api_url == sink.url  # config over environment
        assert audit.api_key == "env-key"  # environment when nothing else says
        assert audit.service_name == "explicit"  # explicit over config
    finally:
        audit.close(1)


def test_application_factory_with_several_apps(sink: FakeLedger, delivery: DeliveryOptions) -> None:
    audit = ImmutableLogAudit(api_url=sink.url, delivery=delivery)
    apps = []
    for name, key in (("one", "k1"), ("two", "k1"), ("three", "k2")):
        app = Flask(name)
        app.config.update(IMMUTABLELOG_SERVICE_NAME=name, IMMUTABLELOG_API_KEY=key)
        routes(app)
        audit.init_app(app)
        apps.append(app)
    try:
        for app in apps:
            app.test_client().get("/ok")
            with app.app_context():
                assert audit.flush(10)
        # Same destination, one pipeline (its batches mix the apps' events); each event keeps
        # its own service and goes out with its own key.
        assert audit.pipeline(apps[0]) is audit.pipeline(apps[1])
        assert audit.pipeline(apps[2]) is not audit.pipeline(apps[0])
        assert (audit.stats(apps[0]).sent, audit.stats(apps[2]).sent) == (2, 1)
        keys = {s.meta["service"]: s.headers["Authorization"] for s in sink.stored}
        assert keys == {"one": "Bearer k1", "two": "Bearer k1", "three": "Bearer k2"}
        assert len(worker_threads()) == 1
    finally:
        audit.close(2)


def test_explicit_arguments_win_over_app_config_even_when_they_equal_the_defaults(
    sink: FakeLedger, delivery: DeliveryOptions
) -> None:
    app = Flask("explicit-defaults")
    app.config.update(IMMUTABLELOG_ENV="staging", IMMUTABLELOG_SERVICE_NAME="from-config")
    routes(app)
    audit = ImmutableLogAudit(
        app, "k", sink.url, service_name="flask-service", env="production", delivery=delivery
    )
    try:
        assert (audit.service_name, audit.env) == ("flask-service", "production")
        app.test_client().get("/ok")
        (event,) = flushed(sink, audit)
        assert (event["_meta"]["service"], event["_meta"]["env"]) == ("flask-service", "production")
    finally:
        audit.close(1)


def test_unset_arguments_fall_back_to_app_config_then_defaults(
    sink: FakeLedger, delivery: DeliveryOptions
) -> None:
    audit = ImmutableLogAudit(api_key="k", api_url=sink.url, delivery=delivery)
    assert (audit.service_name, audit.env) == ("flask-service", "production")
    configured, plain = Flask("configured-env"), Flask("plain-env")
    configured.config["IMMUTABLELOG_ENV"] = "staging"
    try:
        audit.init_app(configured)
        assert (audit.service_name, audit.env) == ("flask-service", "staging")
        audit.init_app(plain)
        assert (audit.service_name, audit.env) == ("flask-service", "production")
    finally:
        audit.close(1)


def test_init_app_again_moves_to_the_new_destination_and_the_old_one_still_delivers(
    sink: FakeLedger, delivery: DeliveryOptions
) -> None:
    audit = ImmutableLogAudit(api_url=sink.url, delivery=replace(delivery, batch_interval=3600))
    app = Flask("reconfigured")
    routes(app)
    app.config["IMMUTABLELOG_API_KEY"] = "old-key"
    audit.init_app(app)
    old = audit.pipeline(app)
    try:
        app.test_client().get("/ok")  # gathers in the old pipeline for an hour
        app.config["IMMUTABLELOG_API_KEY"] = "new-key"
        audit.init_app(app)
        assert audit.pipeline(app) is not old
        app.test_client().get("/ok")
        assert audit.flush(10, app)
        assert sink.wait_for_stored(2), "the old pipeline was drained, not dropped"
        keys = sorted(s.headers["Authorization"] for s in sink.stored)
        assert keys == ["Bearer new-key", "Bearer old-key"]
        assert old.closed and len(worker_threads()) == 1
    finally:
        audit.close(2)


# -- request ids and client addresses ---------------------------------------------------------


def test_a_safe_client_request_id_is_kept_and_echoed(
    sink: FakeLedger, app_and_audit: tuple[Flask, ImmutableLogAudit]
) -> None:
    app, audit = app_and_audit
    response = app.test_client().get("/ok", headers={"X-Request-Id": "trace-abc.123"})
    assert response.headers["X-Request-Id"] == "trace-abc.123"
    (event,) = flushed(sink, audit)
    assert event["_meta"]["request_id"] == "trace-abc.123"
    assert event["id"] != "trace-abc.123"


@pytest.mark.parametrize("bad_id", ["x" * 129, "has spaces", "<script>alert(1)</script>"])
def test_an_unsafe_client_request_id_is_replaced(
    sink: FakeLedger, app_and_audit: tuple[Flask, ImmutableLogAudit], bad_id: str
) -> None:
    app, audit = app_and_audit
    response = app.test_client().get("/ok", headers={"X-Request-Id": bad_id})
    generated = response.headers["X-Request-Id"]
    assert uuid.UUID(generated).version == 7
    (event,) = flushed(sink, audit)
    assert event["_meta"]["request_id"] == generated
    assert event["id"] == generated  # an id of our own names the event too
    assert bad_id not in json.dumps(event)


def test_forwarded_for_is_trusted_only_through_configured_proxies(
    sink: FakeLedger, make_app: MakeApp
) -> None:
    app, audit = make_app(trusted_proxies=1)
    routes(app)
    headers = {"X-Forwarded-For": "6.6.6.6, 198.51.100.7"}
    app.test_client().get("/ok", headers=headers)
    (event,) = flushed(sink, audit)
    assert event["context"]["ip"] == "198.51.100.7"


# -- bodies -----------------------------------------------------------------------------------


def test_failed_login_form_is_recorded_redacted_and_the_view_still_reads_it(
    sink: FakeLedger, app_and_audit: tuple[Flask, ImmutableLogAudit]
) -> None:
    app, audit = app_and_audit
    response = app.test_client().post(
        "/login?next=/home&token=qz-tok-9", data={"user": "bob", "password": "hunter2"}
    )
    assert response.status_code == 401
    (event,) = flushed(sink, audit)
    assert event["error"]["request_body"] == "user=bob&password=[Filtered]"
    assert event["request"]["query_params"] == {"next": "/home", "token": FILTERED}
    # (A token value that cannot occur inside the hex of a generated id.)
    assert "hunter2" not in json.dumps(event) and "qz-tok-9" not in json.dumps(event["request"])


def test_json_body_is_recorded_redacted(
    sink: FakeLedger, app_and_audit: tuple[Flask, ImmutableLogAudit]
) -> None:
    app, audit = app_and_audit
    app.test_client().post("/json", json={"user": "bob", "card": {"cvv": "123"}})
    (event,) = flushed(sink, audit)
    assert json.loads(event["error"]["request_body"]) == {"user": "bob", "card": {"cvv": FILTERED}}


def test_multipart_uploads_work_and_are_not_stored(
    sink: FakeLedger, app_and_audit: tuple[Flask, ImmutableLogAudit]
) -> None:
    app, audit = app_and_audit
    response = app.test_client().post(
        "/upload",
        data={"file": (io.BytesIO(b"file-bytes"), "a.txt"), "password": "p"},
        content_type="multipart/form-data",
    )
    assert response.status_code == 400
    (event,) = flushed(sink, audit)
    assert "request_body" not in event["error"] and "request_body_hash" not in event["error"]


def test_large_bodies_stream_to_the_view_untouched_and_are_not_captured(
    sink: FakeLedger, app_and_audit: tuple[Flask, ImmutableLogAudit]
) -> None:
    app, audit = app_and_audit
    body = b"x" * 1_000_000
    response = app.test_client().post("/stream", data=body, content_type="application/json")
    assert response.get_data() == b"1000000"
    (event,) = flushed(sink, audit)
    assert "request_body" not in event["error"]


def test_small_streamed_body_is_seen_whole_by_the_view(sink: FakeLedger, make_app: MakeApp) -> None:
    app, audit = make_app(max_body_bytes=10_000)
    routes(app)
    response = app.test_client().post("/stream", data=b'{"a": 1}', content_type="application/json")
    assert response.get_data() == b"8"
    (event,) = flushed(sink, audit)
    assert event["error"]["request_body"] == '{"a": 1}'


def test_successful_requests_never_keep_the_body(
    sink: FakeLedger, app_and_audit: tuple[Flask, ImmutableLogAudit]
) -> None:
    app, audit = app_and_audit
    app.test_client().post("/created", json={"password": "x"})
    (event,) = flushed(sink, audit)
    assert "error" not in event and "x" not in json.dumps(event.get("success"))


def test_header_allowlist(sink: FakeLedger, make_app: MakeApp) -> None:
    app, audit = make_app(capture_headers=["X-Tenant", "Authorization"])
    routes(app)
    app.test_client().get(
        "/ok", headers={"X-Tenant": "acme", "Authorization": "Bearer s", "Cookie": "c=1"}
    )
    (event,) = flushed(sink, audit)
    assert event["request"]["headers"] == {"X-Tenant": "acme", "Authorization": FILTERED}


# -- only served requests are recorded -------------------------------------------------------


def test_contexts_pushed_by_hand_record_no_request_event(
    sink: FakeLedger, app_and_audit: tuple[Flask, ImmutableLogAudit]
) -> None:
    app, audit = app_and_audit
    app.config["SERVER_NAME"] = "audit.example"  # lets an app context build URLs
    with app.test_request_context("/ok?next=1"):
        assert url_for("ok", _external=True) == "http://audit.example/ok"
    with app.app_context():
        assert url_for("named") == "http://audit.example/named"
    ctx = app.test_request_context("/boom", method="GET")
    ctx.push()
    ctx.pop()
    with pytest.raises(KeyError), app.test_request_context("/forbidden"):
        raise KeyError("a script failed inside a context it pushed")
    served = app.test_client().get("/ok", headers={"X-Request-Id": "the-served-one"})
    assert served.status_code == 200
    (event,) = flushed(sink, audit)
    assert event["_meta"]["request_id"] == "the-served-one"


def test_a_custom_event_in_a_hand_pushed_context_is_recorded_alone(
    sink: FakeLedger, app_and_audit: tuple[Flask, ImmutableLogAudit]
) -> None:
    app, audit = app_and_audit
    with app.test_request_context("/ok"):
        audit.record("report.mailed", recipients=3)
    (event,) = flushed(sink, audit)
    assert event["_meta"]["event_name"] == "report.mailed"


def test_a_copied_request_context_ending_first_does_not_replace_the_request_event(
    sink: FakeLedger, make_app: MakeApp
) -> None:
    app, audit = make_app()

    @app.get("/spawn")
    def spawn() -> tuple[str, int]:
        @copy_current_request_context
        def in_thread() -> None:
            g.imtbl_event_name = "from.the.thread"

        worker = threading.Thread(target=in_thread)
        worker.start()
        worker.join()
        return "accepted", 202

    app.test_client().get("/spawn")
    (event,) = flushed(sink, audit)
    assert event["metrics"]["status_code"] == 202


# -- custom events ----------------------------------------------------------------------------


def test_record_inside_a_request_carries_its_context(sink: FakeLedger, make_app: MakeApp) -> None:
    app, audit = make_app(actor_loader=lambda: "carol")

    @app.delete("/invoices/<int:number>")
    def delete(number: int) -> str:
        audit.record("invoice.deleted", kind="warning", invoice=number, secret="s")
        return "gone"

    response = app.test_client().delete("/invoices/42", headers={"X-Request-Id": "r-42"})
    custom, http = flushed(sink, audit)
    assert custom["_meta"]["event_name"] == "invoice.deleted"
    assert custom["_meta"]["type"] == "warning"
    assert custom["_meta"]["request_id"] == "r-42" == response.headers["X-Request-Id"]
    assert custom["data"] == {"invoice": 42, "secret": FILTERED}
    assert custom["context"]["actor"] == "carol"
    assert custom["request"] == {"request_id": "r-42", "method": "DELETE", "path": "/invoices/42"}
    assert http["_meta"]["request_id"] == "r-42"


def test_record_outside_a_request(
    sink: FakeLedger, app_and_audit: tuple[Flask, ImmutableLogAudit]
) -> None:
    app, audit = app_and_audit
    event_id = audit.record("nightly.cleanup", removed=3)  # no app or request context
    with app.app_context():
        audit.record("cli.command", actor="ops")
    (nightly, cli) = flushed(sink, audit)
    assert nightly["id"] == event_id and nightly["data"] == {"removed": 3}
    assert "request" not in nightly
    assert cli["context"] == {"actor": "ops"}


def test_record_before_init_app_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="init_app"):
        ImmutableLogAudit().record("x")


def test_logging_handler_inside_requests(sink: FakeLedger, make_app: MakeApp) -> None:
    app, audit = make_app()
    log = logging.getLogger("app.audit")
    log.setLevel(logging.INFO)
    handler = audit.logging_handler()
    log.addHandler(handler)

    @app.get("/log")
    def view() -> str:
        log.info("user exported data")
        return "ok"

    try:
        response = app.test_client().get("/log")
    finally:
        log.removeHandler(handler)
    logged, _ = flushed(sink, audit)
    assert logged["message"] == "user exported data"
    assert logged["_meta"]["request_id"] == response.headers["X-Request-Id"]


# -- the request path -------------------------------------------------------------------------


def test_requests_complete_while_the_server_is_still_answering(
    sink: FakeLedger, app_and_audit: tuple[Flask, ImmutableLogAudit]
) -> None:
    app, audit = app_and_audit
    sink.fail_next(1, Fault(hang=True))
    client = app.test_client()
    assert client.get("/ok").status_code == 200
    assert sink.wait_for(lambda: len(sink.requests) == 1), "the worker is inside the POST"
    for _ in range(20):  # every one of these returns while the sink holds its answer
        assert client.get("/ok").status_code == 200
    assert not sink.hang_release.is_set()
    sink.hang_release.set()
    assert len(flushed(sink, audit)) == 21


def test_requests_complete_during_an_outage(
    sink: FakeLedger, app_and_audit: tuple[Flask, ImmutableLogAudit]
) -> None:
    app, audit = app_and_audit
    sink.stop()
    client = app.test_client()
    for _ in range(30):
        assert client.get("/ok").status_code == 200
    sink.start()
    assert len(flushed(sink, audit)) == 30


def test_stats_are_readable(
    sink: FakeLedger, app_and_audit: tuple[Flask, ImmutableLogAudit]
) -> None:
    app, audit = app_and_audit
    app.test_client().get("/ok")
    flushed(sink, audit)
    stats = audit.stats().as_dict()
    assert {"queued", "sent", "retried", "spooled", "dead_lettered", "dropped"} <= set(stats)
    assert stats["queued"] == stats["sent"] == 1


def test_concurrent_requests_each_yield_one_event(
    sink: FakeLedger, app_and_audit: tuple[Flask, ImmutableLogAudit]
) -> None:
    app, audit = app_and_audit
    ids: list[str] = []
    lock = threading.Lock()

    def hammer() -> None:
        client = app.test_client()
        for _ in range(50):
            rid = client.get("/ok").headers["X-Request-Id"]
            with lock:
                ids.append(rid)

    threads = [threading.Thread(target=hammer) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    events = flushed(sink, audit)
    assert sorted(e["_meta"]["request_id"] for e in events) == sorted(ids)
    assert len(set(ids)) == 300


def test_a_bug_in_the_audit_layer_never_fails_the_request(
    sink: FakeLedger,
    app_and_audit: tuple[Flask, ImmutableLogAudit],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import immutablelog.wsgi as request_path

    app, audit = app_and_audit

    def broken(*args: object) -> str:
        raise RuntimeError("audit bug")

    monkeypatch.setattr(request_path, "RequestState", broken)
    monkeypatch.setattr(audit.pipeline(), "submit", broken)
    client = app.test_client()
    assert client.get("/ok").status_code == 200
    assert client.get("/boom").status_code == 500  # the app's own error, handled as usual
    assert sum("error in a request hook" in r.getMessage() for r in caplog.records) == 1
