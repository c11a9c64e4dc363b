"""``immutablelog witness serve`` as a real process: cosigns, survives a kill, keeps its key."""

from __future__ import annotations

from pathlib import Path

import httpx

from immutablelog.checkpoint import Signer
from immutablelog.cosignature import CosignatureVerifier
from tests.witness.live import LiveWitness
from tests.witness.test_server import ORIGIN, Log


def test_witness_process_keeps_its_state_across_a_kill(tmp_path: Path) -> None:
    log = Log(Signer.generate(ORIGIN))
    witness = LiveWitness(
        tmp_path / "w1", "witness.example/w1", [(ORIGIN, log.signer.verifier_key())]
    )
    witness.start()
    try:
        log.grow(10)
        answer = httpx.post(f"{witness.url}/add-checkpoint", content=log.request(0))
        assert answer.status_code == 200, answer.text
        assert CosignatureVerifier(witness.verifier_key).find(log.checkpoint() + answer.text)
        witness.kill()  # no clean shutdown: the state was durable before the answer
        witness.start()
        again = httpx.post(f"{witness.url}/add-checkpoint", content=log.request(0))
        assert (again.status_code, again.text) == (409, "10\n")
        log.grow(3)
        assert (
            httpx.post(f"{witness.url}/add-checkpoint", content=log.request(10)).status_code == 200
        )
    finally:
        witness.kill()


def test_witness_serve_refuses_a_bad_log_key(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "immutablelog",
            "witness",
            "serve",
            "--data-dir",
            str(tmp_path),
            "--name",
            "w",
            "--log",
            ORIGIN,
            "not-a-key",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "--log" in result.stderr


def test_witness_serve_on_a_taken_port_is_one_line_before_anything_is_announced(
    tmp_path: Path,
) -> None:
    import socket
    import subprocess
    import sys

    key = Signer.generate(ORIGIN).verifier_key()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "immutablelog", "witness", "serve", "--data-dir",
             str(tmp_path / "w"), "--name", "w", "--log", ORIGIN, key, "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.strip() == (
        f"Error: port {port} on 127.0.0.1 is already in use; pick another with --port"
    )
    assert result.stdout == "" and "Witnessing" not in result.stderr
