"""The words PostgreSQL's search index stores: the ASCII shortcut and the general rule agree,
and no word is longer than a ``tsvector`` holds (the backends' answers: the contract tests)."""

from __future__ import annotations

import string

from immutablelog.ledger.words import MAX_WORD_BYTES, search_document, search_words


def test_the_ascii_shortcut_splits_as_the_general_rule() -> None:
    text = string.printable + "\x01\x7f" + 'Alice@Example.COM {"k_1": [2.5, -3]} a\tb'
    assert text.isascii()
    # One letter beyond ASCII takes the general rule; it adds only its own word.
    assert search_words(text + " \u00e9") == [*search_words(text), "\u00e9"]
    assert search_words('Alice@Example.COM {"k_1": [2.5, -3]}') == [
        "alice", "example", "com", "k", "1", "2", "5", "3",
    ]  # fmt: skip


def test_words_longer_than_a_tsvector_holds_are_left_out() -> None:
    fits, too_long = "a" * MAX_WORD_BYTES, "b" * (MAX_WORD_BYTES + 1)
    assert search_words(f"{fits} {too_long} c") == [fits, "c"]
    two_bytes = "\u00e9" * (MAX_WORD_BYTES // 2)  # 2046 bytes
    assert search_words(f"{two_bytes} {two_bytes}\u00e9\u00e9 d") == [two_bytes, "d"]
    assert search_words("-" * 5000) == []


def test_a_document_is_its_words_joined_by_single_spaces() -> None:
    assert search_document("  Hello,   World!\n") == "hello world"
    assert search_document("") == ""
