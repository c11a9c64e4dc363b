"""Backup while the server writes, restore, and proof that the restored log is intact — the
procedure docs/OPERATIONS.md gives, run for real."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from pathlib import Path

from immutablelog.verify import Status, verify_remote
from tests.live import LiveServer
from tests.verify.helpers import client, ingest


def backup(data_dir: Path, destination: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "immutablelog", "backup", "--data-dir", str(data_dir),
         str(destination)],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip


def restore(backup_file: Path, data_dir: Path) -> None:
    """The restore steps of docs/OPERATIONS.md, with the server stopped."""
    for stale in ("ledger.db", "ledger.db-wal", "ledger.db-shm"):
        (data_dir / stale).unlink(missing_ok=True)
    for derived in data_dir.glob("ledger-search.db*"):
        derived.unlink()
    shutil.copyfile(backup_file, data_dir / "ledger.db")


def test_a_backup_taken_during_ingest_restores_to_an_intact_log(
    live_server: LiveServer, tmp_path: Path
) -> None:
    ingest(live_server, 500, label="before")
    before = tmp_path / "state-before-backup.json"
    with client(live_server) as remote:
        checked = verify_remote(remote, state_path=before, pinned_key=live_server.verifier_key)
    assert checked.status is Status.INTACT

    writing = threading.Thread(target=ingest, args=(live_server, 3000), kwargs={"label": "during"})
    writing.start()
    copied = backup(live_server.data_dir, tmp_path / "ledger-backup.db")
    writing.join()
    assert copied.returncode == 0, copied.stderr
    assert (tmp_path / "ledger-backup.db").stat().st_mode & 0o077 == 0
    again = backup(live_server.data_dir, tmp_path / "ledger-backup.db")
    assert again.returncode == 1 and "never overwrites" in again.stderr

    after = tmp_path / "state-after-backup.json"
    ingest(live_server, 100, label="after")
    with client(live_server) as remote:
        newest = verify_remote(remote, state_path=after, pinned_key=live_server.verifier_key)
    assert newest.status is Status.INTACT
    assert live_server.stop() in (0, -15)

    restore(tmp_path / "ledger-backup.db", live_server.data_dir)
    live_server.start()
    restored = live_server.assert_tree_intact()  # every stored entry rebuilds the signed root
    assert checked.tree_size is not None and newest.tree_size is not None
    assert checked.tree_size < restored.size < newest.tree_size  # a snapshot taken mid-ingest
    assert live_server.get("/v1/verify").json()["valid"] is True  # the server's own check

    # The independent verifier, from the state saved before the backup: the restored log
    # extends exactly what it had verified.
    with client(live_server) as remote:
        report = verify_remote(remote, state_path=before, pinned_key=live_server.verifier_key)
    assert report.status is Status.INTACT, report.to_json()
    # From a state saved after the backup: the events since are gone, and it says so.
    with client(live_server) as remote:
        report = verify_remote(remote, state_path=after, pinned_key=live_server.verifier_key)
    assert report.status is Status.TAMPERED
    assert [f.kind.value for f in report.findings] == ["rollback"]


def test_backup_refuses_what_it_cannot_copy(tmp_path: Path) -> None:
    missing = backup(tmp_path / "nothing-here", tmp_path / "copy.db")
    assert missing.returncode == 1 and "no ledger at" in missing.stderr
    assert "Traceback" not in missing.stderr
