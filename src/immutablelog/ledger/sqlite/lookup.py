"""The search file's lookups by event name, request id and actor, partitioned by entry range.

Request ids and actors are random values, so in one B-tree index per column each new entry
lands on a page of its own anywhere in an index that grows with the log; once the indexes
outgrow the page cache every entry reads and rewrites a page of each, the indexer's cost
per entry grows with the log, and under sustained ingest it falls further and further
behind. Each index here leads with the entry's partition instead, ``entry_rowid >>
PARTITION_BITS``: a slice of new entries writes only the newest partition's stretch of each
index, which stays a few MB, cached, whatever the size of the log. A lookup seeks the
partitions by equality, in the page's order, and stops as soon as the page is full
(BENCHMARKS.md, "SQLite's search file at 10 million entries").
"""

from __future__ import annotations

from typing import Final

#: Entries per partition, as a power of two: 262,144. Smaller partitions cost indexing a
#: little less (at 65,536 about 2 µs per entry) but a lookup of a rare value seeks every
#: partition, each seek a page that may have to come from disk (at 10,000,000 entries 153
#: partitions, 45-70 ms for an actor's page when those pages were not cached; 38 here).
PARTITION_BITS = 18
#: The columns looked up, each with its index ``lookup_by_<column>``.
COLUMNS: Final = ("event_name", "request_id", "actor")
#: Partitions one statement seeks at most (a walk doubles its group while it finds little).
MAX_GROUP: Final = 64


def partition(table: str = "") -> str:
    """An entry's partition as the indexes spell it (a query must spell it the same way)."""
    return f"({table}entry_rowid >> {PARTITION_BITS})"


def index_ddl() -> str:
    """The three lookup indexes of the attached search file."""
    return "\n".join(
        f"CREATE INDEX IF NOT EXISTS search.lookup_by_{column} "
        f"ON lookup ({partition()}, tenant_id, {column});"
        for column in COLUMNS
    )


def partitions_cte(top: str) -> str:
    """``WITH RECURSIVE parts(n)``: every partition up to the one of rowid ``top`` (an SQL
    expression), for a statement that reads all of a value's rows (a count, an erasure)."""
    return (
        "WITH RECURSIVE parts(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM parts "
        f"WHERE n < ({top}) >> {PARTITION_BITS}) "
    )


def walk(low: int, high: int, descending: bool) -> list[int]:
    """The partitions holding rowids ``low..high``, in the order a page reads them."""
    first, last = low >> PARTITION_BITS, high >> PARTITION_BITS
    return list(range(last, first - 1, -1) if descending else range(first, last + 1))
