"""Another project's test suite, unchanged, with the ASGI middleware installed: FastAPI's own
tutorial apps and their tests (from the sdist of the installed FastAPI: routing, dependencies,
error handlers, custom and streaming responses, server-sent events, background tasks, CORS and
other middleware, sub-applications, cookies, lifespan events). Every ``TestClient`` they make
serves its app wrapped outermost (``plugins/audit_every_client.py``); the suite must still pass,
and each request it served must be one event in a real ledger server."""

from __future__ import annotations

import collections
import importlib.metadata
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.live import LiveServer

pytestmark = pytest.mark.slow

PLUGINS = Path(__file__).parent / "plugins"
#: Tutorial test folders whose apps need nothing beyond the dev extra.
TUTORIALS = (
    "test_additional_responses",
    "test_advanced_middleware",
    "test_background_tasks",
    "test_behind_a_proxy",
    "test_bigger_applications",
    "test_body",
    "test_cors",
    "test_custom_response",
    "test_dependencies",
    "test_events",
    "test_handling_errors",
    "test_middleware",
    "test_path_params",
    "test_query_params",
    "test_response_cookies",
    "test_response_directly",
    "test_response_headers",
    "test_server_sent_events",
    "test_stream_data",
    "test_stream_json_lines",
    "test_sub_applications",
)
#: Needs ujson, which the dev extra does not install.
DESELECTED = "tests/test_tutorial/test_custom_response/test_tutorial001.py"


@pytest.fixture(scope="module")
def fastapi_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist of the installed FastAPI, unpacked (it ships its tutorials and their tests)."""
    version = importlib.metadata.version("fastapi")
    where = tmp_path_factory.mktemp("fastapi-sdist")
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
         "--dest", str(where), f"fastapi=={version}"],
        check=True, capture_output=True, timeout=240,
    )  # fmt: skip
    (archive,) = where.glob("fastapi-*.tar.gz")
    with tarfile.open(archive) as tar:
        tar.extractall(where, filter="data")
    return where / f"fastapi-{version}"


def test_fastapis_tutorial_suite_passes_and_every_request_is_one_event(
    live_server: LiveServer, fastapi_source: Path, tmp_path: Path
) -> None:
    count = tmp_path / "requests.txt"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(PLUGINS), os.environ.get("PYTHONPATH", "")]),
        "IMMUTABLELOG_URL": live_server.url,
        "IMMUTABLELOG_API_KEY": live_server.ingest_key,
        "AUDIT_SUITE_COUNT": str(count),
        "AUDIT_SUITE_SPOOL": str(tmp_path / "spool"),
    }
    result = subprocess.run(
        [
            sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
            "-p", "audit_every_client",
            # The suite's own configuration runs under pytest-xdist and httpx2; neither is here.
            "-o", "markers=xdist_group: tests that share a worker",
            "-W", "ignore::starlette.exceptions.StarletteDeprecationWarning",
            "--deselect", DESELECTED,
            *(f"tests/test_tutorial/{name}" for name in TUTORIALS),
        ],
        cwd=fastapi_source, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-3000:]
    assert " passed" in summary and " error" not in summary, summary
    served = count.read_text().splitlines()
    assert len(served) > 300, summary  # the suite really went through the middleware
    events = [e for e in live_server.entries() if e["service"] == "third-party-suite"]
    request_ids = collections.Counter(e["request_id"] for e in events)
    assert len(events) == len(served), (len(events), len(served))
    assert all(n == 1 for n in request_ids.values())
