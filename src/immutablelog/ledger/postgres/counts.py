"""PostgreSQL's event counts (``ledger/rollup.py``): a derived table with a progress mark
per tenant (``count_progress``), filled by one process at a time, like the search index."""

from __future__ import annotations

from typing import Final

from immutablelog.ledger import rollup

_CONFLICT: Final = "tenant_id, width, bucket, type, md5(service), md5(env), md5(event_name)"
#: For filling: the mark is the caller's business there.
FILL: Final = rollup.Dialect(
    mark="%s",
    rollup_table="event_counts",
    entries_table="entries",
    covered="true",
    uncovered="false",
    conflict_target=_CONFLICT,
)
#: Each tenant whose entries the counts do not all cover yet: the next index to count and
#: the size of its latest checkpoint.
PENDING: Final = (
    "SELECT t.id AS tenant_id, coalesce(p.next_idx, 0) AS next_idx, c.size AS size "
    "FROM tenants t LEFT JOIN count_progress p ON p.tenant_id = t.id "
    "CROSS JOIN LATERAL (SELECT size FROM checkpoints WHERE tenant_id = t.id "
    "ORDER BY size DESC LIMIT 1) c "
    "WHERE c.size > coalesce(p.next_idx, 0)"
)
INSERT_RANGE: Final = rollup.rollup_insert(FILL, "e.tenant_id = %s AND e.idx >= %s AND e.idx < %s")
MOVE_MARK: Final = (
    "INSERT INTO count_progress (tenant_id, next_idx) VALUES (%s, %s) "
    "ON CONFLICT (tenant_id) DO UPDATE SET next_idx = excluded.next_idx"
)
BACKLOG: Final = f"SELECT coalesce(sum(size - next_idx), 0) FROM ({PENDING}) AS pending"


#: The index up to which a tenant's entries are counted (read in the count's snapshot).
MARK: Final = "SELECT next_idx FROM count_progress WHERE tenant_id = %s"


def dialect(tenant_id: int, mark: int) -> rollup.Dialect:
    """Reading counts with the tenant's mark as read in the same snapshot. The uncounted
    entries are read by their index range behind an ``OFFSET 0`` fence: otherwise the
    planner may prefer the time index for a range (from statistics that lag a bulk load)
    and read a minute's entries to find none."""
    return rollup.Dialect(
        mark="%s",
        rollup_table="event_counts",
        entries_table="entries",
        covered=f"e.idx < {int(mark)}",
        uncovered="true",
        conflict_target=_CONFLICT,
        uncovered_source=(
            f"(SELECT * FROM entries WHERE tenant_id = {int(tenant_id)} "
            f"AND idx >= {int(mark)} OFFSET 0) AS e"
        ),
    )


def text_count_sql(
    words: tuple[str, list[object]], where: tuple[str, list[object]], width: int, matches: int
) -> tuple[str, list[object]]:
    """The statement for a full-text count (read by :func:`rollup.newest_matches`): the
    newest ``matches`` entries holding the words (``words``: a condition on the search
    table), walked backwards by index, narrowed by the other filters (``where``), grouped;
    one more found says that older ones were left out, and where."""
    sql = (
        f"WITH w AS (SELECT idx FROM entries_search WHERE {words[0]} "
        "ORDER BY idx DESC LIMIT %s), "
        "edge AS (SELECT CASE WHEN count(*) > %s THEN min(idx) END AS low FROM w) "
        "SELECT left(received_at, %s) AS b, type AS t, count(*), NULL::bigint FROM entries "
        "WHERE idx IN (SELECT idx FROM w WHERE idx > coalesce((SELECT low FROM edge), -1)) "
        f"AND {where[0]} GROUP BY b, t "
        "UNION ALL SELECT NULL, NULL, 0, low FROM edge ORDER BY 1, 2"
    )
    return sql, [*words[1], matches + 1, matches, width, *where[1]]
