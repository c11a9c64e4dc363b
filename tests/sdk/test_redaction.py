"""Redaction: secrets never reach the append-only log, whatever their spelling or depth."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from immutablelog.sdk.redaction import FILTERED, Redactor, normalize_key

SENSITIVE = [
    "password",
    "Password",
    "new_password",
    "passwd",
    "PASS",
    "secret",
    "client_secret",
    "token",
    "access_token",
    "refreshToken",
    "api_key",
    "apiKey",
    "X-API-Key",
    "authorization",
    "Authorization",
    "auth",
    "cookie",
    "Set-Cookie",
    "session",
    "sessionid",
    "PHPSESSID",
    "connect.sid",
    "csrf",
    "csrf_token",
    "X-CSRFToken",
    "_xsrf",
    "card_number",
    "cardNumber",
    "credit_card",
    "cvv",
    "CVC",
    "ssn",
    "social_security_number",
    "private_key",
    "otp",
    "pin",
    "jwt",
    "credentials",
    "signature",
]

NOT_SENSITIVE = ["user", "email", "author", "shipping", "amount", "path", "keyboard", "spin", "id"]


@pytest.mark.parametrize("key", SENSITIVE)
def test_denylist_covers_every_spelling(key: str) -> None:
    assert Redactor().is_sensitive(key)


@pytest.mark.parametrize("key", NOT_SENSITIVE)
def test_ordinary_keys_are_kept(key: str) -> None:
    assert not Redactor().is_sensitive(key)


def test_normalization_ignores_case_and_separators() -> None:
    assert normalize_key("X-Csrf_Token ") == normalize_key("xcsrftoken") == "xcsrftoken"


def test_nested_json_and_lists_are_scrubbed() -> None:
    document = {
        "user": "bob",
        "profile": {"password": "hunter2", "settings": [{"api_key": "k", "theme": "dark"}]},
        "cards": [{"card_number": "4111111111111111", "holder": "Bob"}],
    }
    scrubbed = Redactor().scrub(document)
    assert scrubbed == {
        "user": "bob",
        "profile": {"password": FILTERED, "settings": [{"api_key": FILTERED, "theme": "dark"}]},
        "cards": [{"card_number": FILTERED, "holder": "Bob"}],
    }
    assert document["profile"]["password"] == "hunter2", "the input must not be modified"


def test_a_sensitive_key_hides_its_whole_subtree() -> None:
    assert Redactor().scrub({"credentials": {"user": "a", "pw": "b"}}) == {"credentials": FILTERED}


def test_extra_keys_and_allowlist() -> None:
    redactor = Redactor(extra_keys=["email"], allow_keys=["token_count"])
    assert redactor.scrub({"email": "a@b", "token_count": 3, "token": "t"}) == {
        "email": FILTERED,
        "token_count": 3,
        "token": FILTERED,
    }


def test_json_body_is_redacted_and_reserialized() -> None:
    body = json.dumps({"username": "bob", "password": "hunter2"}).encode()
    stored = Redactor().scrub_body(body, "application/json; charset=utf-8")
    assert stored is not None
    assert json.loads(stored) == {"username": "bob", "password": FILTERED}


def test_body_without_secrets_is_kept_byte_for_byte() -> None:
    body = b'{"b": 1,   "a": [1, 2]}'
    assert Redactor().scrub_body(body, "application/json") == body.decode()
    assert Redactor().scrub_body(b"x=1&y=2", "application/x-www-form-urlencoded") == "x=1&y=2"


def test_form_body_is_redacted_pair_by_pair() -> None:
    stored = Redactor().scrub_body(
        b"user=bob&password=hunter2&password=again", "application/x-www-form-urlencoded"
    )
    assert stored == "user=bob&password=[Filtered]&password=[Filtered]"


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"password": "hunter2"', "application/json"),  # malformed: cannot be redacted
        (
            b"--b\r\nContent-Disposition: form-data; name=password\r\n\r\nx\r\n--b--",
            "multipart/form-data; boundary=b",
        ),
        (b"password=hunter2", "text/plain"),
        (b"password=hunter2", None),
    ],
)
def test_bodies_that_cannot_be_redacted_are_not_stored(
    body: bytes, content_type: str | None
) -> None:
    assert Redactor().scrub_body(body, content_type) is None


def test_vendor_json_types_are_parsed() -> None:
    stored = Redactor().scrub_body(b'{"token": "t"}', "application/vnd.api+json")
    assert stored is not None and json.loads(stored) == {"token": FILTERED}


def _leaks(value: Any, redactor: Redactor, secret: str) -> bool:
    if isinstance(value, dict):
        return any(_leaks(v, redactor, secret) for v in value.values())
    if isinstance(value, list):
        return any(_leaks(v, redactor, secret) for v in value)
    return value == secret


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(["a", "b", "user", "items"]), children, max_size=4)
    ),
    max_leaves=20,
)


@given(document=_json, where=st.lists(st.sampled_from(["a", "b", "user", "items"]), max_size=3))
def test_a_secret_planted_anywhere_never_survives(document: Any, where: list[str]) -> None:
    secret = "s3cr3t-value"
    planted: dict[str, Any] = {"password": secret}
    for key in reversed(where):
        planted = {key: [planted]}
    container = {"doc": document, "planted": planted}
    redactor = Redactor()
    assert _leaks(container, redactor, secret)
    assert not _leaks(redactor.scrub(container), redactor, secret)
