"""``verify`` and ``prove`` against a real server process: trust, resume, errors, exit codes."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from immutablelog.checkpoint import Signer
from immutablelog.verify import (
    CouldNotCheck,
    FindingKind,
    LogClient,
    Status,
    load_state,
    prove_event,
)
from immutablelog.verify import verify_remote as verify_log
from tests.live import LiveServer, free_port
from tests.verify.helpers import (
    CountingTransport,
    binary_response,
    cli_json,
    client,
    decode_records_with_parts,
    ingest,
    run_cli,
)

OTHER_KEY = Signer.generate("immutablelog").verifier_key()


@pytest.fixture(scope="module")
def server(shared_server: LiveServer) -> LiveServer:
    ingest(shared_server, 60)
    return shared_server


def test_first_run_trusts_on_first_use_and_resume_fetches_only_new_entries(
    server: LiveServer, tmp_path: Path
) -> None:
    state_path = tmp_path / "state.json"
    with client(server) as first:
        report = verify_log(first, state_path=state_path)
    assert report.status is Status.INTACT, report.to_json()
    assert report.key_source == "trust on first use"
    assert report.log_key == server.verifier_key
    assert any("TRUST ON FIRST USE" in w for w in report.warnings)
    assert report.entries_checked == report.tree_size
    saved = load_state(state_path)
    assert saved is not None and saved.tree_size == report.tree_size
    assert saved.log_key == server.verifier_key and saved.origin == "immutablelog/default"

    ingest(server, 25)
    counting = CountingTransport()
    with LogClient(server.url, server.read_key, transport=counting) as second:
        again = verify_log(second, state_path=state_path)
    assert again.status is Status.INTACT, again.to_json()
    assert again.key_source == "saved in the state file" and again.warnings == []
    assert again.previous_size == saved.tree_size
    assert again.tree_size is not None
    new = again.tree_size - saved.tree_size
    assert new >= 25
    assert again.entries_checked == counting.entries_served == new
    assert "/v1/proofs/consistency" in counting.paths

    counting = CountingTransport()
    with LogClient(server.url, server.read_key, transport=counting) as third:
        idle = verify_log(third, state_path=state_path)
    assert idle.status is Status.INTACT and idle.entries_checked == counting.entries_served == 0


def test_cli_json_is_one_object_and_human_output_says_intact(
    server: LiveServer, tmp_path: Path
) -> None:
    args = ["verify", "--url", server.url, "--key", server.read_key]
    args += ["--log-key", server.verifier_key, "--state", str(tmp_path / "s.json")]
    code, body = cli_json(*args)
    assert code == 0 and body["status"] == "intact" and body["key_source"] == "pinned"
    assert body["state_saved"] is True and body["findings"] == []
    code, out, _ = run_cli(*args)
    assert code == 0 and "INTACT" in out


def test_wrong_pinned_key_is_a_bad_signature(server: LiveServer, tmp_path: Path) -> None:
    code, body = cli_json(
        "verify",
        "--url",
        server.url,
        "--key",
        server.read_key,
        "--log-key",
        OTHER_KEY,
        "--state",
        tmp_path / "s.json",
    )
    assert code == 1 and body["findings"][0]["kind"] == "bad_signature"
    assert not (tmp_path / "s.json").exists()


def test_wrong_tenant_is_a_wrong_origin(server: LiveServer, tmp_path: Path) -> None:
    code, body = cli_json(
        "verify",
        "--url",
        server.url,
        "--key",
        server.read_key,
        "--log-key",
        server.verifier_key,
        "--tenant",
        "payroll",
        "--state",
        tmp_path / "s.json",
    )
    assert code == 1 and [f["kind"] for f in body["findings"]] == ["wrong_origin"]


def test_state_pinning_another_key_cannot_be_overridden_silently(
    server: LiveServer, tmp_path: Path
) -> None:
    state = tmp_path / "s.json"
    base = ["verify", "--url", server.url, "--key", server.read_key, "--state", state]
    assert cli_json(*base)[0] == 0
    code, body = cli_json(*base, "--log-key", OTHER_KEY)
    assert code == 2 and body["error"]["reason"] == "bad_argument"


def test_network_down_is_could_not_check(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, body = cli_json(
        "verify",
        "--url",
        url,
        "--key",
        "iml_live_x",
        "--retries",
        "1",
        "--state",
        tmp_path / "s.json",
    )
    assert code == 2 and body["status"] == "error" and body["error"]["reason"] == "network"


@pytest.mark.parametrize("which", ["bogus", "ingest"])
def test_bad_or_unauthorized_key_is_could_not_check(
    server: LiveServer, tmp_path: Path, which: str
) -> None:
    key = "iml_live_" + "x" * 40 if which == "bogus" else server.ingest_key
    code, body = cli_json(
        "verify",
        "--url",
        server.url,
        "--key",
        key,
        "--log-key",
        server.verifier_key,
        "--state",
        tmp_path / "s.json",
    )
    assert code == 2 and body["error"]["reason"] == "auth"


def test_missing_url_is_a_usage_error() -> None:
    assert run_cli("verify")[0] == 2


def test_prove_checks_one_event_locally(server: LiveServer) -> None:
    code, body = cli_json(
        "prove",
        "7",
        "--url",
        server.url,
        "--key",
        server.read_key,
        "--log-key",
        server.verifier_key,
    )
    assert code == 0 and body["status"] == "intact"
    stored = orjson.loads(server.raw_entries()[7])
    assert body["event"]["id"] == stored["id"] and body["event"]["index"] == 7
    code, body = cli_json(
        "prove",
        "999999",
        "--url",
        server.url,
        "--key",
        server.read_key,
        "--log-key",
        server.verifier_key,
    )
    assert code == 2 and body["error"]["reason"] == "not_found"
    code, _out, err = run_cli("prove", "3", "--url", server.url, "--key", server.read_key)
    assert code == 0 and "TRUST ON FIRST USE" in err


def test_prove_by_event_id(server: LiveServer) -> None:
    stored = orjson.loads(server.raw_entries()[5])
    args = ("--url", server.url, "--key", server.read_key, "--log-key", server.verifier_key)
    code, body = cli_json("prove", stored["id"], *args)
    assert code == 0 and body["status"] == "intact"
    assert body["event"]["id"] == stored["id"] and body["event"]["index"] == 5
    code, body = cli_json("prove", "01a2b3c4-0000-7000-8000-000000000000", *args)
    assert code == 2 and body["error"]["reason"] == "not_found"


def test_prove_shows_an_erased_event_as_erased_not_tampered(live_server: LiveServer) -> None:
    # The erasure record is named inside the event the server answers ({"event": {...,
    # "erased": {"index": ...}}}): read at the top level, it was never found, and prove
    # called a lawful erasure missing_values (TAMPERED).
    sent = httpx.post(
        live_server.url + "/v1/events",
        json={"payload": '{"n": 1}', "meta": {"type": "info", "event_name": "user.updated",
                                              "service": "app", "actor": "42"}},
        headers=live_server.headers(**{"Idempotency-Key": "erase-me"}),
        timeout=30,
    )  # fmt: skip
    assert sent.status_code == 202, sent.text
    event_id, index = sent.json()["tx_id"], sent.json()["index"]
    erased = httpx.post(
        live_server.url + "/v1/erasures",
        json={"actor": "42", "reason": "GDPR Art. 17 request 7"},
        headers=live_server.headers(live_server.admin_key),
        timeout=30,
    )
    assert erased.status_code == 200, erased.text
    (record,) = erased.json()["records"]
    args = ("--url", live_server.url, "--key", live_server.read_key)
    for event in (event_id, str(index)):
        code, body = cli_json("prove", event, *args, "--log-key", live_server.verifier_key)
        assert code == 0 and body["status"] == "intact", body
        assert body["event"]["payload"] is None
        assert body["event"]["erased"]["index"] == record
        assert body["event"]["erased"]["reason"] == "GDPR Art. 17 request 7"
        assert body["erased_entries"] == 1


def test_prove_refuses_an_entry_that_is_not_the_event_asked_for(server: LiveServer) -> None:
    wanted = orjson.loads(server.raw_entries()[5])["id"]

    class Misdirecting(LogClient):
        def locate_event(self, event_id: str) -> int:
            return 6  # a lying server points at another event

    with Misdirecting(server.url, server.read_key) as client:
        report = prove_event(client, None, pinned_key=server.verifier_key, event_id=wanted)
    assert report.status == Status.TAMPERED
    assert report.findings[0].kind == FindingKind.ALTERED_ENTRY


def _rewriting(server: LiveServer, rewrite: Callable[[dict[str, object]], None]) -> LogClient:
    """A client whose server answers pages rewritten in flight (a man in the middle).

    ``rewrite`` edits the page as ``{"entries": [{"index": i, "entry": text, "part": bytes
    or None}, ...]}`` (``part``: the erasable part, salt then values).
    """

    class Rewriting(httpx.HTTPTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            response = super().handle_request(request)
            if request.url.path != "/v1/entries" or response.status_code != 200:
                return response
            items = decode_records_with_parts(response.read())
            body: dict[str, object] = {
                "entries": [{"index": i, "entry": d.decode(), "part": p} for i, d, p in items]
            }
            rewrite(body)
            entries: list[dict[str, Any]] = body["entries"]  # type: ignore[assignment]
            return binary_response(
                [(e["index"], e["entry"].encode(), e.get("part")) for e in entries]
            )

    return LogClient(server.url, server.read_key, transport=Rewriting())


def test_server_answering_short_pages_is_still_fully_checked(server: LiveServer) -> None:
    def truncate(body: dict[str, object]) -> None:
        entries = body["entries"]
        assert isinstance(entries, list)
        del entries[7:]

    with _rewriting(server, truncate) as short:
        report = verify_log(short, state_path=None, pinned_key=server.verifier_key)
    assert report.status is Status.INTACT, report.to_json()
    assert report.entries_checked == report.tree_size


def test_entry_altered_in_flight_is_pinpointed(server: LiveServer) -> None:
    def alter(body: dict[str, object]) -> None:
        for item in body["entries"]:  # type: ignore[attr-defined]
            if item["index"] == 21:
                item["entry"] = item["entry"].replace("svc", "SVC")

    with _rewriting(server, alter) as mitm:
        report = verify_log(mitm, state_path=None, pinned_key=server.verifier_key)
    assert report.status is Status.TAMPERED
    assert [(f.kind, f.index) for f in report.findings] == [(FindingKind.ALTERED_ENTRY, 21)]
    assert report.findings[0].entry_id == orjson.loads(server.raw_entries()[21])["id"]


def test_prove_detects_an_entry_altered_in_flight(server: LiveServer) -> None:
    def alter(body: dict[str, object]) -> None:
        for item in body["entries"]:  # type: ignore[attr-defined]
            item["entry"] = item["entry"].replace("svc", "SVC")

    with _rewriting(server, alter) as mitm:
        report = prove_event(mitm, 12, pinned_key=server.verifier_key)
    assert report.exit_code == 1
    assert [(f.kind, f.index) for f in report.findings] == [(FindingKind.ALTERED_ENTRY, 12)]


def test_parallel_workers_check_a_larger_log(live_server: LiveServer, tmp_path: Path) -> None:
    ingest(live_server, 2600)
    with client(live_server) as remote:
        report = verify_log(
            remote,
            state_path=tmp_path / "s.json",
            pinned_key=live_server.verifier_key,
            workers=2,
        )
    assert report.status is Status.INTACT, report.to_json()
    assert report.entries_checked == report.tree_size and report.tree_size > 2600
    assert report.root_hash == live_server.checkpoint().root_hash


def test_could_not_check_crosses_the_worker_process_boundary() -> None:
    # Workers fetch their own pages, so a network or auth failure is raised there.
    error = pickle.loads(pickle.dumps(CouldNotCheck("auth", "GET /v1/entries answered 401")))
    assert (error.reason, error.message) == ("auth", "GET /v1/entries answered 401")


def test_a_client_with_its_own_transport_is_not_shipped_to_workers(server: LiveServer) -> None:
    transport = CountingTransport()
    with LogClient(server.url, server.read_key, transport=transport) as counted:
        assert counted.settings is None
        report = verify_log(counted, state_path=None, pinned_key=server.verifier_key, workers=2)
    assert report.status is Status.INTACT, report.to_json()
    assert transport.entries_served == report.tree_size  # all fetched here, through it
