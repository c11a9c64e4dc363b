"""Rotating the log key with real processes: two servers on one PostgreSQL database follow
it from the database, a witness keeps cosigning, verifiers follow the handover, old proofs
still hold; and a SQLite server picks up a rotation made by the command line beside it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import psycopg
from click.testing import CliRunner
from tlog_scales import tlog
from tlog_scales.signing import Vkey

from immutablelog.checkpoint import Signer, Verifier
from immutablelog.cli.commands import cli
from immutablelog.ledger import DEFAULT_TENANT
from immutablelog.ledger.postgres.schema import WITNESSING_LOCK_CLASS
from tests.live import LiveServer
from tests.verify.helpers import ingest
from tests.witness.live import LiveWitness
from tests.witness.test_witnessing import (
    ORIGIN,
    checkpoint,
    cosigners,
    size_of,
    wait_for,
    witness_env,
)


def log_key_command(server: LiveServer, *args: str) -> subprocess.CompletedProcess[str]:
    """``immutablelog log-key ...`` run on ``server``'s host (its data and key directory)."""
    where = ["--data-dir", str(server.data_dir)]
    if server.database_url:
        where += ["--database-url", server.database_url]
    return subprocess.run(
        [sys.executable, "-m", "immutablelog", "log-key", *args, *where],
        capture_output=True,
        text=True,
        timeout=120,
    )


