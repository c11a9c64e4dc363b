"""NaN and infinities are not JSON, and the ledger refuses documents that hold them: the SDK
sends them as text, so an event with such a number is stored, not dead-lettered."""

from __future__ import annotations

import json
from pathlib import Path

from immutablelog.sdk import DeliveryOptions, ImmutableLogClient
from immutablelog.sdk.events import finite
from tests.live import LiveServer


def test_non_finite_numbers_reach_the_ledger_as_text(
    live_server: LiveServer, tmp_path: Path
) -> None:
    with ImmutableLogClient(
        live_server.url,
        live_server.ingest_key,
        service_name="metrics-job",
        delivery=DeliveryOptions(spool_dir=str(tmp_path / "spool")),
    ) as audit:
        audit.record(
            "ratio.computed",
            ratio=float("nan"),
            bounds=[float("-inf"), 1.5, float("inf")],
            actor={"score": float("nan")},
        )
        assert audit.flush(30)
        assert audit.stats().dead_lettered == 0
    (event,) = [e for e in live_server.entries() if e["service"] == "metrics-job"]
    payload = json.loads(event["payload"])
    assert payload["data"] == {"ratio": "nan", "bounds": ["-inf", 1.5, "inf"]}
    assert payload["context"]["actor"] == {"score": "nan"}


def test_finite_leaves_everything_else_alone() -> None:
    value = {"a": [1, 2.5, "x", None, True, {"b": float("inf")}], "c": (float("nan"),)}
    assert finite(value) == {"a": [1, 2.5, "x", None, True, {"b": "inf"}], "c": ["nan"]}
