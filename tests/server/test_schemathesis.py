"""Fuzz the live server from its own OpenAPI document: never a 5xx, answers match the schema."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.live import LiveServer

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)


@pytest.mark.parametrize("scopes", ["admin", "ingest"])
def test_schemathesis_finds_no_server_error(
    live_server: LiveServer, tmp_path: Path, scopes: str
) -> None:
    binary = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert binary, "schemathesis is a dev dependency"
    key = live_server.admin_key if scopes == "admin" else live_server.ingest_key
    result = subprocess.run(
        [
            binary,
            "run",
            f"{live_server.url}/openapi.json",
            "--checks",
            CHECKS,
            "--max-examples",
            "60",
            "--seed",
            "20261128",
            "--request-timeout",
            "20",
            "-H",
            f"Authorization: Bearer {key}",
            "--report-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    assert "Traceback" not in live_server.log()
