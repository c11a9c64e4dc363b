"""The viewer in a real browser against a real server: sign-in, the pinned key, events,
filters in the URL, paging, live tail, export, and one event checked in the browser."""

from __future__ import annotations

import csv
import hashlib
import http.server
import io
import json
import re
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright import sync_api as pw_sync
from playwright.sync_api import expect

from immutablelog.checkpoint import Verifier
from immutablelog.entry import MAX_PAYLOAD_DEPTH
from immutablelog.merkle import leaf_hash
from tests.live import HTTP, LiveServer
from tests.viewer.conftest import Watched, open_event, screenshot, sign_in, watch

SEEDED = 120
HOSTILE_SCRIPT = "<script>alert('payload')</script>"
HOSTILE_IMG = "<img src=x onerror=alert('name')>"
RTL = "\u202eevil\u202c \u05e9\u05dc\u05d5\u05dd zero\u200bwidth"


def post(server: LiveServer, events: list[dict[str, Any]]) -> None:
    for event in events:
        event.setdefault("idempotency_key", str(uuid.uuid4()))
    response = HTTP.post(
        server.url + "/v1/events/batch",
        json={"events": events},
        headers=server.headers(server.ingest_key),
    )
    assert response.status_code == 200, response.text
    assert all(item["ok"] for item in response.json()["results"]), response.text


def seeded_event(n: int) -> dict[str, Any]:
    return {
        "payload": json.dumps({"n": n, "note": "needle" if n % 40 == 7 else f"event {n}"}),
        "meta": {
            "type": ("success", "info", "warning", "error")[n % 4],
            "event_name": f"order.{('created', 'paid', 'shipped')[n % 3]}",
            "service": "billing" if n % 2 else "shop",
            "env": "prod",
            "actor": "bob" if n % 5 == 0 else "alice",
            "request_id": f"req-{n // 3}",
        },
    }


def deep(levels: int) -> Any:
    value: Any = "bottom"
    for _ in range(levels):
        value = {"down": value}
    return value


HOSTILE = [
    {"payload": json.dumps({"html": HOSTILE_SCRIPT, "img": HOSTILE_IMG}),
     "meta": {"type": "error", "event_name": HOSTILE_IMG, "service": "hostile",
              "request_id": "javascript:alert(1)", "actor": HOSTILE_SCRIPT}},
    {"payload": json.dumps({"text": RTL * 3, "big": "x" * 11_500}),
     "meta": {"type": "info", "event_name": RTL, "service": "hostile"}},
    {"payload": json.dumps(deep(MAX_PAYLOAD_DEPTH)),  # as deep as the ledger takes
     "meta": {"type": "warning", "event_name": "deeply.nested", "service": "hostile"}},
    {"payload": json.dumps("a string <b>bold</b>"),
     "meta": {"type": "info", "event_name": "plain.text", "service": "hostile"}},
]  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    started = LiveServer(tmp_path_factory.mktemp("viewer") / "data")
    started.start()
    post(started, [seeded_event(n) for n in range(SEEDED)])
    post(started, [dict(e) for e in HOSTILE])
    try:
        yield started
    finally:
        started.kill()


@pytest.fixture
def viewer(context: pw_sync.BrowserContext, server: LiveServer) -> Watched:
    return watch(context, server.url)


def stored(server: LiveServer, **match: Any) -> list[dict[str, Any]]:
    """Entries as stored, newest first, restricted to those whose fields equal ``match``."""
    entries = server.entries(admin=True)
    return [e for e in reversed(entries) if all(e.get(k) == v for k, v in match.items())]


def shown_indexes(viewer: Watched) -> list[int]:
    cells = viewer.page.locator("#events tbody tr td:first-child").all_inner_texts()
    return [int(text) for text in cells]


def fingerprint(verifier_key: str) -> str:
    public = Verifier(verifier_key).public_key.public_bytes_raw()
    digest = hashlib.sha256(public).hexdigest()
    return " ".join(digest[i : i + 4] for i in range(0, 64, 4))


