"""strict_json: I-JSON with a nesting limit, refused rather than repaired."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from immutablelog import strict_json
from immutablelog.strict_json import JSONRejected

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)


@given(JSON_VALUES)
def test_every_document_python_writes_reads_back_equal(value: Any) -> None:
    assert strict_json.loads(json.dumps(value)) == value
    assert strict_json.loads(json.dumps(value).encode()) == value


@given(JSON_VALUES)
def test_depth_counts_containers(value: Any) -> None:
    wrapped = [{"k": value}]
    assert strict_json.depth(wrapped) == strict_json.depth(value) + 2


def reason(text: str | bytes, max_depth: int = strict_json.DEFAULT_MAX_DEPTH) -> str:
    with pytest.raises(JSONRejected) as caught:
        strict_json.loads(text, max_depth)
    return caught.value.reason


@pytest.mark.parametrize(
    "text", ['{"a": 1, "a": 1}', '[{"x": {"y": 1, "y": 2}}]', '{"": 1, "": 2}', '{"é": 1, "é": 2}']
)
def test_a_duplicate_key_at_any_depth_is_refused(text: str) -> None:
    assert reason(text) == "duplicate_key"


def test_keys_equal_only_after_unescaping_are_duplicates() -> None:
    assert reason('{"a": 1, "\\u0061": 2}') == "duplicate_key"


@pytest.mark.parametrize(
    "text",
    [
        "NaN",
        "-NaN",
        "Infinity",
        "-Infinity",
        "[1e400]",
        "-1e400",
        "1e-400",
        "1.00000000000000000001",
    ],
)
def test_numbers_a_double_cannot_hold_are_refused(text: str) -> None:
    assert reason(text) in ("invalid_number", "malformed_json")


@pytest.mark.parametrize(
    "text", ["0.1", "1.5e3", "-0.0", "5e-324", "1.7976931348623157e308", "1E2"]
)
def test_numbers_a_double_holds_are_read(text: str) -> None:
    value = strict_json.loads(text)
    assert isinstance(value, float) and math.isfinite(value)


def test_integers_of_any_size_are_kept_exactly() -> None:
    assert strict_json.loads("123456789012345678901234567890") == 123456789012345678901234567890


@pytest.mark.parametrize("limit", [1, 2, 64])
def test_the_nesting_limit_is_exact(limit: int) -> None:
    at_limit = "[" * limit + "]" * limit
    assert strict_json.depth(strict_json.loads(at_limit, limit)) == limit
    assert reason("[" + at_limit + "]", limit) == "json_too_deep"
    assert reason('{"a":' * (limit + 1) + "1" + "}" * (limit + 1), limit) == "json_too_deep"


def test_brackets_inside_strings_do_not_count() -> None:
    assert strict_json.loads('["[[[[[[[[[["]', 1) == ["[[[[[[[[[["]


def test_nesting_past_the_parsers_own_limit_is_too_deep_not_a_crash() -> None:
    assert reason("[" * 100_000 + "]" * 100_000) == "json_too_deep"


@pytest.mark.parametrize("text", [b"\xff", b'"\xc3"', "", "{", "[1,]", "01", "'a'", "{'a': 1}"])
def test_malformed_documents_are_refused(text: str | bytes) -> None:
    assert reason(text) == "malformed_json"


def test_check_depth_refuses_a_deep_parsed_value() -> None:
    deep: Any = 1
    for _ in range(5):
        deep = {"a": deep}
    strict_json.check_depth(deep, 5)
    with pytest.raises(JSONRejected):
        strict_json.check_depth(deep, 4)
