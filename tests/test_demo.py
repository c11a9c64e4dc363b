"""``immutablelog demo`` runs end to end on a fresh machine's defaults."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.live import free_port


def test_demo_runs_the_whole_system_and_ends_intact(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "immutablelog",
            "demo",
            "--port",
            str(free_port()),
            "--data-dir",
            str(tmp_path / "demo"),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    for recorded in (
        "auth.login",
        "payment.checkout.initiated",
        "http.GET./items/42",
        "invoice.deleted",
        "http.GET./boom",
    ):
        assert recorded in out
    assert "secrets in the log: none" in out
    assert "INTACT" in out
    assert (tmp_path / "demo" / "verify-state.json").exists()
    assert "Traceback" not in result.stderr
