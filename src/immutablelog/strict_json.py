"""Parsing JSON the way an audit log must: I-JSON (RFC 7493), with a nesting limit.

A log that rewrites what a client sent, or picks one of two values for the same key, would
store something the client never meant. So a document is refused, never repaired, when it
holds a duplicate object key, ``NaN`` or ``Infinity`` (not JSON at all), a number whose value
does not survive a round trip through an IEEE 754 double (``1e400``, ``1e-400``,
``1.00000000000000000001``), or nests deeper than the caller allows. Integers of any size are
kept exactly, as Python reads them.

The standard library's decoder is used because it lets each of these be checked while
parsing (orjson, faster, keeps the last of duplicate keys and reads big integers as floats).
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, Final

#: Objects and arrays nested inside one another, at most, when no other limit is given: the
#: parser's own recursion limit is near a thousand and depends on the caller's stack.
DEFAULT_MAX_DEPTH: Final = 512


class JSONRejected(ValueError):
    """A document that is not acceptable JSON; ``reason`` is a machine code:
    ``malformed_json``, ``duplicate_key``, ``invalid_number`` or ``json_too_deep``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise JSONRejected("duplicate_key", f"the key {key!r} appears twice in one object")
            seen.add(key)
    return obj


def _no_constant(name: str) -> Any:
    raise JSONRejected("invalid_number", f"{name} is not a JSON number")


def _exact_float(text: str) -> float:
    value = float(text)
    # repr() is the shortest text that reads back as the same double: if it denotes another
    # number than the client wrote, the double cannot hold what was sent.
    if value in (float("inf"), float("-inf")) or Decimal(repr(value)) != Decimal(text):
        raise JSONRejected("invalid_number", f"the number {text[:40]} does not fit a double")
    return value


_DECODER: Final = json.JSONDecoder(
    object_pairs_hook=_unique_keys, parse_constant=_no_constant, parse_float=_exact_float
)


def depth(value: Any) -> int:
    """How deeply objects and arrays nest in a parsed value (a scalar is 0)."""
    deepest = 0
    level: list[Any] = [value]
    while level:
        containers = [v for v in level if isinstance(v, dict | list)]
        if not containers:
            break
        deepest += 1
        level = [
            child
            for container in containers
            for child in (container.values() if isinstance(container, dict) else container)
        ]
    return deepest


def _bracket_bound(text: str | bytes) -> int:
    """An upper bound on the nesting of a document, counted in C: its opening brackets."""
    if isinstance(text, bytes):
        return text.count(b"[") + text.count(b"{")
    return text.count("[") + text.count("{")


def loads(text: str | bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Parse ``text`` (bytes must be UTF-8), refusing anything but I-JSON nested at most
    ``max_depth`` levels, with :class:`JSONRejected`."""
    try:
        document = text.decode("utf-8") if isinstance(text, bytes) else text
        value = _DECODER.decode(document)
    except JSONRejected:
        raise
    except RecursionError:
        raise _too_deep(max_depth) from None
    except UnicodeDecodeError:
        raise JSONRejected("malformed_json", "the document is not UTF-8") from None
    except ValueError as exc:  # JSONDecodeError, and integers past Python's digit limit
        raise JSONRejected("malformed_json", f"not valid JSON: {exc}") from None
    # Counting brackets is cheap and almost always settles it; only a document with more
    # brackets than the limit is measured exactly.
    if _bracket_bound(document) > max_depth and depth(value) > max_depth:
        raise _too_deep(max_depth)
    return value


def check_depth(value: Any, max_depth: int) -> None:
    """Refuse an already parsed value that nests deeper than ``max_depth``."""
    if depth(value) > max_depth:
        raise _too_deep(max_depth)


def _too_deep(max_depth: int) -> JSONRejected:
    return JSONRejected("json_too_deep", f"objects and arrays nest deeper than {max_depth} levels")
