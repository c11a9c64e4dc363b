"""A C2SP tlog-witness: cosigns a log's checkpoint only if it extends what it saw before.

``state`` keeps the latest cosigned checkpoint of each log in SQLite; ``server`` is the
``add-checkpoint`` HTTP API (``immutablelog witness serve``).
"""
