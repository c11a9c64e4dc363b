"""The Django middleware on real servers — gunicorn (WSGI, --preload, two workers) and uvicorn
(ASGI Django, the async middleware chain) — delivering to a real ledger server; and Django's own
test client, which must keep working with the middleware installed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.live import LiveServer, free_port, wait_healthy

SETTINGS = textwrap.dedent(
    """
    import os
    from immutablelog.sdk import DeliveryOptions

    SECRET_KEY = "test-only"
    DEBUG = False
    ALLOWED_HOSTS = ["*"]
    ROOT_URLCONF = "shop.urls"
    INSTALLED_APPS = []
    DATABASES = {}
    MIDDLEWARE = ["immutablelog.django.AuditMiddleware", "shop.views.Tagger"]


    def actor(request):
        if request.headers.get("X-User") == "unknown":
            raise LookupError("no such user")  # as a user lookup that fails would
        return request.headers.get("X-User")


    IMMUTABLELOG = {
        "service_name": "django-shop",
        "env": "test",
        "actor": actor,
        "delivery": DeliveryOptions(
            spool_dir=os.environ["SPOOL_DIR"],
            shutdown_timeout=20,
            batch_interval=float(os.environ.get("BATCH_INTERVAL", "0.2")),
        ),
    }
    """
)

VIEWS = textwrap.dedent(
    """
    from django.http import HttpResponse, StreamingHttpResponse

    class Tagger:
        # Another middleware, after ours: it may answer by itself.
        def __init__(self, get_response):
            self.get_response = get_response
        def __call__(self, request):
            if request.path == "/blocked":
                return HttpResponse("blocked", status=403)
            return self.get_response(request)

    def ok(request):
        request.imtbl_event_name = "page.viewed"
        return HttpResponse("ok")

    def boom(request):
        raise RuntimeError("the django view failed")

    def stream(request):
        return StreamingHttpResponse(f"chunk {n}\\n".encode() for n in range(5))

    def login(request):
        request.body
        return HttpResponse("no", status=401)
    """
)

URLS = textwrap.dedent(
    """
    from django.urls import path
    from shop import views

    urlpatterns = [
        path("ok", views.ok),
        path("boom", views.boom),
        path("stream", views.stream),
        path("login", views.login),
        path("healthz", views.ok),
    ]
    """
)

ENTRY_POINTS = textwrap.dedent(
    """
    import os
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
    from django.core.asgi import get_asgi_application
    from django.core.wsgi import get_wsgi_application
    wsgi = get_wsgi_application()
    asgi = get_asgi_application()
    """
)


@pytest.fixture
def project(tmp_path: Path, live_server: LiveServer) -> dict[str, str]:
    package = tmp_path / "shop"
    package.mkdir()
    for name, text in {
        "__init__.py": "",
        "settings.py": SETTINGS,
        "views.py": VIEWS,
        "urls.py": URLS,
        "entry.py": ENTRY_POINTS,
    }.items():
        (package / name).write_text(text)
    return {
        **os.environ,
        "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "DJANGO_SETTINGS_MODULE": "shop.settings",
        "IMMUTABLELOG_URL": live_server.url,
        "IMMUTABLELOG_API_KEY": live_server.ingest_key,
        "SPOOL_DIR": str(tmp_path / "spool"),
        "BATCH_INTERVAL": "60",  # events wait in memory until flushed, closed or drained
    }


SERVERS = {
    "gunicorn-sync": lambda port: [
        sys.executable, "-m", "gunicorn", "--preload", "--workers", "2",
        "--bind", f"127.0.0.1:{port}", "shop.entry:wsgi",
    ],
    "uvicorn-asgi": lambda port: [
        sys.executable, "-m", "uvicorn", "--port", str(port), "--no-proxy-headers",
        "shop.entry:asgi",
    ],
}  # fmt: skip


def by_request_id(server: LiveServer, request_id: str) -> list[dict[str, Any]]:
    return [e for e in server.entries() if e.get("request_id") == request_id]


@pytest.mark.parametrize("kind", sorted(SERVERS))
def test_one_event_per_request_on_a_real_server(
    live_server: LiveServer, project: dict[str, str], kind: str
) -> None:
    port = free_port()
    server = subprocess.Popen(
        SERVERS[kind](port), env=project, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(server, url, 30, lambda: "(its output is not kept)")
        for n in range(10):
            answer = httpx.get(url + "/ok", headers={"X-Request-Id": f"dj-{n}", "X-User": "ann"})
            assert answer.text == "ok" and answer.headers["x-request-id"] == f"dj-{n}"
        assert httpx.get(url + "/boom", headers={"X-Request-Id": "dj-boom"}).status_code == 500
        assert (
            httpx.get(url + "/blocked", headers={"X-Request-Id": "dj-blocked"}).status_code == 403
        )
        assert httpx.get(url + "/missing", headers={"X-Request-Id": "dj-404"}).status_code == 404
        streamed = httpx.get(url + "/stream", headers={"X-Request-Id": "dj-stream"})
        assert streamed.text.count("chunk") == 5
        login = httpx.post(
            url + "/login",
            json={"user": "ann", "password": "hunter2"},
            headers={"X-Request-Id": "dj-login", "X-Forwarded-For": "6.6.6.6"},
        )
        assert login.status_code == 401
        assert httpx.get(url + "/healthz", headers={"X-Request-Id": "dj-skip"}).text == "ok"
    finally:
        # Every event is still in memory (BATCH_INTERVAL): the SDK drains its queue on the way
        # out — at exit under gunicorn; under uvicorn, which re-raises SIGTERM once it has shut
        # down (ASGI Django has no lifespan to flush in), before that signal takes effect.
        server.send_signal(signal.SIGTERM)
        status = server.wait(60)
    assert status == (-signal.SIGTERM if kind == "uvicorn-asgi" else 0)
    ids = [f"dj-{n}" for n in range(10)]
    for request_id in [*ids, "dj-boom", "dj-blocked", "dj-404", "dj-stream", "dj-login"]:
        assert len(by_request_id(live_server, request_id)) == 1, request_id
    assert not by_request_id(live_server, "dj-skip")
    (page,) = by_request_id(live_server, "dj-0")
    assert (page["event_name"], page["service"], page["env"]) == (
        "page.viewed",
        "django-shop",
        "test",
    )
    assert json.loads(page["payload"])["context"]["actor"] == "ann"
    (boom,) = by_request_id(live_server, "dj-boom")
    assert boom["type"] == "error" and "RuntimeError" in boom["payload"]
    login_payload = by_request_id(live_server, "dj-login")[0]["payload"]
    assert json.loads(login_payload)["context"]["ip"] == "127.0.0.1"
    assert "hunter2" not in login_payload and "ann" in login_payload


CLIENT_CHECK = textwrap.dedent(
    """
    import asyncio
    import django
    django.setup()
    from django.conf import settings
    from django.test import AsyncClient, Client
    from immutablelog.django import AuditMiddleware

    sync = Client().get("/ok", HTTP_X_REQUEST_ID="client-sync")
    assert sync.status_code == 200 and sync["X-Request-Id"] == "client-sync", sync
    async def run():
        return await AsyncClient().get("/ok", headers={"X-Request-Id": "client-async"})
    answer = asyncio.run(run())
    assert answer.status_code == 200 and answer["X-Request-Id"] == "client-async", answer
    failing = Client().get("/ok", HTTP_X_REQUEST_ID="client-no-actor", HTTP_X_USER="unknown")
    assert failing.status_code == 200, failing
    """
)


def test_djangos_test_clients_keep_working(
    live_server: LiveServer, project: dict[str, str]
) -> None:
    result = subprocess.run(
        [sys.executable, "-c", CLIENT_CHECK], env=project, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    for request_id in ("client-sync", "client-async", "client-no-actor"):
        assert len(by_request_id(live_server, request_id)) == 1, request_id
    # An actor function that raises leaves the actor out of the event, not the event out.
    (event,) = by_request_id(live_server, "client-no-actor")
    assert "actor" not in json.loads(event["payload"])["context"]
    assert "the actor function raised" in result.stderr


def test_unknown_settings_are_refused(project: dict[str, str]) -> None:
    check = (
        "import django; from django.conf import settings; "
        "settings.IMMUTABLELOG['servce_name'] = 'typo'; django.setup(); "
        "from immutablelog.django import AuditMiddleware; AuditMiddleware(lambda r: None)"
    )
    result = subprocess.run(
        [sys.executable, "-c", check], env=project, capture_output=True, text=True
    )
    assert result.returncode != 0 and "unknown IMMUTABLELOG settings: servce_name" in result.stderr
