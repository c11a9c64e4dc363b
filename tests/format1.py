"""Entries as the previous release wrote them (format 1: payload and every meta field in the
hashed bytes), for logs that mix both formats."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pytest

from immutablelog import entry
from immutablelog.entry import Submission


def as_format_1(submissions: Sequence[Submission]) -> list[Submission]:
    """The submissions without an erasable part: built inside :func:`writing_format_1`,
    their entries are exactly the previous release's."""
    return [dataclasses.replace(sub, erasable=None) for sub in submissions]


@contextmanager
def writing_format_1() -> Iterator[None]:
    """Within: entries are built with ``"v": 1`` (a clear submission then gives the bytes
    the previous release wrote)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(entry, "ENTRY_VERSION", 1)
        yield