def test_first_sign_in_pins_the_key_and_the_read_key_stays_in_the_tab(
    viewer: Watched, server: LiveServer
) -> None:
    page = viewer.page
    before = len(access_events(server, "signed_in"))
    sign_in(viewer, server, pin=False)
    page.wait_for_selector("#pin:not([hidden])")
    # Access to the audit log is itself in the log, with the key's public prefix only.
    signed_in = access_events(server, "signed_in")
    assert len(signed_in) == before + 1
    assert (
        server.read_key.startswith(signed_in[-1]["key"]) and signed_in[-1]["key"] != server.read_key
    )
    expect(page.locator("#pin-key")).to_have_text(server.verifier_key)
    expect(page.locator("#pin-fingerprint")).to_have_text(fingerprint(server.verifier_key))
    screenshot(viewer, "pin")
    page.click("#pin-accept")
    expect(page.locator("#events tbody tr")).to_have_count(50)
    newest = stored(server)
    assert shown_indexes(viewer) == [e["index"] for e in newest[:50]]  # newest first
    expect(page.locator("#int-size")).to_have_text(str(len(newest)))
    screenshot(viewer, "events")

    pinned = page.evaluate("JSON.stringify(localStorage)")
    assert server.verifier_key in pinned and server.read_key not in pinned
    assert server.read_key in page.evaluate("JSON.stringify(sessionStorage)")
    assert page.context.cookies() == []
    assert server.read_key not in page.url
    assert server.read_key not in server.log()

    page.click("#sign-out")
    expect(page.locator("#sign-in")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0
    viewer.assert_quiet()


def test_a_wrong_key_is_refused(viewer: Watched, server: LiveServer) -> None:
    page = viewer.page
    before = len(access_events(server, "signed_in"))
    page.goto(server.url + "/")
    page.fill("#read-key", "il_not_a_key")
    page.click("#sign-in-form button[type=submit]")
    expect(page.locator("#sign-in-error")).to_contain_text("refused the key")
    page.fill("#read-key", server.ingest_key)
    page.click("#sign-in-form button[type=submit]")
    expect(page.locator("#sign-in-error")).to_contain_text("may not read the log")
    expect(page.locator("#events-view")).to_be_hidden()
    assert page.evaluate("sessionStorage.length") == 0
    assert len(access_events(server, "signed_in")) == before
    assert viewer.dialogs == [] and viewer.foreign_requests == []


def test_filters_live_in_the_url_and_pages_follow_the_cursor(
    viewer: Watched, server: LiveServer, context: pw_sync.BrowserContext
) -> None:
    page = viewer.page
    sign_in(viewer, server)
    form = page.locator("#filters")
    form.locator("[name=service]").fill("billing")
    form.locator("[name=type]").select_option("error")
    form.locator("button[type=submit]").click()
    expect(page).to_have_url(f"{server.url}/?service=billing&type=error")
    expected = stored(server, service="billing", type="error")
    expect(page.locator("#events tbody tr")).to_have_count(len(expected))
    assert shown_indexes(viewer) == [e["index"] for e in expected]

    # The same view from its URL, in another tab: it signs in again (the read key is the
    # tab's own), the pinned key is the browser's.
    shared = watch(context, server.url)
    sign_in(shared, server, "/?actor=alice&event_name=order.*", pin=False)
    expect(shared.page.locator("#filters [name=actor]")).to_have_value("alice")
    expected = stored(server, actor="alice")
    expected = [e for e in expected if e["event_name"].startswith("order.")]
    assert len(expected) > 50
    expect(shared.page.locator("#events tbody tr")).to_have_count(50)
    assert shown_indexes(shared) == [e["index"] for e in expected[:50]]
    shared.page.click("#older")
    expect(shared.page.locator("#page-label")).to_have_text("Page 2")
    assert shown_indexes(shared) == [e["index"] for e in expected[50:100]]
    shared.page.click("#newer")
    expect(shared.page.locator("#page-label")).to_have_text("Page 1")
    assert shown_indexes(shared) == [e["index"] for e in expected[:50]]

    # A time range, and full text.
    middle = stored(server, service="shop")[10]
    shared.page.goto(f"{server.url}/?service=shop&until={middle['received_at']}&q=needle")
    expected = [
        e for e in stored(server, service="shop")
        if e["received_at"] <= middle["received_at"] and "needle" in e["payload"]
    ]  # fmt: skip
    expect(shared.page.locator("#events tbody tr")).to_have_count(len(expected))
    shared.page.goto(f"{server.url}/?service=nothing-here")
    expect(shared.page.locator("#events-status")).to_have_text("No events match these filters.")
    viewer.assert_quiet()
    shared.assert_quiet()


def test_an_event_is_verified_in_the_browser_and_links_its_request(
    viewer: Watched, server: LiveServer
) -> None:
    page = viewer.page
    sign_in(viewer, server)
    target = stored(server, request_id="req-38")[0]
    page.locator(f"#events tbody tr[data-id='{target['id']}']").click()
    badge = page.wait_for_selector("#badge.verified, #badge.failed")
    assert badge is not None and "Verified in this browser" in badge.inner_text()
    assert f"entry {target['index']} is in the log's tree" in badge.inner_text()
    fields = page.locator("#detail-fields").inner_text()
    data = server.raw_entries()[target["index"]]
    assert target["id"] in fields and leaf_hash(data).hex() in fields
    expect(page.locator("#detail-payload")).to_contain_text('"note"')
    screenshot(viewer, "event")

    page.get_by_role("link", name="req-38").click()
    expect(page).to_have_url(f"{server.url}/?request_id=req-38")
    expected = stored(server, request_id="req-38")
    expect(page.locator("#events tbody tr")).to_have_count(len(expected))
    assert shown_indexes(viewer) == [e["index"] for e in expected]
    page.keyboard.press("/")
    expect(page.locator("#filters [name=q]")).to_be_focused()
    viewer.assert_quiet()


def test_live_tail_puts_new_events_on_top(viewer: Watched, server: LiveServer) -> None:
    page = viewer.page
    sign_in(viewer, server, "/?service=tail")
    expect(page.locator("#events-status")).to_have_text("No events match these filters.")
    page.check("#live-tail")
    post(server, [{"payload": "{}", "meta": {"type": "info", "event_name": "tail.first",
                                             "service": "tail"}}])  # fmt: skip
    expect(page.locator("#events tbody tr")).to_have_count(1)
    post(server, [{"payload": "{}", "meta": {"type": "info", "event_name": "tail.second",
                                             "service": "tail"}}])  # fmt: skip
    expect(page.locator("#events tbody tr")).to_have_count(2)
    expect(page.locator("#events tbody tr").first).to_contain_text("tail.second")
    viewer.assert_quiet()


def test_export_writes_the_current_filter(viewer: Watched, server: LiveServer) -> None:
    page = viewer.page
    sign_in(viewer, server, "/?actor=bob")
    expected = stored(server, actor="bob")
    expect(page.locator("#events tbody tr")).to_have_count(len(expected))
    with page.expect_download() as csv_download:
        page.click("#export-csv")
    rows = list(csv.DictReader(io.StringIO(csv_download.value.path().read_text())))
    assert [int(r["index"]) for r in rows] == [e["index"] for e in expected]
    assert [r["payload"] for r in rows] == [e["payload"] for e in expected]
    with page.expect_download() as jsonl_download:
        page.click("#export-jsonl")
    lines = jsonl_download.value.path().read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [e["id"] for e in expected]
    expect(page.locator("#export-status")).to_have_text(f"Exported {len(expected)} events.")
    exports = access_events(server, "exported")[-2:]
    assert [(e["format"], e["filters"]) for e in exports] == [
        ("csv", {"actor": "bob"}),
        ("jsonl", {"actor": "bob"}),
    ]
    viewer.assert_quiet()


def test_hostile_events_render_as_text_and_run_nothing(viewer: Watched, server: LiveServer) -> None:
    page = viewer.page
    sign_in(viewer, server, "/?service=hostile")
    expect(page.locator("#events tbody tr")).to_have_count(len(HOSTILE))
    table = page.locator("#events tbody")
    expect(table).to_contain_text(HOSTILE_IMG)
    expect(table).to_contain_text(HOSTILE_SCRIPT)
    expect(table).to_contain_text(RTL)
    for event in stored(server, service="hostile"):
        badge = open_event(viewer, server, event["id"])
        assert "Verified in this browser" in badge, badge
        expect(page.locator("#detail-title")).to_have_text(event["event_name"])
    screenshot(viewer, "hostile")
    assert page.locator("img, script:not([src])").count() == 0
    hrefs = page.locator("a").evaluate_all("links => links.map(a => a.href)")
    assert all(href.startswith(server.url) for href in hrefs), hrefs
    viewer.assert_quiet()


def test_a_phone_width_shows_the_events(browser: pw_sync.Browser, server: LiveServer) -> None:
    phone = browser.new_context(viewport={"width": 390, "height": 844}, color_scheme="dark")
    try:
        viewer = watch(phone, server.url)
        sign_in(viewer, server)
        expect(viewer.page.locator("#events tbody tr").first).to_be_visible()
        width = viewer.page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, "the page scrolls sideways"
        screenshot(viewer, "phone-dark")
        viewer.assert_quiet()
    finally:
        phone.close()


def test_pages_carry_a_strict_content_security_policy(server: LiveServer) -> None:
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    module = httpx.get(server.url + "/assets/verify.js")
    assert module.headers["content-type"].startswith("text/javascript")
    again = httpx.get(
        server.url + "/assets/verify.js", headers={"If-None-Match": module.headers["etag"]}
    )
    assert again.status_code == 304
    for missing in ("/assets/nope.js", "/assets/..%2fapp.py", "/assets/index.html"):
        response = httpx.get(server.url + missing)
        assert response.status_code == 404
        assert response.json()["ok"] is False


class _PrefixProxy(http.server.BaseHTTPRequestHandler):
    """A reverse proxy that serves the upstream under ``/audit/``, as nginx would with
    ``location /audit/ { proxy_pass http://upstream/; }``."""

    upstream = ""

    _FORWARDED = ("authorization", "accept", "content-type")
    _HOP_BY_HOP = ("content-length", "transfer-encoding", "connection", "content-encoding")

    def _forward(self) -> None:
        if not self.path.startswith("/audit/"):
            self.send_error(404)
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() in self._FORWARDED}
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        answer = HTTP.request(
            self.command, self.upstream + self.path[len("/audit") :], headers=headers, content=body
        )
        self.send_response(answer.status_code)
        for name, value in answer.headers.items():
            if name.lower() not in self._HOP_BY_HOP:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    do_GET = do_POST = _forward

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_the_viewer_works_under_a_path_prefix(
    context: pw_sync.BrowserContext, server: LiveServer
) -> None:
    handler = type("Proxy", (_PrefixProxy,), {"upstream": server.url})
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        origin = f"http://127.0.0.1:{proxy.server_address[1]}"
        viewer = watch(context, origin)
        viewer.page.goto(origin + "/audit/")
        viewer.page.fill("#read-key", server.read_key)
        viewer.page.click("#sign-in-form button[type=submit]")
        viewer.page.click("#pin-accept")
        row = viewer.page.locator("#events tbody tr").first
        row.click()
        expect(viewer.page.locator("#badge")).to_contain_text("Verified in this browser")
        assert viewer.page.url.startswith(origin + "/audit/?event=")
        viewer.assert_quiet()
    finally:
        proxy.shutdown()
        proxy.server_close()


