"""The words of a payload as PostgreSQL's search index stores them, and of a query as it
looks them up.

SQLite's FTS5 splits words itself (``unicode61``); PostgreSQL gets them from here, split
by the same rule: a word is a run of letters, digits and private-use characters (Unicode
L*, N*, Co), anything else separates words, and words are compared in lower case. (FTS5
also folds diacritics, so there "cafe" finds "café"; here it does not.)

Splitting here, on the process that indexes, costs a few µs of Python per entry. Inside
PostgreSQL the same split took a regular expression and the text-search parser, about
70 µs of the database's CPU per entry, more than the rest of the entry's ingest
(BENCHMARKS.md, "Sustained ingest and the search index").
"""

from __future__ import annotations

import re
from typing import Final

#: The longest word a ``tsvector`` holds, in UTF-8 bytes; longer ones are not indexed.
MAX_WORD_BYTES: Final = 2047

# ASCII: letters to lower case, every other character that is not a digit to a space.
_ASCII: Final = bytes(
    c + 32 if 0x41 <= c <= 0x5A else c if 0x30 <= c <= 0x39 or 0x61 <= c <= 0x7A else 0x20
    for c in range(128)
) + bytes(range(128, 256))
# Letters and digits (``\w`` without the underscore) and the private-use planes.
_WORD: Final = re.compile(r"(?:[^\W_]|[\ue000-\uf8ff\U000f0000-\U0010fffd])+")


def search_words(text: str) -> list[str]:
    """The words of ``text``, in order, lower-cased, none longer than a ``tsvector`` holds."""
    if text.isascii():
        found = text.encode("ascii").translate(_ASCII).decode("ascii").split()
        width = 1  # UTF-8 bytes a character takes at most
    else:
        # U+0130 (İ) is the one letter whose lower case is two characters ("i" and a
        # combining dot, which would split the word): PostgreSQL and SQLite make it "i".
        found = [word.lower() for word in _WORD.findall(text.replace("\u0130", "i"))]
        width = 4
    # Rarely true, and then cheaply seen: a word as long as that needs a text as long.
    limit = MAX_WORD_BYTES // width
    if len(text) > limit and max(map(len, found), default=0) > limit:
        found = [word for word in found if len(word.encode()) <= MAX_WORD_BYTES]
    return found


def search_document(text: str) -> str:
    """The words of ``text`` joined by single spaces: what the index stores of a payload."""
    return " ".join(search_words(text))
