"""Other projects' test suites, unchanged, with our middleware installed; each must still pass,
and each request it served must be one event in a real ledger server.

* FastAPI's own tutorial apps and their tests (from the sdist of the installed FastAPI:
  routing, dependencies, error handlers, custom and streaming responses, server-sent events,
  background tasks, CORS and other middleware, sub-applications, cookies, lifespan events), with
  every ``TestClient`` serving its app wrapped outermost in the ASGI middleware
  (``plugins/audit_every_client.py``).
* Django's own test suite for requests, responses, middleware, views, the test client, CSRF and
  sessions (from the sdist of the installed Django), with the Django middleware first in the
  middleware it always installs (``plugins/django_suite_settings.py``), sync and async.
"""

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


#: Django's test packages that serve requests through the middleware chain.
DJANGO_SUITES = (
    "csrf_tests",
    "generic_views",
    "handlers",
    "middleware",
    "middleware_exceptions",
    "requests_tests",
    "responses",
    "sessions_tests",
    "shortcuts",
    "test_client",
    "test_client_regress",
    "urlpatterns_reverse",
    "view_tests",
)


def unpacked_sdist(distribution: str, where: Path) -> Path:
    """The sdist of the installed ``distribution``, unpacked (it ships the project's tests)."""
    version = importlib.metadata.version(distribution)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
         "--dest", str(where), f"{distribution}=={version}"],
        check=True, capture_output=True, timeout=240,
    )  # fmt: skip
    (archive,) = where.glob("*.tar.gz")
    with tarfile.open(archive) as tar:
        tar.extractall(where, filter="data")
    (unpacked,) = (path for path in where.iterdir() if path.is_dir())
    return unpacked


def suite_env(server: LiveServer, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "IMMUTABLELOG_URL": server.url,
        "IMMUTABLELOG_API_KEY": server.ingest_key,
        "AUDIT_SUITE_COUNT": str(tmp_path / "requests.txt"),
        "AUDIT_SUITE_SPOOL": str(tmp_path / "spool"),
    }


def assert_one_event_per_request(server: LiveServer, tmp_path: Path, service: str) -> None:
    served = (tmp_path / "requests.txt").read_text().splitlines()
    assert len(served) > 300  # the suite really went through the middleware
    events = [e for e in server.entries() if e["service"] == service]
    request_ids = collections.Counter(e["request_id"] for e in events)
    missing = collections.Counter(served) - collections.Counter(
        e["event_name"].replace("http.", "", 1).replace(".", " ", 1) for e in events
    )
    assert len(events) == len(served), (len(events), len(served), missing)
    assert all(n == 1 for n in request_ids.values())


def test_fastapis_tutorial_suite_passes_and_every_request_is_one_event(
    live_server: LiveServer, tmp_path: Path
) -> None:
    source = unpacked_sdist("fastapi", tmp_path / "sdist")
    env = suite_env(live_server, tmp_path)
    env["PYTHONPATH"] = os.pathsep.join([str(PLUGINS), os.environ.get("PYTHONPATH", "")])
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
        cwd=source, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-3000:]
    assert " passed" in summary and " error" not in summary, summary
    assert_one_event_per_request(live_server, tmp_path, "third-party-suite")


def test_djangos_own_suite_passes_and_every_request_is_one_event(
    live_server: LiveServer, tmp_path: Path
) -> None:
    source = unpacked_sdist("django", tmp_path / "sdist")
    env = suite_env(live_server, tmp_path)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(PLUGINS), str(source / "tests"), os.environ.get("PYTHONPATH", "")]
    )
    result = subprocess.run(
        [sys.executable, "runtests.py", "--settings", "django_suite_settings", "--parallel", "1",
         *DJANGO_SUITES],
        cwd=source / "tests", env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-5000:]
    assert "\nOK" in result.stderr, result.stderr[-3000:]
    assert_one_event_per_request(live_server, tmp_path, "django-suite")
