"""Tamper drills: an attacker with the database file, against the independent verifier.

Each drill stops a real server, edits its SQLite file directly — past the API and past the
append-only triggers, which the attacker drops — starts it again, and runs ``immutablelog
verify``. Every drill must end in exit code 1 with the damage pinpointed (index, entry id).

The rewrite drill is the one that matters most: the attacker replaces the whole history and
recomputes every leaf, node and checkpoint signature with the server's own key, so every check
the server can make of itself passes. Only a verifier that remembers a checkpoint it checked
earlier can tell. (Drills that change only an indexed column belong to the server-side check,
``GET /v1/verify``: the independent verifier never sees columns, only entry bytes.)
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from immutablelog.checkpoint import Checkpoint, Signer
from immutablelog.entry import build_entry, encode_entry, new_entry_ids, timestamp
from immutablelog.entry import validate_submission as submission_for
from immutablelog.merkle import CompactRange, leaf_hash, root_from_leaves
from immutablelog.verify import FindingKind, Status, download, verify_remote
from tests.live import LiveServer
from tests.verify.helpers import cli_json, client, ingest

TRIGGERS = (
    "entries_no_update",
    "entries_no_delete",
    "nodes_no_update",
    "nodes_no_delete",
    "checkpoints_no_update",
    "checkpoints_no_delete",
    "checkpoints_cover_entries",
    "checkpoints_grow",
    "erasables_no_update",
)
EVENTS = 40


@pytest.fixture
def server(live_server: LiveServer) -> Iterator[LiveServer]:
    ingest(live_server, EVENTS)
    yield live_server


def tamper(server: LiveServer, attack: Callable[[sqlite3.Connection, int], None]) -> None:
    """Stop the server (it caches the tree frontier), edit the file as an attacker, restart."""
    server.stop()
    conn = sqlite3.connect(server.data_dir / "ledger.db")
    try:
        for trigger in TRIGGERS:
            conn.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        (tenant_id,) = conn.execute("SELECT id FROM tenants WHERE name = 'default'").fetchone()
        attack(conn, tenant_id)
        conn.commit()
    finally:
        conn.close()
    server.start()


def verify(server: LiveServer, *extra: str | Path) -> tuple[int, dict[str, Any]]:
    return cli_json(
        "verify", "--url", server.url, "--key", server.read_key,
        "--log-key", server.verifier_key, *extra,
    )  # fmt: skip


def stored_id(server: LiveServer, index: int) -> str:
    return str(orjson.loads(server.raw_entries()[index])["id"])


def kinds_at(body: dict[str, Any]) -> list[tuple[str, int | None]]:
    return [(f["kind"], f.get("index")) for f in body["findings"]]


def forged_row(tenant_id: int, index: int) -> tuple[Any, ...]:
    submission = submission_for(
        '{"transfer": "1000000 to attacker"}',
        {"type": "success", "event_name": "payment.sent", "service": "svc"},
        str(uuid.uuid4()),
    )
    (entry_id,) = new_entry_ids(1)
    received = timestamp()
    data = encode_entry(
        build_entry(submission, tenant="default", index=index, entry_id=entry_id,
                    received_at=received)
    )  # fmt: skip
    assert submission.erasable is not None
    return (
        tenant_id, index, entry_id, received, "success", "payment.sent", "svc", None, None,
        None, submission.idempotency_key, data, leaf_hash(data), submission.erasable.salt,
        submission.erasable.values,
    )  # fmt: skip


def insert_row(conn: sqlite3.Connection, row: tuple[Any, ...]) -> None:
    """The forged entry and its erasable part, as a thorough attacker writes them."""
    conn.execute(
        "INSERT INTO entries (tenant_id, idx, id, received_at, type, event_name, service, env, "
        "request_id, actor, idempotency_key, entry, leaf) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        row[:13],
    )
    conn.execute("INSERT INTO erasables VALUES (?, ?, ?, ?)", (row[0], row[1], *row[13:]))


def shift_indexes(conn: sqlite3.Connection, tenant_id: int, start: int, by: int) -> None:
    # Two passes through negative numbers: a one-step UPDATE would collide on the primary key.
    # The erasable parts move with their entries.
    for table in ("entries", "erasables"):
        conn.execute(
            f"UPDATE {table} SET idx = -idx - 1 WHERE tenant_id = ? AND idx >= ?",
            (tenant_id, start),
        )
        conn.execute(
            f"UPDATE {table} SET idx = -idx - 1 + ? WHERE tenant_id = ? AND idx < 0",
            (by, tenant_id),
        )


def alter_payload(conn: sqlite3.Connection, tenant_id: int, index: int) -> None:
    """Change one byte of an entry's payload ("event" -> "Event"), keeping its length: in
    its erasable part, where a format 2 entry's payload is."""
    (data,) = conn.execute(
        "SELECT erasable_values FROM erasables WHERE tenant_id = ? AND idx = ?",
        (tenant_id, index),
    ).fetchone()
    changed = bytes(data).replace(b'\\"event ', b'\\"Event ', 1)
    assert len(changed) == len(data) and changed != data
    conn.execute(
        "UPDATE erasables SET erasable_values = ? WHERE tenant_id = ? AND idx = ?",
        (changed, tenant_id, index),
    )


