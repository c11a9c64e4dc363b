"""A real ``immutablelog witness serve`` process for end-to-end tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.live import LiveProcess, free_port, wait_healthy


class LiveWitness(LiveProcess):
    """Starts, kills and restarts a witness on one data directory."""

    def __init__(self, data_dir: Path, name: str, logs: list[tuple[str, str]]) -> None:
        self.data_dir = data_dir
        self.name = name
        self.logs = logs
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir.parent / f"{data_dir.name}-witness.log"
        self.process: subprocess.Popen[bytes] | None = None
        key = subprocess.run(
            [sys.executable, "-m", "immutablelog", "witness", "key", *self._identity()],
            check=True,
            capture_output=True,
            text=True,
        )
        self.verifier_key = key.stdout.strip()

    def _identity(self) -> list[str]:
        return ["--data-dir", str(self.data_dir), "--name", self.name]

    def start(self, timeout: float = 30.0) -> None:
        logs = [arg for origin, key in self.logs for arg in ("--log", origin, key)]
        command = [sys.executable, "-m", "immutablelog", "witness", "serve", *self._identity()]
        self.process = subprocess.Popen(
            [*command, *logs, "--port", str(self.port)],
            stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT,
            env=dict(os.environ),
            start_new_session=True,
        )
        wait_healthy(self.process, self.url, timeout, self.log)
