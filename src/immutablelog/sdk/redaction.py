"""Redaction: keep secrets out of a log that can never be erased.

An audit ledger is append-only by design, so a password that reaches it stays there forever.
The seed stored failed requests' bodies and raw query strings verbatim; a failed login's
password or a ``?token=`` ended up in the permanent record. Everything the SDK captures from a
request (query parameters, JSON and form bodies, allowlisted headers, custom event data, the
actor) goes through a :class:`Redactor` before it is serialized.

Matching works on a *normalized* key (lower-cased, everything but letters and digits removed), so
``X-CSRF-Token``, ``csrf_token`` and ``csrfToken`` are the same key. The default denylist is
modelled on sentry-python's ``DEFAULT_DENYLIST`` and widened to the families the issue names
(card numbers, CVV, SSNs); a fragment matches anywhere inside the key (``new_password``,
``refresh_token``), while a few short, ambiguous words only match the whole key (``pin`` must not
redact ``shipping``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode

#: What a redacted value is replaced with (the same marker sentry-python uses).
FILTERED: Final = "[Filtered]"

#: Fragments that mark a key as sensitive wherever they occur in the normalized key.
DEFAULT_DENY_FRAGMENTS: Final[tuple[str, ...]] = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "accesskey",
    "privatekey",
    "signingkey",
    "encryptionkey",
    "credential",
    "authorization",
    "authentication",
    "bearer",
    "cookie",
    "session",
    "csrf",
    "xsrf",
    "signature",
    "cardnumber",
    "creditcard",
    "ccnumber",
    "cvv",
    "cvc",
    "securitycode",
    "socialsecurity",
    "mysqlpwd",
    "oauth",
)

#: Short words that are sensitive only as the whole key (as fragments they over-match).
DEFAULT_DENY_EXACT: Final[frozenset[str]] = frozenset(
    {
        "auth",
        "pass",
        "pwd",
        "pin",
        "otp",
        "totp",
        "mfa",
        "mfacode",
        "sid",
        "connectsid",
        "phpsessid",
        "jsessionid",
        "aspnetsessionid",
        "ssn",
        "pan",
        "cc",
        "cvn",
        "jwt",
    }
)

#: A custom scrubber receives the finished payload (after the built-in redaction) and returns the
#: payload to store. It runs in the background worker, never in the request thread.
Scrubber = Callable[[dict[str, Any]], dict[str, Any]]

_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def normalize_key(key: str) -> str:
    """Lower-case ``key`` and drop separators, so every spelling of a name compares equal."""
    return _NON_ALNUM.sub("", key.lower())


class Redactor:
    """Decides which keys are secret and replaces their values with :data:`FILTERED`.

    ``extra_keys`` widen the denylist (matched as fragments, like the defaults); ``allow_keys``
    are whole normalized keys that are never redacted (e.g. ``token_count``), which is how a
    false positive of the fragment rules is switched off. The redactor is immutable after
    construction and caches its decisions, so sharing one between threads is safe.
    """

    __slots__ = ("_allow", "_cache", "_exact", "_fragments")

    def __init__(
        self,
        extra_keys: Iterable[str] = (),
        allow_keys: Iterable[str] = (),
    ) -> None:
        extra = tuple(normalize_key(k) for k in extra_keys if normalize_key(k))
        self._fragments: tuple[str, ...] = DEFAULT_DENY_FRAGMENTS + extra
        self._exact: frozenset[str] = DEFAULT_DENY_EXACT
        self._allow: frozenset[str] = frozenset(normalize_key(k) for k in allow_keys)
        self._cache: dict[str, bool] = {}

    def is_sensitive(self, key: str) -> bool:
        """Whether values stored under ``key`` must be redacted."""
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        norm = normalize_key(key)
        verdict = norm not in self._allow and (
            norm in self._exact or any(fragment in norm for fragment in self._fragments)
        )
        if len(self._cache) < 4096:  # bounded: keys come from untrusted input
            self._cache[key] = verdict
        return verdict

    def scrub(self, value: Any) -> Any:
        """Return a copy of ``value`` with every sensitive key's value replaced, at any depth.

        Lists are walked too, so ``{"users": [{"password": ...}]}`` is covered. Non-container
        values are returned unchanged.
        """
        if isinstance(value, Mapping):
            return {
                k: (FILTERED if isinstance(k, str) and self.is_sensitive(k) else self.scrub(v))
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.scrub(v) for v in value]
        return value

    def scrub_pairs(self, pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """Redact a sequence of form or query ``(key, value)`` pairs, keeping order and repeats."""
        return [(k, FILTERED if self.is_sensitive(k) else v) for k, v in pairs]

    def scrub_query(self, query: Mapping[str, str]) -> dict[str, str]:
        """Redact a flat query-parameter mapping."""
        return {k: (FILTERED if self.is_sensitive(k) else v) for k, v in query.items()}

    def scrub_body(self, body: bytes, content_type: str | None) -> str | None:
        """Return the text of a request body that is safe to store, or ``None`` to store nothing.

        JSON bodies are parsed and redacted at any depth; URL-encoded form bodies pair by pair.
        When nothing was sensitive the original text is kept byte for byte; otherwise the
        redacted structure is re-serialized. Bodies that cannot be parsed or whose format cannot
        be redacted field by field (multipart, plain text, XML, malformed JSON) are not stored:
        a secret inside them could not be found, and the ledger cannot forget it later.
        """
        mime = (content_type or "").split(";", 1)[0].strip().lower()
        text = body.decode("utf-8", errors="replace")
        if mime == "application/json" or mime.endswith("+json"):
            try:
                parsed = json.loads(text)
            except ValueError:
                return None
            redacted = self.scrub(parsed)
            if redacted == parsed:
                return text
            return json.dumps(redacted, ensure_ascii=False)
        if mime == "application/x-www-form-urlencoded":
            pairs = parse_qsl(text, keep_blank_values=True)
            scrubbed = self.scrub_pairs(pairs)
            if scrubbed == pairs:
                return text
            return urlencode(scrubbed, safe="[]")
        return None
