"""Viewer links: an admin's expiring, read-only token bound to a filter. The server keeps it
inside its filter on every endpoint it can reach, refuses it everywhere else, after expiry
and after revocation; creating and using one is recorded in the log. Run against a real
server (both backends for the core rules), and in Chromium from ``/#token=…``."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from playwright import sync_api as pw_sync
from playwright.sync_api import expect

from immutablelog.ledger.storage import EventQuery
from immutablelog.ledger.viewer_links import narrow
from tests.live import HTTP, LiveServer
from tests.postgres_fixture import postgres_database
from tests.test_cli import run_cli
from tests.viewer.conftest import Watched, screenshot, watch
from tests.viewer.test_viewer import SEEDED, post, seeded_event, stored

LINKS = "/v1/viewer-links"


def create(server: LiveServer, body: dict[str, Any], key: str | None = None) -> Any:
    return HTTP.post(server.url + LINKS, json=body, headers=server.headers(key or server.admin_key))


def link_token(server: LiveServer, filters: dict[str, str], seconds: int = 600) -> str:
    answer = create(server, {"filter": filters, "expires_in": seconds, "label": "customer 42"})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["token"])


def as_link(server: LiveServer, token: str, path: str, **params: Any) -> Any:
    return HTTP.get(server.url + path, params=params, headers=server.headers(token))


def admin_events(server: LiveServer, name: str) -> list[dict[str, Any]]:
    return [json.loads(e["payload"]) for e in stored(server, event_name=name)]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(postgres_database()) if request.param == "postgres" else None
        started = LiveServer(tmp_path_factory.mktemp("links") / "data", database_url=url)
        started.start()
        stack.callback(started.kill)
        post(started, [seeded_event(n) for n in range(SEEDED)])
        yield started


def test_a_link_sees_only_its_filter_whatever_it_asks(server: LiveServer) -> None:
    token = link_token(server, {"actor": "bob", "service": "billing"})
    mine = stored(server, actor="bob", service="billing")
    assert mine
    seen = as_link(server, token, "/v1/events", limit=1000).json()["events"]
    assert [e["id"] for e in seen] == [e["id"] for e in mine]
    # Widening attempts are conjunctions: never more than the link's events.
    for params in (
        {"actor": "alice"},
        {"service": "shop"},
        {"event_name": "order.*"},
        {"since": "2000-01-01T00:00:00Z"},
        {"type": "error"},
        {"q": "needle"},
    ):
        found = as_link(server, token, "/v1/events", limit=1000, **params)
        assert found.status_code == 200, found.text
        ids = {e["id"] for e in found.json()["events"]}
        assert ids <= {e["id"] for e in mine}, params
    counted = as_link(server, token, "/v1/event-counts").json()
    assert sum(b["total"] for b in counted["buckets"]) == len(mine)
    assert as_link(server, token, "/v1/event-counts", actor="alice").json()["buckets"] == []
    # One event: inside is served with its proof, outside is unknown.
    inside = as_link(server, token, f"/v1/events/{mine[0]['id']}")
    assert inside.status_code == 200 and inside.json()["index"] == mine[0]["index"]
    other = stored(server, actor="alice")[0]
    assert as_link(server, token, f"/v1/events/{other['id']}").status_code == 404
    # Entry bytes: only for entries inside the filter.
    index = mine[0]["index"]
    entries = as_link(server, token, "/v1/entries", start=index, end=index + 1)
    assert entries.status_code == 200 and len(entries.json()["entries"]) == 1
    refused = as_link(server, token, "/v1/entries", start=other["index"], end=other["index"] + 1)
    assert refused.status_code == 403 and refused.json()["reason"] == "outside_viewer_link"
    whole = as_link(server, token, "/v1/entries", start=0, end=50)
    assert whole.status_code == 403
    # What the browser needs to check an event names no event.
    assert as_link(server, token, "/v1/checkpoint").status_code == 200
    assert as_link(server, token, "/v1/proofs/consistency", first=1).status_code == 200
    # Everything else is refused.
    for path, params in (
        ("/v1/export", {}),
        ("/v1/verify", {}),
        ("/v1/proofs/inclusion", {"index": other["index"]}),
        (LINKS, {}),
        ("/tlog/default/checkpoint", {}),
    ):
        answer = as_link(server, token, path, **params)
        assert answer.status_code == 403, (path, answer.text)
        assert answer.json()["reason"] == "viewer_link_not_allowed"
    ingest = HTTP.post(
        server.url + "/v1/events",
        json={"payload": "{}", "meta": {"type": "info", "event_name": "x", "service": "y"}},
        headers=server.headers(token),
    )
    assert ingest.status_code == 403
    assert as_link(server, token, "/v1/events", tenant="other").status_code == 403


def test_creating_and_using_a_link_are_admin_events(server: LiveServer) -> None:
    answer = create(server, {"filter": {"event_name": "order.paid"}, "expires_in": 60})
    assert answer.status_code == 201, answer.text
    body = answer.json()
    token, prefix = body["token"], body["link"]["prefix"]
    assert token.startswith(prefix) and "token" not in json.dumps(
        HTTP.get(server.url + LINKS, headers=server.headers(server.admin_key)).json()
    )
    created = [e for e in admin_events(server, "immutablelog.viewer_link.created")]
    assert any(e["link"] == prefix and e["filter"] == {"event_name": "order.paid"} for e in created)
    assert not [
        e for e in admin_events(server, "immutablelog.viewer_link.used") if e["link"] == prefix
    ]
    as_link(server, token, "/v1/events")
    as_link(server, token, "/v1/events")  # recorded once, not per request
    used = [e for e in admin_events(server, "immutablelog.viewer_link.used") if e["link"] == prefix]
    assert len(used) == 1
    signed = HTTP.post(
        server.url + "/v1/viewer/access", json={"action": "sign_in"}, headers=server.headers(token)
    )
    assert signed.status_code == 201
    assert signed.json()["viewer_link"]["filter"] == {"event_name": "order.paid"}
    sign_ins = admin_events(server, "immutablelog.viewer.signed_in")
    assert sign_ins[0]["viewer_link"] == prefix and "key" not in sign_ins[0]


def test_a_link_stops_at_expiry_and_at_revocation(server: LiveServer) -> None:
    short = link_token(server, {"actor": "bob"}, seconds=1)
    assert as_link(server, short, "/v1/events").status_code == 200
    time.sleep(1.2)
    expired = as_link(server, short, "/v1/events")
    assert expired.status_code == 401
    assert expired.json() == {
        "ok": False,
        "reason": "expired_viewer_link",
        "message": expired.json()["message"],
    }
    assert as_link(server, short, "/v1/event-counts").status_code == 401

    token = link_token(server, {"actor": "bob"})
    prefix = token[:21]
    gone = HTTP.delete(server.url + f"{LINKS}/{prefix}", headers=server.headers(server.admin_key))
    assert gone.status_code == 200 and gone.json()["link"]["revoked_at"]
    refused = as_link(server, token, "/v1/events")
    assert refused.status_code == 401 and refused.json()["reason"] == "invalid_viewer_link"
    revoked = admin_events(server, "immutablelog.viewer_link.revoked")
    assert revoked[0]["link"] == prefix
    again = HTTP.delete(server.url + f"{LINKS}/nope", headers=server.headers(server.admin_key))
    assert again.status_code == 404


def test_only_admin_keys_make_links(server: LiveServer) -> None:
    body = {"filter": {"actor": "bob"}, "expires_in": 60}
    for key in (server.ingest_key, server.read_key):
        refused = create(server, body, key)
        assert refused.status_code == 403 and refused.json()["reason"] == "insufficient_scope"
        listed = HTTP.get(server.url + LINKS, headers=server.headers(key))
        assert listed.status_code == 403
    token = link_token(server, {"actor": "bob"})
    by_link = create(server, body, token)
    assert by_link.status_code == 403 and by_link.json()["reason"] == "viewer_link_not_allowed"
    assert HTTP.post(server.url + LINKS, json=body).status_code == 401


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"expires_in": 60}, 422),  # no filter: the whole log is not a link
        ({"filter": {}, "expires_in": 60}, 422),
        ({"filter": {"q": "x"}, "expires_in": 60}, 422),
        ({"filter": {"actor": "bob"}, "expires_in": 60, "scope": "admin"}, 422),
        ({"filter": {"type": "fatal"}, "expires_in": 60}, 422),
        ({"filter": {"event_name": "*"}, "expires_in": 60}, 422),
        ({"filter": {"since": "2026-01-01T00:00:00"}, "expires_in": 60}, 422),
        ({"filter": {"since": "9999-12-31T23:59:59-14:00"}, "expires_in": 60}, 422),
        ({"filter": {"actor": 42}, "expires_in": 60}, 422),
        ({"filter": {"actor": ""}, "expires_in": 60}, 422),
        ({"filter": {"actor": "a\u0000b"}, "expires_in": 60}, 422),
        ({"filter": {"actor": "x" * 1001}, "expires_in": 60}, 422),
        ({"filter": {"actor": ["bob", "alice"]}, "expires_in": 60}, 400),  # too deep
        ({"filter": ["actor", "bob"], "expires_in": 60}, 422),
        ({"filter": {"actor": "bob"}}, 422),
        ({"filter": {"actor": "bob"}, "expires_in": 0}, 422),
        ({"filter": {"actor": "bob"}, "expires_in": -5}, 422),
        ({"filter": {"actor": "bob"}, "expires_in": 1.5}, 422),
        ({"filter": {"actor": "bob"}, "expires_in": 60.0}, 201),  # a JSON integer
        ({"filter": {"actor": "bob"}, "expires_in": True}, 422),
        ({"filter": {"actor": "bob"}, "expires_in": "60"}, 422),
        ({"filter": {"actor": "bob"}, "expires_in": 2**63}, 422),
        ({"filter": {"actor": "bob"}, "expires_in": 366 * 86400 + 1}, 422),
        ({"filter": {"actor": "bob"}, "expires_in": 60, "label": 7}, 422),
        ({"filter": {"actor": "bob"}, "expires_in": 60, "label": "x" * 201}, 422),
        ({"filter": {"actor": "\u202e\u200bbob"}, "expires_in": 60, "label": "\u05e9"}, 201),
    ],
)
def test_hostile_link_requests_are_refused(
    server: LiveServer, body: dict[str, Any], status: int
) -> None:
    answer = create(server, body)
    assert answer.status_code == status, answer.text
    if status >= 400:
        assert answer.json()["ok"] is False


@pytest.mark.parametrize(
    "raw",
    [
        b'{"filter": {"actor": "bob", "actor": "alice"}, "expires_in": 60}',
        b'{"filter": {"actor": "bob"}, "expires_in": NaN}',
        b'{"filter": {"actor": {"deep": {"er": "x"}}}, "expires_in": 60}',
        b"[" * 5000 + b"]" * 5000,
        b"not json",
        b'{"filter": {"actor": "' + b"x" * 20_000 + b'"}, "expires_in": 60}',
    ],
)
def test_malformed_link_bodies_are_refused(server: LiveServer, raw: bytes) -> None:
    answer = HTTP.post(
        server.url + LINKS,
        content=raw,
        headers=server.headers(server.admin_key, **{"Content-Type": "application/json"}),
    )
    assert 400 <= answer.status_code < 500, answer.text
    assert answer.json()["ok"] is False


@pytest.mark.parametrize(
    "token",
    ["iml_view_", "iml_view_" + "A" * 43, "iml_view_" + "é" * 43, "iml_view_" + "A" * 5000],
)
def test_unknown_link_tokens_are_refused(server: LiveServer, token: str) -> None:
    answer = HTTP.get(
        server.url + "/v1/events",
        headers={"Authorization": f"Bearer {token}".encode()},  # type: ignore[dict-item]
    )
    assert answer.status_code == 401 and answer.json()["reason"] == "invalid_viewer_link"


def test_narrowing_never_widens() -> None:
    bound = EventQuery(actor="bob", event_name_prefix="order.", since="2026-01-01")
    assert narrow(bound, EventQuery(actor="alice")) is None
    assert narrow(bound, EventQuery(event_name="user.login")) is not None  # both apply in SQL
    assert narrow(bound, EventQuery(event_name_prefix="user.")) is None
    deeper = narrow(bound, EventQuery(event_name_prefix="order.paid"))
    assert deeper is not None and deeper.event_name_prefix == "order.paid"
    wider = narrow(bound, EventQuery(event_name_prefix="ord", since="2000-01-01", limit=5))
    assert wider is not None
    assert (wider.event_name_prefix, wider.since, wider.actor, wider.limit) == (
        "order.",
        "2026-01-01",
        "bob",
        5,
    )
    assert narrow(EventQuery(event_name="a"), EventQuery(event_name="b")) is None


def test_the_command_line_makes_lists_and_revokes_links(tmp_path: Path) -> None:
    server = LiveServer(tmp_path / "data")
    data = str(server.data_dir)
    made = run_cli(
        "viewer-links", "create", "--filter", "actor=42", "--filter", "service=billing",
        "--expires-in", "7d", "--label", "ACME", "--data-dir", data,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("iml_view_") and "not shown again" in made.stderr
    listed = run_cli("viewer-links", "list", "--json", "--data-dir", data)
    (link,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert link["filter"] == {"actor": "42", "service": "billing"} and token not in listed.stdout
    assert run_cli("viewer-links", "list", "--data-dir", data).stdout.startswith("PREFIX")
    revoked = run_cli("viewer-links", "revoke", link["prefix"], "--data-dir", data)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    for bad in (
        ["--filter", "q=x", "--expires-in", "1d"],
        ["--filter", "actor", "--expires-in", "1d"],
        ["--filter", "actor=1", "--expires-in", "soon"],
        ["--filter", "actor=1", "--expires-in", "٣d"],
    ):
        refused = run_cli("viewer-links", "create", *bad, "--data-dir", data)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    unknown = run_cli("viewer-links", "revoke", "iml_view_nope", "--data-dir", data)
    assert unknown.returncode == 1 and "no viewer link" in unknown.stderr


def test_a_link_opens_the_viewer_on_its_filter_until_it_expires(
    context: pw_sync.BrowserContext, tmp_path: Path
) -> None:
    server = LiveServer(tmp_path / "data")
    server.start()
    try:
        post(server, [seeded_event(n) for n in range(60)])
        answer = create(server, {"filter": {"actor": "bob"}, "expires_in": 20})
        token, expires_at = answer.json()["token"], answer.json()["link"]["expires_at"]
        mine = stored(server, actor="bob")
        viewer: Watched = watch(context, server.url)
        page = viewer.page
        page.goto(f"{server.url}/#token={token}")
        page.wait_for_selector("#pin:not([hidden])")
        assert token not in page.url and "#" not in page.url  # out of the address bar
        page.click("#pin-accept")
        page.wait_for_selector("#events tbody tr")
        expect(page.locator("#link-banner")).to_contain_text("actor=bob")
        expect(page.locator("#filters [name=actor]")).to_be_disabled()
        expect(page.locator("#int-server")).to_be_hidden()
        cells = page.locator("#events tbody tr td:first-child").all_inner_texts()
        assert [int(c) for c in cells] == [e["index"] for e in mine][:50]
        expect(page.locator("#chart-caption")).to_contain_text(f"{len(mine)} events")
        # Widening through the page's own URL changes nothing.
        page.goto(f"{server.url}/?actor=alice&service=shop")
        page.wait_for_selector("#events tbody tr")
        cells = page.locator("#events tbody tr td:first-child").all_inner_texts()
        assert {int(c) for c in cells} <= {e["index"] for e in mine}
        page.goto(f"{server.url}/?event={mine[0]['id']}")
        expect(page.locator("#badge")).to_have_class("badge verified", timeout=10_000)
        screenshot(viewer, "viewer-link")
        # Past expiry the server refuses it, and the page says so.
        ends = datetime.fromisoformat(expires_at.replace("Z", "+00:00"))
        time.sleep(max(0.0, (ends - datetime.now(UTC)).total_seconds()) + 0.5)
        page.goto(f"{server.url}/")
        expect(page.locator("#sign-in-error")).to_contain_text("expired_viewer_link")
        expect(page.locator("#sign-in")).to_be_visible()
        viewer.assert_quiet()
    finally:
        server.kill()
