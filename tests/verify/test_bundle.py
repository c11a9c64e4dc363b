"""``verify --bundle``: an export checked offline, and what tampering with one looks like."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
import pytest

from immutablelog.checkpoint import Signer
from immutablelog.verify import FindingKind, Status, verify_bundle
from immutablelog.verify import verify_remote as verify_log
from tests.live import LiveServer
from tests.verify.helpers import cli_json, client, ingest, run_cli, write_bundle


@pytest.fixture(scope="module")
def server(shared_server: LiveServer) -> LiveServer:
    ingest(shared_server, 40)
    return shared_server


def test_hand_written_bundle_verifies_with_a_pinned_key(server: LiveServer, tmp_path: Path) -> None:
    bundle = tmp_path / "b.jsonl"
    write_bundle(server, bundle)
    code, body = cli_json("verify", "--bundle", bundle, "--log-key", server.verifier_key)
    assert code == 0, body
    assert body["key_source"] == "pinned" and body["entries_checked"] == body["tree_size"]
    code, out, _err = run_cli("verify", "--bundle", bundle)
    assert code == 0 and "INTACT" in out and "came from the bundle itself" in out


def test_the_servers_own_export_verifies(server: LiveServer, tmp_path: Path) -> None:
    response = httpx.get(
        server.url + "/v1/export", headers=server.headers(server.read_key), timeout=60
    )
    assert response.status_code == 200
    bundle = tmp_path / "export.jsonl"
    bundle.write_bytes(response.content)
    report = verify_bundle(bundle, pinned_key=server.verifier_key)
    assert report.status is Status.INTACT, report.to_json()


def test_changed_line_is_tampered(server: LiveServer, tmp_path: Path) -> None:
    bundle = tmp_path / "b.jsonl"
    lines = write_bundle(server, bundle)
    lines[11] = lines[11].replace(b"svc", b"SVC", 1)
    bundle.write_bytes(b"\n".join(lines) + b"\n")
    code, body = cli_json("verify", "--bundle", bundle, "--log-key", server.verifier_key)
    assert code == 1 and [f["kind"] for f in body["findings"]] == ["root_mismatch"]


def test_deleted_line_is_a_missing_entry_at_its_index(server: LiveServer, tmp_path: Path) -> None:
    bundle = tmp_path / "b.jsonl"
    lines = write_bundle(server, bundle)
    del lines[1 + 9]
    bundle.write_bytes(b"\n".join(lines) + b"\n")
    report = verify_bundle(bundle, pinned_key=server.verifier_key)
    assert report.exit_code == 1
    assert [(f.kind, f.index) for f in report.findings] == [(FindingKind.MISSING_ENTRY, 9)]


def test_bundle_with_another_key_is_tampered(server: LiveServer, tmp_path: Path) -> None:
    forger = Signer.generate("immutablelog")
    bundle = tmp_path / "b.jsonl"
    lines = write_bundle(server, bundle)
    header = orjson.loads(lines[0])
    header["log_key"] = forger.verifier_key()
    header["checkpoint"] = forger.sign(header["checkpoint"].split("\n\n")[0] + "\n")
    bundle.write_bytes(b"\n".join([orjson.dumps(header), *lines[1:]]) + b"\n")
    assert verify_bundle(bundle).exit_code == 0  # consistent with itself, and only that
    report = verify_bundle(bundle, pinned_key=server.verifier_key)
    assert report.exit_code == 1
    kinds = [f.kind for f in report.findings]
    assert kinds == [FindingKind.WRONG_LOG_KEY, FindingKind.BAD_SIGNATURE]


def test_state_file_pinpoints_a_change_in_an_offline_bundle(
    server: LiveServer, tmp_path: Path
) -> None:
    state = tmp_path / "s.json"
    with client(server) as remote:
        first = verify_log(remote, state_path=state, pinned_key=server.verifier_key)
    assert first.status is Status.INTACT
    bundle = tmp_path / "b.jsonl"
    lines = write_bundle(server, bundle)
    lines[1 + 30] = lines[1 + 30].replace(b"svc", b"SVC", 1)
    bundle.write_bytes(b"\n".join(lines) + b"\n")
    report = verify_bundle(bundle, state_path=state)
    assert report.exit_code == 1 and report.key_source == "saved in the state file"
    history = [f for f in report.findings if f.kind is FindingKind.INCONSISTENT_HISTORY]
    assert history and history[0].index is not None and history[0].end is not None
    assert history[0].index <= 30 < history[0].end


def test_not_a_bundle_cannot_be_checked(tmp_path: Path) -> None:
    bogus = tmp_path / "x.jsonl"
    bogus.write_text('{"hello": 1}\n')
    code, body = cli_json("verify", "--bundle", bogus)
    assert code == 2 and body["error"]["reason"] == "bundle"


def test_bundle_checked_by_worker_processes(live_server: LiveServer, tmp_path: Path) -> None:
    ingest(live_server, 1500)
    bundle = tmp_path / "b.jsonl"
    write_bundle(live_server, bundle)
    report = verify_bundle(bundle, pinned_key=live_server.verifier_key, workers=2)
    assert report.status is Status.INTACT, report.to_json()
    assert report.entries_checked == report.tree_size
