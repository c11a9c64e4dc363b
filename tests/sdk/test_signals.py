"""Termination signals: events still in memory are delivered before SIGTERM or SIGINT ends the
process, and the signal still reaches the handler that was there before the SDK's and still
ends the process as it would have. Real processes, a real ledger server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.live import LiveServer

pytestmark = pytest.mark.slow

# Records five events that wait in memory (a long batch interval), says so, then idles.
# Before the SDK starts, the application sets its own handler as given by argv[3].
SCRIPT = textwrap.dedent(
    """
    import signal, sys, time
    from immutablelog.sdk import DeliveryOptions, ImmutableLogClient

    url, key, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    stop = []
    if mode == "graceful":  # a server's own handler: stop serving, return from main
        signal.signal(signal.SIGTERM, lambda signum, frame: stop.append(signum))
    elif mode == "default":  # SIGTERM's is already
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    elif mode == "ignored":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    client = ImmutableLogClient(
        url, key, service_name="signals",
        delivery=DeliveryOptions(spool_dir=False, batch_interval=60, shutdown_timeout=20),
    )
    for n in range(5):
        client.record("job.step", n=n)
    print("ready", signal.getsignal(signal.SIGTERM) is signal.SIG_IGN, flush=True)
    deadline = time.monotonic() + (3 if mode == "ignored" else 60)
    while not stop and time.monotonic() < deadline:
        time.sleep(0.01)
    print("stopped by", stop, flush=True)
    """
)


def run_until_signalled(
    server: LiveServer, tmp_path: Path, mode: str, signum: int
) -> tuple[int, str]:
    script = tmp_path / "app.py"
    script.write_text(SCRIPT)
    process = subprocess.Popen(
        [sys.executable, str(script), server.url, server.ingest_key, mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    ready = process.stdout.readline()
    assert ready.startswith("ready"), process.communicate(timeout=30)
    process.send_signal(signum)
    out, err = process.communicate(timeout=60)
    return process.returncode, ready + out + err


def steps(server: LiveServer) -> list[str]:
    return sorted(e["payload"] for e in server.entries() if e["event_name"] == "job.step")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_with_its_default_action_comes_after_the_drain(
    live_server: LiveServer, tmp_path: Path, signum: int
) -> None:
    status, output = run_until_signalled(live_server, tmp_path, "default", signum)
    assert status == -signum, output  # ended by the signal, as without the SDK
    assert len(steps(live_server)) == 5, output


def test_ctrl_c_is_still_keyboard_interrupt(live_server: LiveServer, tmp_path: Path) -> None:
    status, output = run_until_signalled(live_server, tmp_path, "python", signal.SIGINT)
    assert status == -signal.SIGINT and "KeyboardInterrupt" in output, output
    assert len(steps(live_server)) == 5, output


def test_the_applications_own_handler_still_gets_the_signal(
    live_server: LiveServer, tmp_path: Path
) -> None:
    status, output = run_until_signalled(live_server, tmp_path, "graceful", signal.SIGTERM)
    assert status == 0, output
    assert f"stopped by [{int(signal.SIGTERM)}]" in output
    assert len(steps(live_server)) == 5, output


def test_an_ignored_signal_stays_ignored(live_server: LiveServer, tmp_path: Path) -> None:
    status, output = run_until_signalled(live_server, tmp_path, "ignored", signal.SIGTERM)
    assert output.startswith("ready True") and "stopped by []" in output, output
    assert status == 0, output
    assert len(steps(live_server)) == 5, output


def test_a_re_raised_sigterm_waits_for_the_drain(live_server: LiveServer, tmp_path: Path) -> None:
    """What uvicorn does: on SIGTERM, shut down, put back the handler it found (the default)
    and raise the signal again — here with the SDK started after the server's handler."""
    script = tmp_path / "server.py"
    script.write_text(
        textwrap.dedent(
            """
            import signal, sys, time
            from immutablelog.sdk import DeliveryOptions, ImmutableLogClient

            caught = []
            original = signal.signal(signal.SIGTERM, lambda s, f: caught.append(s))
            client = ImmutableLogClient(
                sys.argv[1], sys.argv[2], service_name="signals",
                delivery=DeliveryOptions(spool_dir=False, batch_interval=60),
            )
            print("ready", flush=True)
            while not caught:
                time.sleep(0.01)
            for n in range(5):  # the last requests finish during the graceful shutdown
                client.record("job.step", n=n)
            signal.signal(signal.SIGTERM, original)
            signal.raise_signal(signal.SIGTERM)
            print("after the re-raise", flush=True)
            """
        )
    )
    process = subprocess.Popen(
        [sys.executable, str(script), live_server.url, live_server.ingest_key],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline() == "ready\n"
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == -signal.SIGTERM, out + err
    assert len(steps(live_server)) == 5, out + err
