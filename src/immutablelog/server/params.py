"""Query parameters and headers, read strictly: one parser per kind of value.

Each answers bad input with a 400 naming the parameter, never a 500 from deeper down: only
ASCII digits are numbers (``str.isdigit`` also accepts ``²`` and ``٣``), numbers stay within
what the OpenAPI document declares (and what a 64-bit database column holds), a parameter
given twice is refused rather than silently read once, and NUL never reaches a database.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Final

from starlette.requests import Request

from immutablelog.server.errors import ApiError

#: The largest index or tree size any parameter or cursor may name (as declared in the
#: OpenAPI document); far beyond any real log, well within a signed 64-bit column.
MAX_POSITION: Final = 2**62
MAX_TEXT_CHARS: Final = 1000
_UNSIGNED: Final = re.compile(r"[0-9]{1,19}")
_SIGNED: Final = re.compile(r"[+-]?[0-9]{1,19}")


def single(request: Request, name: str) -> str | None:
    """The parameter's one value, or None if absent; NUL or a repeat is a 400."""
    values = request.query_params.getlist(name)
    if not values:
        return None
    if len(values) > 1:
        raise ApiError(400, "repeated_parameter", f"query parameter {name} is given more than once")
    value = values[0]
    if "\x00" in value:
        raise ApiError(400, "invalid_parameter", f"{name} must not contain NUL")
    return value


def parse_int(raw: str, name: str, minimum: int = 0, maximum: int = MAX_POSITION) -> int:
    """ASCII digits (a sign only if ``minimum`` is negative) within [minimum, maximum]."""
    pattern = _SIGNED if minimum < 0 else _UNSIGNED
    if not pattern.fullmatch(raw) or not minimum <= int(raw) <= maximum:
        raise ApiError(
            400, "invalid_parameter", f"{name} must be an integer from {minimum} to {maximum}"
        )
    return int(raw)


def int_param(
    request: Request,
    name: str,
    default: int | None = None,
    *,
    minimum: int = 0,
    maximum: int = MAX_POSITION,
) -> int:
    """An integer query parameter; without a default it is required."""
    raw = single(request, name)
    if raw is None:
        if default is None:
            raise ApiError(400, "missing_parameter", f"query parameter {name} is required")
        return default
    return parse_int(raw, name, minimum, maximum)


def text_param(request: Request, name: str, max_chars: int = MAX_TEXT_CHARS) -> str | None:
    value = single(request, name)
    if value is not None and len(value) > max_chars:
        raise ApiError(400, "invalid_parameter", f"{name} is longer than {max_chars} characters")
    return value


def choice_param(request: Request, name: str, choices: tuple[str, ...]) -> str:
    """One of ``choices`` (the first when absent; an empty value is not absent)."""
    value = single(request, name)
    if value is None:
        return choices[0]
    if value not in choices:
        raise ApiError(400, "invalid_parameter", f"{name} must be {' or '.join(choices)}")
    return value


def time_param(request: Request, name: str) -> datetime | None:
    """An RFC 3339 time with its zone, as UTC (``9999-12-31T23:59:59-14:00`` is past
    year 9999 in UTC, and refused like any other time that cannot be represented)."""
    raw = text_param(request, name, 64)
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw)
        if moment.tzinfo is None:
            raise ApiError(400, "invalid_parameter", f"{name} must carry a time zone (e.g. Z)")
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ApiError(
            400, "invalid_parameter", f"{name} must be an RFC 3339 time within years 1-9999"
        ) from None


def position(value: Any) -> int | None:
    """A log position read from a decoded cursor: a real integer (not ``true``) in range."""
    if type(value) is int and 0 <= value <= MAX_POSITION:
        return value
    return None
