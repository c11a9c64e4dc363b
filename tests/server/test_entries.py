"""``GET /v1/entries``: JSON items, or length-prefixed binary records on request."""

from __future__ import annotations

import httpx
import pytest

from immutablelog.entry import ENTRIES_MEDIA_TYPE, validate_submission
from immutablelog.ledger import DEFAULT_TENANT, Ledger
from immutablelog.server import read
from immutablelog.server.read import accepts_binary
from tests.live import LiveServer
from tests.server.test_bad_input import assert_error
from tests.verify.helpers import decode_records as records
from tests.verify.helpers import ingest


def get(server: LiveServer, path: str, accept: str) -> httpx.Response:
    return httpx.get(
        server.url + path, headers=server.headers(server.read_key, Accept=accept), timeout=10
    )


def test_binary_records_are_the_stored_bytes(live_server: LiveServer) -> None:
    ingest(live_server, 30)
    stored = live_server.raw_entries()
    response = get(live_server, "/v1/entries?start=3&end=20", ENTRIES_MEDIA_TYPE)
    assert response.status_code == 200
    assert response.headers["content-type"] == ENTRIES_MEDIA_TYPE
    assert records(response.content) == [(i, stored[i]) for i in range(3, 20)]
    # Without the header (or preferring JSON only), the JSON page as before.
    body = get(live_server, "/v1/entries?start=3&end=5", "application/json").json()
    assert body["start"] == 3
    assert [(e["index"], e["entry"]) for e in body["entries"]] == [
        (i, stored[i].decode()) for i in (3, 4)
    ]
    # Past the end: an empty page, not an error.
    assert get(live_server, "/v1/entries?start=500", ENTRIES_MEDIA_TYPE).content == b""


def test_binary_page_holds_more_than_a_json_page(live_server: LiveServer) -> None:
    ingest(live_server, 1500)
    size = len(live_server.raw_entries())
    binary = get(live_server, "/v1/entries?start=0&end=99999", ENTRIES_MEDIA_TYPE)
    assert [i for i, _ in records(binary.content)] == list(range(size))
    json_page = get(live_server, "/v1/entries?start=0&end=99999", "application/json")
    assert len(json_page.json()["entries"]) == 1000


@pytest.mark.parametrize(
    "path", ["/v1/entries?start=5&end=1", "/v1/entries?start=x", "/v1/entries?end=-1"]
)
def test_bad_input_is_a_json_error_even_when_binary_is_asked_for(
    shared_server: LiveServer, path: str
) -> None:
    assert_error(get(shared_server, path, ENTRIES_MEDIA_TYPE), 400)


def test_binary_needs_a_read_key(shared_server: LiveServer) -> None:
    response = httpx.get(
        shared_server.url + "/v1/entries",
        headers=shared_server.headers(Accept=ENTRIES_MEDIA_TYPE),
        timeout=10,
    )
    assert_error(response, 403, "insufficient_scope")


@pytest.mark.parametrize(
    ("accept", "binary"),
    [
        ("application/octet-stream", True),
        ("application/json, application/octet-stream;q=0.5", True),
        ("Application/Octet-Stream ; q=1", True),
        ("application/octet-stream;q=0", False),
        ("application/octet-stream;q=nonsense", False),
        ("application/json", False),
        ("*/*", False),
        ("", False),
    ],
)
def test_accept_header_negotiation(accept: str, binary: bool) -> None:
    assert accepts_binary(accept) is binary


def test_binary_page_stops_at_the_byte_cap(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    tenant = ledger.tenant(DEFAULT_TENANT)
    meta = {"type": "info", "event_name": "e", "service": "s"}
    subs = [validate_submission(f'{{"n": {n}}}', meta, f"k{n}") for n in range(5)]
    ledger.submit(tenant, subs).result(10)
    size = ledger.checkpoint(tenant).size
    assert len(records(read._entry_records(ledger, tenant, 0, size))) == size
    first = next(ledger.entries(tenant, 0, 1)).data
    monkeypatch.setattr(read, "MAX_BINARY_PAGE_BYTES", len(first) + 1)
    # The first record stays under the cap, the second crosses it: the page ends there.
    assert [i for i, _ in records(read._entry_records(ledger, tenant, 0, size))] == [0, 1]
