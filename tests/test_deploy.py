"""The deployment files in deploy/ run here as far as this machine allows: the container
image's command and health check, the compose file's server on a real PostgreSQL, the systemd
unit's ExecStart with its environment and the example config file. (No container engine or
systemd runs here; what they would add is building the image and supervising the process.)
"""

from __future__ import annotations

import configparser
import json
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.live import HTTP, free_port

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
BIN = Path(sys.executable).parent
IMAGE_PORT = "8080"


def dockerfile() -> dict[str, list[str] | dict[str, str]]:
    """The Dockerfile's ENV, CMD and HEALTHCHECK CMD (exec forms, continuation lines joined)."""
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    found: dict[str, list[str] | dict[str, str]] = {"ENV": env}
    for line in text.splitlines():
        word, _, rest = line.strip().partition(" ")
        if word == "ENV":
            name, _, value = rest.partition("=")
            env[name] = value
        elif word == "CMD":
            found["CMD"] = json.loads(rest)
        elif word == "HEALTHCHECK":
            found["HEALTHCHECK"] = json.loads(rest[rest.index("CMD") + 3 :])
    return found


def on_port(argv: list[str], port: int) -> list[str]:
    return [arg.replace(IMAGE_PORT, str(port)) for arg in argv]


def start(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    command = [str(BIN / argv[0]) if (BIN / argv[0]).exists() else argv[0], *argv[1:]]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("IMMUTABLELOG_")}
    return subprocess.Popen(
        command,
        env={**clean, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **env},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_healthy(url: str, process: subprocess.Popen[str]) -> None:
    import time

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[0]
        try:
            if HTTP.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except Exception:
            time.sleep(0.1)
    raise AssertionError(f"no server at {url}")


def stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    # uvicorn ends by re-raising the signal once shut down; systemd and docker count that clean.
    assert process.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete." in output
    return output


@pytest.fixture
def image_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = dict(dockerfile()["ENV"])  # type: ignore[arg-type]
    env["IMMUTABLELOG_DATA_DIR"] = str(tmp_path / "var-lib-immutablelog")
    yield env


def test_the_image_command_serves_and_passes_its_health_check(
    tmp_path: Path, image_env: dict[str, str]
) -> None:
    found = dockerfile()
    port = free_port()
    server = start(on_port(found["CMD"], port), image_env, tmp_path)  # type: ignore[arg-type]
    try:
        wait_healthy(f"http://127.0.0.1:{port}", server)
        health = subprocess.run(
            on_port(found["HEALTHCHECK"], port),  # type: ignore[arg-type]
            env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"},
            timeout=30,
        )
        assert health.returncode == 0
    finally:
        output = stop(server)
    records = [json.loads(line) for line in output.splitlines()]  # JSON, every line
    assert any(r["message"].startswith("created tenant") for r in records)
    assert (Path(image_env["IMMUTABLELOG_DATA_DIR"]) / "ledger.db").exists()


def test_the_compose_file_runs_the_image_on_postgresql(
    tmp_path: Path, image_env: dict[str, str], postgres_url: str
) -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    service = compose["services"]["immutablelog"]
    assert (DEPLOY.parent / service["build"]["context"].replace("..", ".")).exists()
    assert (DEPLOY.parent / service["build"]["dockerfile"]).exists()
    assert "postgres" in service["depends_on"]
    env = {**image_env, **service["environment"]}
    assert env["IMMUTABLELOG_DATABASE_URL"].startswith("postgresql://")
    env["IMMUTABLELOG_DATABASE_URL"] = postgres_url  # this machine's PostgreSQL
    port = free_port()
    server = start(on_port(dockerfile()["CMD"], port), env, tmp_path)  # type: ignore[arg-type]
    try:
        wait_healthy(f"http://127.0.0.1:{port}", server)
    finally:
        output = stop(server)
    shown_once = [json.loads(line) for line in output.splitlines() if "shown once" in line]
    assert shown_once and shown_once[0]["ingest_key"].startswith("iml_live_")


def test_the_systemd_unit_starts_the_server_with_the_example_config(tmp_path: Path) -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(DEPLOY / "immutablelog.service")
    service = unit["Service"]
    env = dict(
        line.split("=", 1)
        for line in (DEPLOY / "immutablelog.service").read_text().splitlines()
        if line.startswith("Environment=")
        for line in [line.removeprefix("Environment=")]
    )
    data_dir = tmp_path / "var-lib-immutablelog"
    data_dir.mkdir()
    port = free_port()
    config = tmp_path / "immutablelog.toml"
    config.write_text(
        (DEPLOY / "immutablelog.toml").read_text().replace(f"port = {IMAGE_PORT}", f"port = {port}")
    )
    assert env["IMMUTABLELOG_CONFIG"] == "/etc/immutablelog/immutablelog.toml"
    env["IMMUTABLELOG_CONFIG"] = str(config)
    assert env["IMMUTABLELOG_DATA_DIR"] == service["WorkingDirectory"]
    env["IMMUTABLELOG_DATA_DIR"] = str(data_dir)
    argv = shlex.split(service["ExecStart"])
    assert argv[0] == "/opt/immutablelog/bin/immutablelog"
    server = start(["immutablelog", *argv[1:]], env, data_dir)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", server)  # the port came from the config file
    finally:
        output = stop(server)  # KillSignal=SIGTERM: a clean exit
    assert all(json.loads(line) for line in output.splitlines())
    assert (data_dir / "ledger.db").exists()