def tiles_sync(server: LiveServer, out: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "immutablelog", "tiles", "sync", "--to", str(out)]
    return subprocess.run(
        [*command, "--data-dir", str(server.data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def verify(*args: str | Path) -> dict[str, Any]:
    result = CliRunner().invoke(cli, ["verify", "--json", *map(str, args)])
    report: dict[str, Any] = json.loads(result.stdout)
    assert report["exit_code"] == result.exit_code
    return report


def signed_by(note: str, key: str) -> bool:
    return Verifier(key).check(note)[1]


def post_one(server: LiveServer) -> httpx.Response:
    event = {
        "payload": "{}",
        "meta": {"type": "info", "event_name": "one", "service": "svc"},
    }
    return httpx.post(
        server.url + "/v1/events/batch",
        json={"events": [event]},
        headers=server.headers(server.ingest_key),
        timeout=30,
    )


def test_two_postgres_hosts_follow_a_rotation_with_a_witness_and_verifiers(
    tmp_path: Path, postgres_url: str
) -> None:
    a = LiveServer(tmp_path / "a", database_url=postgres_url)
    (tmp_path / "b").mkdir()
    shutil.copy(a.data_dir / "log-signing.key", tmp_path / "b" / "log-signing.key")
    b = LiveServer(tmp_path / "b", database_url=postgres_url, create=False)
    old = a.verifier_key
    witness = LiveWitness(tmp_path / "w1", "witness.example/w1", [(ORIGIN, old)])
    witness.start()
    for host in (a, b):
        host.extra_env = witness_env([witness])
        host.start()
    state = tmp_path / "state.json"
    try:
        ingest(a, 20)
        ingest(b, 20)
        # Cosignatures live in the database: both hosts serve them, one pushes.
        for host in (a, b):
            wait_for(lambda h=host: cosigners(checkpoint(h), [witness]) != [], "cosigned")
        with psycopg.connect(postgres_url) as conn:
            row = conn.execute(
                # pg_locks spans the server: count this test's database only.
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                (WITNESSING_LOCK_CLASS,),
            ).fetchone()
        assert row == (1,)
        before = verify("--url", a.url, "--key", a.read_key, "--log-key", old, "--state", state)
        assert before["status"] == "intact"
        old_bundle = tmp_path / "before.jsonl"
        old_bundle.write_bytes(
            httpx.get(a.url + "/v1/export", headers=a.headers(a.read_key), timeout=60).content
        )

        # A new key, made on host A; the witness's operator adds it beside the old one.
        made = log_key_command(a, "generate")
        assert made.returncode == 0, made.stderr
        new = made.stdout.strip()
        Verifier(new)
        witness.kill()
        witness.logs = [(ORIGIN, old), (ORIGIN, new)]
        witness.start()

        rotated = log_key_command(a, "rotate", new, "--transition", "1h")
        assert rotated.returncode == 0, rotated.stderr
        # Host B lacks the new key: it refuses to sign (503), never signs with the old alone.
        refused = post_one(b)
        assert refused.status_code == 503, refused.text
        assert refused.json()["reason"] == "signing_key_missing"
        ready = httpx.get(b.url + "/readyz", timeout=10)
        assert ready.status_code == 503 and new in ready.json()["message"]
        assert ready.json()["checks"]["signing_keys"] == "missing"
        assert post_one(a).is_success
        note = checkpoint(a)
        assert signed_by(note, old) and signed_by(note, new)
        # Its key file copied in, host B follows without a restart.
        key_file = next(a.data_dir.glob("log-key-*.key"))
        shutil.copy(key_file, b.data_dir / key_file.name)
        assert post_one(b).is_success
        assert httpx.get(b.url + "/readyz", timeout=10).json()["checks"]["signing_keys"] == "ok"
        note = checkpoint(b)
        assert signed_by(note, old) and signed_by(note, new)
        listed = log_key_command(b, "list", "--json")
        assert [json.loads(line)["held_here"] for line in listed.stdout.splitlines()] == [
            True,
            True,
        ]

        assert log_key_command(a, "finish").returncode == 0
        ingest(b, 5)
        note = checkpoint(b)
        assert signed_by(note, new) and not signed_by(note, old)
        assert httpx.get(b.url + "/v1/log-key", timeout=10).text.strip() == new
        # The witness cosigns checkpoints of the new key (it trusts both for the origin).
        wait_for(lambda: cosigners(checkpoint(a), [witness]) != [], "cosigned after", 60)
        tiles = checkpoint(b, f"/tlog/{DEFAULT_TENANT}/checkpoint")
        assert signed_by(tiles, new) and cosigners(tiles, [witness]) != []

        # The verifier whose state pins the old key follows the handover, and says so.
        after = verify("--url", b.url, "--key", b.read_key, "--state", state)
        assert after["status"] == "intact", after
        assert after["log_key"] == new
        assert any(old in line and new in line for line in after["key_rotations"])
        saved = json.loads(state.read_text())
        assert saved["log_key"] == new and saved["replaced_keys"] == [old]
        again = verify(
            "--url", a.url, "--key", a.read_key, "--log-key", old, "--state", state,
            "--witness", witness.verifier_key,
        )  # fmt: skip
        assert again["status"] == "intact" and "key_rotations" not in again
        # Pinned to the old key, without any state: the handover leads to the new key too.
        fresh = verify(
            "--url", b.url, "--key", b.read_key, "--log-key", old, "--state", tmp_path / "f.json"
        )  # fmt: skip
        assert fresh["status"] == "intact" and fresh["log_key"] == new
        # Old proofs still verify, by the key that signed them.
        offline = verify("--bundle", old_bundle, "--log-key", old)
        assert offline["status"] == "intact", offline
        # A checkpoint signed only by keys the verifier does not know is refused.
        stranger = Signer.generate("immutablelog").verifier_key()
        unknown = verify(
            "--url", b.url, "--key", b.read_key, "--log-key", stranger,
            "--state", tmp_path / "u.json",
        )  # fmt: skip
        assert unknown["status"] == "tampered", unknown["error"]
        assert unknown["findings"][0]["kind"] == "bad_signature"
    finally:
        for process in (a, b, witness):
            process.kill()


def test_a_sqlite_server_follows_a_rotation_made_beside_it(tmp_path: Path) -> None:
    server = LiveServer(tmp_path / "data")
    server.start()
    static = tmp_path / "static"
    try:
        ingest(server, 10)
        old = server.verifier_key
        assert tiles_sync(server, static).returncode == 0
        rotated = log_key_command(server, "rotate", "--transition", "2m")
        assert rotated.returncode == 0, rotated.stderr
        new = rotated.stdout.strip()
        assert post_one(server).is_success
        note = checkpoint(server)
        assert signed_by(note, old) and signed_by(note, new)
        keys = httpx.get(
            server.url + "/v1/log-keys", headers=server.headers(server.read_key), timeout=10
        ).json()
        assert [k["key"] for k in keys["keys"]] == [old, new]
        (handover,) = keys["handovers"]
        assert signed_by(handover["checkpoint"], old) and signed_by(handover["checkpoint"], new)
        assert size_of(handover["checkpoint"]) == handover["size"] >= 10
        assert log_key_command(server, "finish").returncode == 0
        assert post_one(server).is_success
        assert not signed_by(checkpoint(server), old)
        # tiles sync goes on across the rotation (it checks its old checkpoint by either key),
        # and a tlog client holding the new key reads what it wrote.
        synced = tiles_sync(server, static)
        assert synced.returncode == 0, synced.stderr
        written = (static / "checkpoint").read_text()
        tlog.Checkpoint.from_text(written).verify(Vkey.from_string(new))
        assert size_of(written) == size_of(checkpoint(server))
        audit = httpx.get(
            server.url + "/v1/verify", headers=server.headers(server.read_key), timeout=60
        ).json()
        assert audit["valid"], audit
    finally:
        server.kill()


def test_log_key_command_refuses_hostile_input(tmp_path: Path) -> None:
    server = LiveServer(tmp_path / "data")
    for args, expect in [
        (["rotate", "not-a-key"], "not a log verifier key"),
        (["rotate", "immutablelog+00000000+AAAA"], "not a log verifier key"),
        (["rotate", "--transition", "0m"], "at least 1m"),
        (["rotate", "--transition", "7"], "a number and a unit"),
        (["rotate", "--transition", "-1d"], "a number and a unit"),
        (["rotate", "--transition", "\u0667d"], "a number and a unit"),  # an Arabic-Indic 7
        (["rotate", "--transition", "99999999d"], "a number and a unit"),
        (["rotate", "--transition", "400d"], "at most"),
        (["finish"], "no rotation"),
        (["rotate", Signer.generate("immutablelog").verifier_key()], "holds no private key"),
        (["rotate", Signer.generate("other").verifier_key()], "holds no private key"),
    ]:
        result = log_key_command(server, *args)
        assert result.returncode != 0, args
        assert expect in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert len(log_key_command(server, "list", "--json").stdout.splitlines()) == 1
    assert list(server.data_dir.glob("log-key-*.key")) == []
