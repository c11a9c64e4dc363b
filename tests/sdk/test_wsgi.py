"""The WSGI middleware on a real pre-forking gunicorn (``--preload``, two workers), delivering to
a real ledger server: one event per request, exceptions and streams included, across forks."""

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

from tests.live import LiveServer, free_port, wait_healthy

APP = textwrap.dedent(
    """
    import os
    from immutablelog.sdk import DeliveryOptions
    from immutablelog.wsgi import AuditMiddleware

    def app(environ, start_response):
        path = environ["PATH_INFO"]
        if path == "/boom":
            raise RuntimeError("the wsgi view failed")
        if path == "/stream":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return (f"chunk {n}\\n".encode() for n in range(5))
        if path == "/login":
            environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"]))
            start_response("401 Unauthorized", [("X-Request-Id", "set-by-app")])
            return [b"no"]
        environ["immutablelog.event_name"] = "page.viewed"
        environ["immutablelog.actor"] = {"id": "user-9", "token": "t0ps3cret"}
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    application = AuditMiddleware(
        app,
        service_name="wsgi-shop",
        delivery=DeliveryOptions(spool_dir=os.environ["SPOOL_DIR"], shutdown_timeout=20),
    )
    """
)


def by_request_id(server: LiveServer, request_id: str) -> list[dict[str, Any]]:
    return [e for e in server.entries() if e.get("request_id") == request_id]


def test_gunicorn_preload_two_workers_one_event_per_request(
    live_server: LiveServer, tmp_path: Path
) -> None:
    (tmp_path / "wsgi_shop.py").write_text(APP)
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "IMMUTABLELOG_URL": live_server.url,
        "IMMUTABLELOG_API_KEY": live_server.ingest_key,
        "SPOOL_DIR": str(tmp_path / "spool"),
    }
    gunicorn = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--preload", "--workers", "2",
         "--bind", f"127.0.0.1:{port}", "wsgi_shop:application"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(gunicorn, url, 30, lambda: "(its output is not kept)")
        ids = [f"wsgi-{n}" for n in range(40)]
        for request_id in ids:
            assert httpx.get(url + "/", headers={"X-Request-Id": request_id}).text == "ok"
        assert httpx.get(url + "/boom", headers={"X-Request-Id": "wsgi-boom"}).status_code == 500
        streamed = httpx.get(url + "/stream", headers={"X-Request-Id": "wsgi-stream"})
        assert streamed.text.count("chunk") == 5
        login = httpx.post(
            url + "/login",
            json={"user": "ann", "password": "hunter2"},
            headers={"X-Request-Id": "wsgi-login", "X-Forwarded-For": "6.6.6.6"},
        )
        assert login.headers["x-request-id"] == "wsgi-login"  # the app's own value replaced
    finally:
        gunicorn.send_signal(signal.SIGTERM)  # workers drain their queues at exit
        assert gunicorn.wait(60) == 0
    for request_id in [*ids, "wsgi-boom", "wsgi-stream", "wsgi-login"]:
        assert len(by_request_id(live_server, request_id)) == 1, request_id
    (page,) = by_request_id(live_server, "wsgi-0")
    assert page["event_name"] == "page.viewed" and page["service"] == "wsgi-shop"
    assert "t0ps3cret" not in page["payload"]
    boom = by_request_id(live_server, "wsgi-boom")[0]
    assert boom["type"] == "error" and "RuntimeError" in boom["payload"]
    login_event = json.loads(by_request_id(live_server, "wsgi-login")[0]["payload"])
    assert login_event["context"]["ip"] == "127.0.0.1"  # X-Forwarded-For not trusted
    assert "hunter2" not in json.dumps(login_event) and "ann" in json.dumps(login_event)
