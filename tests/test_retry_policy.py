"""The one retry policy of the SDK's delivery and the verifier's downloads."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from immutablelog.retry_policy import backoff, is_transient, parse_retry_after


@pytest.mark.parametrize(
    ("status", "transient"),
    [(500, True), (501, True), (503, True), (599, True), (408, True), (425, True), (429, True),
     (400, False), (401, False), (403, False), (404, False), (409, False), (413, False),
     (422, False), (200, False)],
)  # fmt: skip
def test_which_answers_are_transient(status: int, transient: bool) -> None:
    assert is_transient(status) is transient


@given(st.integers(min_value=0, max_value=10_000), st.floats(0.001, 10), st.floats(0.001, 600))
def test_backoff_grows_with_equal_jitter_and_stays_under_its_cap(
    attempt: int, initial: float, maximum: float
) -> None:
    full = min(maximum, initial * 2.0 ** min(attempt, 32))
    assert full / 2 <= backoff(attempt, initial, maximum) <= full


def test_a_retry_after_is_capped_by_the_caller() -> None:
    assert parse_retry_after("120", cap=30) == 30
    assert parse_retry_after("12", cap=30) == 12
    assert parse_retry_after("nan") is None
    assert parse_retry_after("soon") is None
