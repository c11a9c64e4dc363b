"""How many of a thing, in words: ``1 entry``, ``2 entries``, ``1,200 events``."""

from __future__ import annotations


def counted(n: int, one: str, many: str | None = None) -> str:
    """``n`` with the noun's singular or plural (``one + "s"`` unless given)."""
    return f"{n:,} {one if n == 1 else (many or one + 's')}"