def access_events(server: LiveServer, action: str) -> list[dict[str, Any]]:
    """The payloads of the viewer's access events of one kind, oldest first."""
    found = stored(server, event_name=f"immutablelog.viewer.{action}")
    return [json.loads(e["payload"]) for e in reversed(found)]


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b"[]", 422, "invalid_body"),
        (b"not json", 400, "malformed_json"),
        (b'{"action": "sign_in", "user": "x"}', 422, "invalid_field"),
        (b'{"action": "delete"}', 422, "invalid_field"),
        (b'{"action": "export"}', 422, "invalid_field"),
        (b'{"action": "export", "format": "xml"}', 422, "invalid_field"),
        (b'{"action": "export", "format": "csv", "filters": {"Bad": "x"}}', 422, "invalid_field"),
        (b'{"action": "export", "format": "csv", "filters": {"actor": 7}}', 422, "invalid_field"),
        (b'{"action": "export", "format": "csv", "filters": {"actor": ""}}', 422, "invalid_field"),
        (b'{"action": "export", "format": "csv", "filters": []}', 422, "invalid_field"),
        (
            json.dumps(
                {
                    "action": "export",
                    "format": "csv",
                    "filters": {f"f{chr(97 + i)}": "x" for i in range(17)},
                }
            ).encode(),
            422,
            "invalid_field",
        ),
        (
            json.dumps(
                {
                    "action": "export",
                    "format": "csv",
                    "filters": {f"f{chr(97 + i)}": "\u05e9" * 1000 for i in range(3)},
                },
                ensure_ascii=False,  # 6 KB here, past 12 KiB once escaped in the event
            ).encode(),
            422,
            "invalid_field",
        ),
        (b'{"action": "sign_in", "pad": "' + b"x" * 17_000 + b'"}', 413, "body_too_large"),
        (b'{"action": ' + b"[" * 3000 + b"]" * 3000 + b"}", None, None),
        (
            b'{"action": "export", "format": "csv", "filters": {"q": "a\\u0000b"}}',
            422,
            "invalid_field",
        ),
        # Values of any JSON kind where a name is expected (found by schemathesis).
        (b'{"action": "export", "format": {}, "filters": {}}', 422, "invalid_field"),
        (b'{"action": {}}', 422, "invalid_field"),
        (b'{"action": ["sign_in"]}', 422, "invalid_field"),
        (b'{"action": "export", "format": "csv", "filters": {"q": "\\ud800"}}', None, None),
    ],
)
def test_access_records_refuse_bad_input(
    server: LiveServer, body: bytes, status: int | None, reason: str | None
) -> None:
    response = HTTP.post(
        server.url + "/v1/viewer/access",
        content=body,
        headers=server.headers(server.read_key, **{"Content-Type": "application/json"}),
    )
    assert response.status_code < 500, response.text
    if status is not None:
        assert response.status_code == status, response.text
        answer = response.json()
        assert answer["ok"] is False and answer["reason"] == reason, answer


