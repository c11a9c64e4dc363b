"""What ``pip install 'immutablelog[flask]'`` brings into a fresh virtualenv, and that the SDK
works there: an app needs the extension, not the tools."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.live import LiveServer

ROOT = Path(__file__).resolve().parents[1]

#: Flask and what it needs, and the SDK's own two. Nothing of the server, the CLI or the
#: verifier (rich, httpx, anyio, pygments, markdown-it, starlette, uvicorn, psycopg…).
SDK_INSTALL = {
    "immutablelog", "flask", "werkzeug", "jinja2", "markupsafe", "itsdangerous", "click",
    "blinker", "cryptography", "cffi", "pycparser", "orjson", "pip", "setuptools",
}  # fmt: skip

APP = """
import sys
from flask import Flask
from immutablelog.flask import ImmutableLogAudit

app = Flask("light")
audit = ImmutableLogAudit(app, api_key=sys.argv[1], api_url=sys.argv[2], service_name="light")
app.get("/ping")(lambda: "pong")
assert app.test_client().get("/ping").status_code == 200
assert audit.flush(timeout=30), audit.stats()
print(audit.stats().sent)
"""


@pytest.mark.slow
def test_the_flask_extra_alone_is_light_and_delivers(
    tmp_path: Path, shared_server: LiveServer
) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)],
        check=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("immutablelog-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    subprocess.run(
        [python, "-m", "pip", "install", "-q", f"{wheel}[flask]"], check=True, timeout=600
    )
    listed = subprocess.run(
        [python, "-m", "pip", "list", "--format", "json"],
        check=True,
        capture_output=True,
        text=True,
    )
    installed = {p["name"].lower().replace("_", "-") for p in json.loads(listed.stdout)}
    print("pip install 'immutablelog[flask]' installed:", ", ".join(sorted(installed)))
    assert installed - SDK_INSTALL == set()
    assert {"immutablelog", "flask", "cryptography", "orjson"} <= installed

    app = subprocess.run(
        [python, "-c", APP, shared_server.ingest_key, shared_server.url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert app.returncode == 0, app.stderr
    assert app.stdout.strip() == "1"
    assert shared_server.entries()[-1]["event_name"] == "http.GET./ping"

    # The command line is not part of this install: it says which extra to add.
    command = subprocess.run(
        [str(venv / "bin" / "immutablelog"), "--help"], capture_output=True, text=True
    )
    assert command.returncode == 1
    (line,) = command.stderr.strip().splitlines()
    assert line.startswith("Error: the immutablelog command needs the 'cli' extra")
    assert line.endswith(": pip install 'immutablelog[cli]'")
    library = subprocess.run(
        [python, "-c", "import immutablelog.verify"], capture_output=True, text=True
    )
    assert library.returncode == 1
    assert library.stderr.strip().splitlines()[-1].endswith(": pip install 'immutablelog[verify]'")