def test_one_changed_payload_byte_is_pinpointed(server: LiveServer, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    assert verify(server, "--state", state)[0] == 0
    victim = 17
    victim_id = stored_id(server, victim)

    tamper(server, lambda conn, tenant_id: alter_payload(conn, tenant_id, victim))
    for extra in (
        ["--state", state, "--full"],
        ["--state", tmp_path / "fresh.json"],
        ["--state", tmp_path / "parallel.json", "--workers", "2"],  # workers fetch pages
    ):
        code, body = verify(server, *extra)
        assert code == 1, body
        assert kinds_at(body) == [("altered_values", victim)]
        assert body["findings"][0]["entry_id"] == victim_id
        assert body["state_saved"] is False


def test_workers_checking_runs_of_pages_pinpoint_an_altered_entry(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tiny pages, so that each worker fetches a run of several while checking the previous.
    monkeypatch.setattr(download, "PAGE_SIZE", 4)
    with client(server) as remote:
        report = verify_remote(remote, state_path=None, pinned_key=server.verifier_key, workers=2)
    assert report.status is Status.INTACT, report.to_json()
    assert report.entries_checked == report.tree_size > 8 * 4

    victim = 29  # in the middle of a run: page 7, the second of its run of two

    tamper(server, lambda conn, tenant_id: alter_payload(conn, tenant_id, victim))
    with client(server) as remote:
        report = verify_remote(remote, state_path=None, pinned_key=server.verifier_key, workers=2)
    assert report.exit_code == 1
    assert [(f.kind, f.index) for f in report.findings] == [(FindingKind.ALTERED_VALUES, victim)]


def test_deleted_entry_is_pinpointed(server: LiveServer, tmp_path: Path) -> None:
    def attack(conn: sqlite3.Connection, tenant_id: int) -> None:
        conn.execute("DELETE FROM entries WHERE tenant_id = ? AND idx = 23", (tenant_id,))

    tamper(server, attack)
    for workers in ("1", "2"):
        code, body = verify(server, "--state", tmp_path / "s.json", "--workers", workers)
        assert code == 1
        assert kinds_at(body) == [("missing_entry", 23)]


def test_deleted_and_renumbered_entry_is_pinpointed(server: LiveServer, tmp_path: Path) -> None:
    def attack(conn: sqlite3.Connection, tenant_id: int) -> None:
        for table in ("entries", "erasables"):
            conn.execute(f"DELETE FROM {table} WHERE tenant_id = ? AND idx = 23", (tenant_id,))
        shift_indexes(conn, tenant_id, 24, -1)

    tamper(server, attack)
    code, body = verify(server, "--state", tmp_path / "s.json")
    assert code == 1
    assert kinds_at(body)[0] == ("missing_entry", 23)


def test_inserted_forged_entry_is_pinpointed(server: LiveServer, tmp_path: Path) -> None:
    at = 12
    forged: list[str] = []

    def attack(conn: sqlite3.Connection, tenant_id: int) -> None:
        shift_indexes(conn, tenant_id, at, +1)
        row = forged_row(tenant_id, at)
        forged.append(row[2])
        insert_row(conn, row)

    tamper(server, attack)
    code, body = verify(server, "--state", tmp_path / "s.json")
    assert code == 1
    first = body["findings"][0]
    assert (first["kind"], first["index"], first["entry_id"]) == ("extra_entry", at, forged[0])


def test_entry_appended_behind_the_signed_tree_is_pinpointed(
    server: LiveServer, tmp_path: Path
) -> None:
    size = server.checkpoint().size
    forged: list[str] = []

    def attack(conn: sqlite3.Connection, tenant_id: int) -> None:
        row = forged_row(tenant_id, size)
        forged.append(row[2])
        insert_row(conn, row)

    tamper(server, attack)
    code, body = verify(server, "--state", tmp_path / "s.json")
    assert code == 1
    assert kinds_at(body) == [("extra_entry", size)]
    assert body["findings"][0]["entry_id"] == forged[0]


def test_swapped_entries_are_pinpointed(server: LiveServer, tmp_path: Path) -> None:
    first, second = 9, 30
    ids = (stored_id(server, first), stored_id(server, second))

    def attack(conn: sqlite3.Connection, tenant_id: int) -> None:
        for table in ("entries", "erasables"):  # each part moves with its entry
            swap = f"UPDATE {table} SET idx = ? WHERE tenant_id = ? AND idx = ?"
            conn.execute(swap, (-1, tenant_id, first))
            conn.execute(swap, (first, tenant_id, second))
            conn.execute(swap, (second, tenant_id, -1))

    tamper(server, attack)
    code, body = verify(server, "--state", tmp_path / "s.json")
    assert code == 1
    assert kinds_at(body) == [("wrong_index", first), ("wrong_index", second)], body
    assert [f["entry_id"] for f in body["findings"]] == [ids[1], ids[0]]


def rewrite_history(conn: sqlite3.Connection, tenant_id: int, signer: Signer) -> None:
    """Forge every entry, then recompute every leaf, node and checkpoint, and re-sign."""
    rows = conn.execute(
        "SELECT idx, entry FROM entries WHERE tenant_id = ? ORDER BY idx", (tenant_id,)
    ).fetchall()
    leaves: list[bytes] = []
    tree = CompactRange()
    nodes: list[tuple[int, int, bytes]] = []
    for idx, data in rows:
        entry = orjson.loads(data)
        if "payload" in entry:  # the log's own records hold theirs
            entry["payload"] = entry["payload"].replace("event", "forged")
        else:  # a format 2 entry commits to its payload: forge what it holds in clear
            entry["event_name"] = "forged." + entry["event_name"]
        forged = encode_entry(entry)
        leaf = leaf_hash(forged)
        leaves.append(leaf)
        nodes += [(lv, i, h) for (lv, i), h in tree.append(leaf)[1:]]
        conn.execute(
            "UPDATE entries SET entry = ?, leaf = ?, event_name = ? "
            "WHERE tenant_id = ? AND idx = ?",
            (forged, leaf, entry["event_name"], tenant_id, idx),
        )
    conn.execute("DELETE FROM nodes WHERE tenant_id = ?", (tenant_id,))
    conn.executemany(
        "INSERT INTO nodes (tenant_id, level, idx, hash) VALUES (?, ?, ?, ?)",
        [(tenant_id, lv, i, h) for lv, i, h in nodes],
    )
    for (size,) in conn.execute(
        "SELECT size FROM checkpoints WHERE tenant_id = ?", (tenant_id,)
    ).fetchall():
        root = root_from_leaves(leaves[:size])
        note = signer.sign(Checkpoint("immutablelog/default", size, root).to_text())
        conn.execute(
            "UPDATE checkpoints SET root = ?, note = ? WHERE tenant_id = ? AND size = ?",
            (root, note, tenant_id, size),
        )


def test_rewritten_history_passes_every_fresh_check_but_not_the_saved_checkpoint(
    server: LiveServer, tmp_path: Path
) -> None:
    state = tmp_path / "state.json"
    assert verify(server, "--state", state)[0] == 0
    signer = Signer.from_private_key_string(
        (server.data_dir / "log-signing.key").read_text().strip()
    )
    tamper(server, lambda conn, tenant_id: rewrite_history(conn, tenant_id, signer))

    assert "forged" in server.raw_entries()[10].decode()
    server_check = server.get("/v1/verify").json()
    assert server_check["valid"] is True, server_check  # the server vouches for the forgery
    fresh_code, fresh = verify(server, "--state", tmp_path / "fresh.json")
    assert fresh_code == 0, fresh  # and so would a verifier with no memory

    code, body = verify(server, "--state", state)
    assert code == 1
    (finding,) = body["findings"]
    assert finding["kind"] == "inconsistent_history"
    assert finding["index"] == 0 and finding["end"] > 0
    assert finding["entry_id"] == stored_id(server, 0)

    ingest(server, 5)  # the forged log grows on; it still does not extend what was verified
    code, body = verify(server, "--state", state)
    assert code == 1 and kinds_at(body) == [("inconsistent_history", 0)]


def test_rolled_back_log_is_detected(server: LiveServer, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    assert verify(server, "--state", state)[0] == 0
    size = server.checkpoint().size
    conn = sqlite3.connect(server.data_dir / "ledger.db")
    (keep,) = conn.execute("SELECT MAX(size) FROM checkpoints WHERE size < ?", (size,)).fetchone()
    conn.close()

    def attack(conn: sqlite3.Connection, tenant_id: int) -> None:
        conn.execute("DELETE FROM entries WHERE tenant_id = ? AND idx >= ?", (tenant_id, keep))
        conn.execute(
            "DELETE FROM nodes WHERE tenant_id = ? AND ((idx + 1) << level) > ?", (tenant_id, keep)
        )
        conn.execute("DELETE FROM checkpoints WHERE tenant_id = ? AND size > ?", (tenant_id, keep))

    tamper(server, attack)
    assert server.checkpoint().size == keep  # a genuine, validly signed old checkpoint
    code, body = verify(server, "--state", state)
    assert code == 1
    assert [(f["kind"], f["index"], f["end"]) for f in body["findings"]] == [
        ("rollback", keep, size)
    ]


def test_altered_checkpoint_is_a_bad_signature(server: LiveServer, tmp_path: Path) -> None:
    def attack(conn: sqlite3.Connection, tenant_id: int) -> None:
        size, note = conn.execute(
            "SELECT size, note FROM checkpoints WHERE tenant_id = ? ORDER BY size DESC LIMIT 1",
            (tenant_id,),
        ).fetchone()
        lines = note.split("\n")
        lines[1] = str(size + 1000)
        conn.execute(
            "UPDATE checkpoints SET note = ? WHERE tenant_id = ? AND size = ?",
            ("\n".join(lines), tenant_id, size),
        )

    tamper(server, attack)
    code, body = verify(server, "--state", tmp_path / "s.json")
    assert code == 1 and kinds_at(body) == [("bad_signature", None)]
