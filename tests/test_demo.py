"""``immutablelog demo`` runs end to end on a fresh machine's defaults, and what it prints
works as printed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.live import free_port, interrupt_once_shown

RECORDED = (
    "auth.login",
    "payment.checkout.initiated",
    "http.GET./items/42",
    "invoice.deleted",
    "http.GET./boom",
)


def demo_command(tmp_path: Path, port: int, *more: str) -> list[str]:
    return [
        sys.executable, "-m", "immutablelog", "demo",
        "--port", str(port), "--data-dir", str(tmp_path / "demo"), *more,
    ]  # fmt: skip


def test_demo_runs_the_whole_system_and_ends_intact(tmp_path: Path) -> None:
    result = subprocess.run(
        demo_command(tmp_path, free_port(), "--exit"), capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    for recorded in RECORDED:
        assert recorded in out
    assert "secrets in the log: none" in out
    assert "INTACT" in out
    assert "the server has stopped" in out and " serve --data-dir " in out
    assert (tmp_path / "demo" / "verify-state.json").exists()
    assert "Traceback" not in result.stderr


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_printed_commands_work_against_the_kept_running_server(tmp_path: Path) -> None:
    port = free_port()
    demo = subprocess.Popen(
        demo_command(tmp_path, port),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "500"},
    )
    try:
        assert demo.stdout is not None
        lines: list[str] = []
        for line in demo.stdout:
            lines.append(line.rstrip("\n"))
            if "(ingest key" in line:
                break
        output = "\n".join(lines)
        assert "keeps running until Ctrl-C" in output, output
        start = next(i for i, line in enumerate(lines) if line.startswith("Where to look"))
        printed = [line.strip() for line in lines[start + 1 : -1]]
        assert printed[0].startswith("export IMMUTABLELOG_URL=")
        *once, follow = printed
        assert follow.endswith(" tail")

        # Pasted into a shell in another terminal, as the demo says.
        ran = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", "\n".join(once)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert '"events"' in ran.stdout and "invoice.deleted" in ran.stdout  # curl
        assert "INTACT" in ran.stdout  # verify, incremental on the demo's own state
        assert (tmp_path / "log.jsonl").stat().st_size > 0  # export

        tail = subprocess.Popen(
            ["bash", "-c", f"{once[0]}\nexec {follow}"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        code, tail_out = interrupt_once_shown(tail, "http.GET./boom")
        assert code == 0, tail_out
        assert "http.GET./boom" in tail_out

        # A process manager stops the demo: its server must stop with it.
        (server,) = _children(demo.pid)
        demo.send_signal(signal.SIGTERM)
        demo.wait(60)
        deadline = time.monotonic() + 30
        while _alive(server) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(server)
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
            raise AssertionError("the server still answers after the demo was stopped")
        except httpx.ConnectError:
            pass
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(10)


def test_a_taken_port_stops_the_demo_before_it_sends_anything(tmp_path: Path) -> None:
    # Another server on the port answered the demo's health check in its child's place: the
    # demo then sent its traffic there with keys that server never made (401, dead letters).
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        result = subprocess.run(
            demo_command(tmp_path, port, "--exit"), capture_output=True, text=True, timeout=60
        )
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr
    assert "Traceback" not in result.stderr
    assert "Running an instrumented Flask app" not in result.stdout
    assert not (tmp_path / "demo").exists()
