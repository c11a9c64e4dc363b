"""``export`` and ``tail`` against the running server, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx

from tests.live import LiveServer


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "immutablelog", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def seed(server: LiveServer, count: int) -> None:
    events = [
        {
            "payload": json.dumps({"n": n}),
            "meta": {"type": "info", "event_name": f"thing.{n}", "service": "app"},
            "idempotency_key": f"seed-{n}",
        }
        for n in range(count)
    ]
    response = httpx.post(
        server.url + "/v1/events/batch",
        json={"events": events},
        headers=server.headers(),
        timeout=30,
    )
    assert response.status_code == 200


def test_export_writes_a_complete_bundle(live_server: LiveServer, tmp_path: Path) -> None:
    seed(live_server, 25)
    out = tmp_path / "log.jsonl"
    result = run(
        "export", "--url", live_server.url, "--key", live_server.read_key, "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    lines = out.read_text().splitlines()
    header = json.loads(lines[0])
    assert header["tree_size"] == len(lines) - 1 >= 25
    assert not (tmp_path / "log.jsonl.partial").exists()


def test_export_with_a_bad_key_fails_cleanly(live_server: LiveServer, tmp_path: Path) -> None:
    out = tmp_path / "never.jsonl"
    result = run(
        "export", "--url", live_server.url, "--key", live_server.ingest_key, "--out", str(out)
    )
    assert result.returncode == 1
    assert "403" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()


def test_export_into_a_missing_directory_fails_cleanly(
    live_server: LiveServer, tmp_path: Path
) -> None:
    out = tmp_path / "no-such-dir" / "log.jsonl"
    result = run(
        "export", "--url", live_server.url, "--key", live_server.read_key, "--out", str(out)
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip() == f"Error: cannot write {out}: No such file or directory"


def test_export_to_an_unreachable_server_fails_cleanly(tmp_path: Path) -> None:
    result = run(
        "export", "--url", "http://127.0.0.1:9", "--key", "x", "--out", str(tmp_path / "x")
    )
    assert result.returncode == 1 and "cannot reach" in result.stderr


def test_tail_shows_recent_events(live_server: LiveServer) -> None:
    seed(live_server, 5)
    result = run(
        "tail",
        "--url",
        live_server.url,
        "--key",
        live_server.read_key,
        "-n",
        "3",
        "--no-follow",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    shown = [json.loads(line)["event_name"] for line in result.stdout.splitlines()]
    assert shown == ["thing.2", "thing.3", "thing.4"]


def test_tail_shows_senders_text_as_sent_one_line_per_event(live_server: LiveServer) -> None:
    # Brackets are rich markup: "[/id]" once crashed tail with a MarkupError traceback.
    names = ["http.GET./items/[/id]", "x." + "long" * 30]
    for n, name in enumerate(names):
        meta = {"type": "info", "event_name": name, "service": "[bold]svc", "actor": "[red]a"}
        response = httpx.post(
            live_server.url + "/v1/events",
            json={"payload": "{}", "meta": meta, "idempotency_key": f"markup-{n}"},
            headers=live_server.headers(),
            timeout=30,
        )
        assert response.status_code == 202, response.text
    result = run(
        "tail", "--url", live_server.url, "--key", live_server.read_key, "-n", "2", "--no-follow"
    )
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    lines = result.stdout.splitlines()  # piped: never wrapped at 80 columns
    assert len(lines) == 2
    assert lines[0].endswith(f"info    {names[0]} [bold]svc actor=[red]a")
    assert lines[1].endswith(f"info    {names[1]} [bold]svc actor=[red]a")


def test_tail_follows_new_events(live_server: LiveServer) -> None:
    seed(live_server, 1)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "immutablelog",
            "tail",
            "--url",
            live_server.url,
            "--key",
            live_server.read_key,
            "-n",
            "1",
            "--interval",
            "0.2",
            "--json",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        # The newest event, shown first, proves it took its starting point (a fixed pause
        # did not, on a loaded machine: events seeded before it started were never shown).
        assert json.loads(process.stdout.readline())["event_name"] == "thing.0"
        seed(live_server, 4)  # thing.0 again (a replay, not new), then three new ones
        lines = [process.stdout.readline() for _ in range(3)]
        assert [json.loads(line)["event_name"] for line in lines] == [
            "thing.1",
            "thing.2",
            "thing.3",
        ]
    finally:
        process.terminate()
        process.wait(10)
