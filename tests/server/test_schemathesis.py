"""Fuzz the live server from its own OpenAPI document with every check schemathesis has:
never a 5xx, valid requests accepted, invalid ones refused, answers that match the schema.

A few rules of the API are relations between values that a JSON Schema cannot state; the
configuration below names them operation by operation (and nothing else), so that the check
that "schema-valid requests are accepted" still holds everywhere else.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.live import HTTP, LiveServer

#: operation -> statuses a schema-valid request may also get, and why.
RELATIONAL_RULES = {
    # The payload must be a JSON document inside a string, meta must name an event type...
    ("POST", "/v1/events"): [422],
    ("POST", "/v1/events/batch"): [422],
    # A cursor is opaque: any other string of its alphabet is not one the server made.
    ("GET", "/v1/events"): [400],
    # index < size and first <= second: no proof exists otherwise.
    ("GET", "/v1/proofs/inclusion"): [400],
    ("GET", "/v1/proofs/consistency"): [400],
    # The event's index must be inside the tree size asked for.
    ("GET", "/v1/events/{event_id}"): [400],
    # from <= to.
    ("GET", "/v1/verify"): [400],
    # end >= start.
    ("GET", "/v1/entries"): [400],
    # A reason is one line of text with a letter in it; the log's own records and format 1
    # entries are not erasable; ids and actor go one at a time.
    ("DELETE", "/v1/events/{event_id}"): [400, 422],
    ("POST", "/v1/erasures"): [400, 422],
    # A link's times must exist in UTC (9999-12-31T23:59:59-14:00 does not).
    ("POST", "/v1/viewer-links"): [422],
}
ALWAYS_FINE = ["2xx", 401, 403, 404, 409, 429]
#: operation -> refusals besides schemathesis's defaults: too many events is 413, not 400.
TOO_LARGE = {
    ("POST", "/v1/events"): [413],
    ("POST", "/v1/events/batch"): [413],
    ("POST", "/v1/erasures"): [413],
}
REFUSALS = [400, 401, 403, 404, 405, 406, 409, 415, 422, 428, 429]


def config(event_id: str) -> str:
    lines = []
    for method, path in RELATIONAL_RULES.keys() | TOO_LARGE.keys():
        lines += ["[[operations]]", f'include-name = "{method} {path}"']
        if (method, path) in RELATIONAL_RULES:
            accepted = [*ALWAYS_FINE, *RELATIONAL_RULES[method, path]]
            lines.append(f"checks.positive_data_acceptance.expected-statuses = {accepted}")
        if (method, path) in TOO_LARGE:
            refused = [*REFUSALS, *TOO_LARGE[method, path]]
            lines.append(f"checks.negative_data_rejection.expected-statuses = {refused}")
        lines.append("")
    # A real event, so that reading one is tested beyond its 404.
    lines += [
        "[[operations]]",
        'include-path = "/v1/events/{event_id}"',
        f'parameters = {{ event_id = "{event_id}" }}',
        "",
    ]
    return "\n".join(lines)


@pytest.mark.parametrize(("scopes", "seed"), [("admin", 20261128), ("admin", 7), ("ingest", 11)])
def test_schemathesis_finds_nothing(
    live_server: LiveServer, tmp_path: Path, scopes: str, seed: int
) -> None:
    binary = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert binary, "schemathesis is a dev dependency"
    meta = {"type": "info", "event_name": "seed.event", "service": "fuzz"}
    accepted = HTTP.post(
        live_server.url + "/v1/events",
        json={"payload": "{}", "meta": meta},
        headers=live_server.headers(),
    ).json()
    config_file = tmp_path / "schemathesis.toml"
    config_file.write_text(config(accepted["tx_id"]))
    key = live_server.admin_key if scopes == "admin" else live_server.ingest_key
    result = subprocess.run(
        [
            binary,
            "--config-file",
            str(config_file),
            "run",
            f"{live_server.url}/openapi.json",
            "--checks",
            "all",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "40",
            "--seed",
            str(seed),
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
