"""Production shape: several stateless API servers on one PostgreSQL database."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from immutablelog.checkpoint import Signer
from immutablelog.ledger import SIGNING_KEY_ENV
from tests.live import HTTP, LiveServer, free_port
from tests.verify.helpers import cli_json

META = {"type": "info", "event_name": "pg.event", "service": "api"}


def test_two_servers_on_one_database_keep_one_log(postgres_url: str, tmp_path: Path) -> None:
    key = tmp_path / "shared-signing.key"  # every host signs with the log's one key
    first = LiveServer(tmp_path / "host-a", database_url=postgres_url, signing_key=key)
    second = LiveServer(
        tmp_path / "host-b", database_url=postgres_url, signing_key=key, create=False
    )
    first.start()
    second.start()
    try:
        servers = [first, second]

        def send(n: int) -> httpx.Response:
            server = servers[n % 2]
            # The same 100 keys go to both hosts: each event must still be stored once.
            return HTTP.post(
                server.url + "/v1/events",
                json={"payload": json.dumps({"n": n % 100}), "meta": META},
                headers=server.headers(**{"Idempotency-Key": f"k{n % 100}"}),
                timeout=30,
            )

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(send, range(400)))
        assert all(a.status_code == 202 for a in answers), answers[0].text
        ids: dict[int, set[str]] = {}
        for n, answer in enumerate(answers):
            ids.setdefault(n % 100, set()).add(answer.json()["tx_id"])
        assert all(len(found) == 1 for found in ids.values())
        assert len(first.entries()) == 100
        # Both hosts serve the same signed tree, and it matches the stored bytes.
        checkpoint = first.assert_tree_intact()
        assert second.checkpoint() == checkpoint
        report = second.get("/v1/verify").json()
        assert report["valid"] is True and report["events_checked"] == checkpoint.size
    finally:
        first.kill()
        second.kill()


def test_a_database_outage_is_a_fast_503_and_readiness_names_the_database(
    postgres_url: str, tmp_path: Path
) -> None:
    server = LiveServer(tmp_path / "host", database_url=postgres_url + "?connect_timeout=2")
    server.start()
    try:
        import psycopg

        dbname = postgres_url.rsplit("/", 1)[1]
        admin_url = postgres_url.rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(admin_url, autocommit=True) as admin:
            # Forbid new connections (the superuser's too) and end the server's current ones.
            admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS false')
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (dbname,),
            )
            try:
                for _ in range(5):  # the first finds the database down, the rest know it
                    response = HTTP.post(
                        server.url + "/v1/events",
                        json={"payload": "{}", "meta": META},
                        headers=server.headers(),
                        timeout=30,
                    )
                    assert response.status_code == 503, response.text
                    assert response.json()["reason"] == "ledger_unavailable"
                    assert response.headers["retry-after"]
                read = server.get("/v1/checkpoint")
                assert read.status_code == 503 and read.json()["reason"] == "ledger_unavailable"
                for path in ("/readyz", "/healthz"):
                    health = HTTP.get(server.url + path, timeout=30)
                    assert health.status_code == 503 and health.json()["reason"] == "not_ready"
                    assert health.json()["checks"]["database"] == "unreachable"
                    assert health.headers["retry-after"]
                assert HTTP.get(server.url + "/livez", timeout=30).status_code == 200
                scrape = HTTP.get(server.url + "/metrics", timeout=30)
                assert 'immutablelog_storage_fault{fault="unavailable"} 1.0' in scrape.text
            finally:
                admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true')
        # Once the database is back the server recovers by itself (probed every second).
        deadline = time.monotonic() + 60
        while True:
            ok = HTTP.post(
                server.url + "/v1/events",
                json={"payload": "{}", "meta": META},
                headers=server.headers(),
                timeout=30,
            )
            if ok.status_code != 503 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert ok.status_code == 202, ok.text
        assert HTTP.get(server.url + "/readyz", timeout=30).json()["checks"]["database"] == "ok"
        log = server.log()
        assert "Traceback" not in log
        # The outage is logged once when it starts and once when it ends, not per request.
        assert log.count("storage fault unavailable") == 2, log
        assert "storage fault unavailable of PostgreSQL" in log and "resolved after" in log
        server.assert_tree_intact()
    finally:
        server.kill()


def _post_one(server: LiveServer, key: str) -> None:
    HTTP.post(
        server.url + "/v1/events",
        json={"payload": "{}", "meta": META},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    ).raise_for_status()


def test_a_host_with_another_key_refuses_to_start_and_the_log_stays_valid(
    postgres_url: str, tmp_path: Path
) -> None:
    first = LiveServer(tmp_path / "host-a", database_url=postgres_url)
    first.start()
    try:
        _post_one(first, first.ingest_key)
        # Another directory: without a key file there, and with a key of its own.
        wrong_key = tmp_path / "wrong.key"
        wrong_key.write_text(Signer.generate("immutablelog").private_key_string() + "\n")
        for key_args in ([], ["--signing-key", str(wrong_key)]):
            refused = subprocess.run(
                [sys.executable, "-m", "immutablelog", "serve", "--data-dir", tmp_path / "host-b",
                 "--database-url", postgres_url, "--port", str(free_port()), *key_args],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert refused.returncode != 0
            assert first.verifier_key in refused.stderr
            assert "--signing-key" in refused.stderr and SIGNING_KEY_ENV in refused.stderr
            assert "Traceback" not in refused.stderr
        assert first.get("/v1/verify").json()["valid"] is True

        # With the log's key, the second host serves the same log and both stay verifiable.
        second = LiveServer(
            tmp_path / "host-b",
            database_url=postgres_url,
            signing_key=tmp_path / "host-a" / "log-signing.key",
            create=False,
        )
        second.start()
        try:
            _post_one(first, first.ingest_key)
            _post_one(second, first.ingest_key)
            code, report = cli_json(
                "verify", "--url", second.url, "--key", first.read_key,
                "--log-key", first.verifier_key,
            )  # fmt: skip
            assert code == 0 and report["status"] == "intact", report
            assert report["entries_checked"] == first.checkpoint().size == 10  # 3 ours + admin
            assert second.get("/v1/verify").json()["valid"] is True
        finally:
            second.kill()
    finally:
        first.kill()
