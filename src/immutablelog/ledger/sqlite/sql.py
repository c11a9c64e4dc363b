"""SQL pieces the SQLite modules share."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")
# SQLite caps bound parameters per statement (32766 since 3.32); stay well below.
CHUNK = 500
#: The erasable part beside an entry ``e`` (as ``x``; NULL columns when there is none).
WITH_PART = "LEFT JOIN main.erasables AS x ON x.tenant_id = e.tenant_id AND x.idx = e.idx"


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    """``items`` in slices of ``size``, each small enough for one statement's parameters."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