def test_access_records_need_a_read_key(server: LiveServer) -> None:
    url = server.url + "/v1/viewer/access"
    body = {"action": "sign_in"}
    assert HTTP.post(url, json=body).status_code == 401
    denied = HTTP.post(url, json=body, headers=server.headers(server.ingest_key))
    assert denied.status_code == 403 and denied.json()["reason"] == "insufficient_scope"
    before = len(access_events(server, "signed_in"))
    assert HTTP.post(url, json=body, headers=server.headers(server.read_key)).status_code == 201
    assert len(access_events(server, "signed_in")) == before + 1


def test_the_chart_counts_the_filtered_events_and_narrows_to_a_bar(
    viewer: Watched, server: LiveServer
) -> None:
    page = viewer.page
    sign_in(viewer, server, "/?service=shop")
    expected = stored(server, service="shop")
    expect(page.locator("#chart-caption")).to_contain_text(f"{len(expected)} events, per ")
    bars = page.locator("#chart .bar")
    titles = bars.locator("title").all_text_contents()
    assert sum(
        int(count)
        for title in titles
        for count in re.findall(r"(?:success|info|warning|error) (\d+)", title)
    ) == len(expected)
    bars.last.click()
    expect(page).to_have_url(re.compile(r"/\?service=shop&since=[^&]+&until=[^&]+$"))
    since = page.locator("#filters [name=since]").input_value()
    assert since, "the form shows the bar's time range"
    expect(page.locator("#events tbody tr").first).to_be_visible()
    viewer.assert_quiet()
