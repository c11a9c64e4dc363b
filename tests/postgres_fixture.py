"""A fresh PostgreSQL database per test, so PostgreSQL tests never see each other's rows.

The server is ``IMMUTABLELOG_TEST_POSTGRES_URL`` (default: local trust auth as ``postgres``),
connected to as a role that may ``CREATE DATABASE``. Without a server the tests are skipped —
unless ``IMMUTABLELOG_REQUIRE_POSTGRES=1`` (CI), where a missing server must fail the run
instead of silently testing less. Imported by ``tests/conftest.py``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn
from urllib.parse import urlsplit, urlunsplit

import pytest

POSTGRES_URL_ENV = "IMMUTABLELOG_TEST_POSTGRES_URL"
REQUIRE_POSTGRES_ENV = "IMMUTABLELOG_REQUIRE_POSTGRES"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

# Why the server was unusable, once known: later tests skip at once instead of each
# waiting for a connect timeout again.
_unavailable: list[str] = []


def _server_url() -> str:
    return os.environ.get(POSTGRES_URL_ENV) or DEFAULT_POSTGRES_URL


def _describe(url: str) -> str:
    """host:port of a connection string, without the password it may carry."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        params = conninfo_to_dict(url)
    except Exception:
        return "(unparsable URL)"
    return f"{params.get('host') or 'localhost'}:{params.get('port') or 5432}"


def _with_database(url: str, dbname: str) -> str:
    """The same server URL, pointing at another database."""
    if "://" in url:
        return urlunsplit(urlsplit(url)._replace(path="/" + dbname))
    from psycopg.conninfo import make_conninfo

    return make_conninfo(url, dbname=dbname)


def _unusable(reason: str) -> NoReturn:
    _unavailable.append(reason)
    if os.environ.get(REQUIRE_POSTGRES_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_POSTGRES_ENV}=1)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The URL of a new, empty database, dropped after the test."""
    with postgres_database() as url:
        yield url


@contextmanager
def postgres_database() -> Iterator[str]:
    """A new, empty database, dropped on exit (for fixtures of a wider scope)."""
    server = _server_url()
    if _unavailable:
        _unusable(_unavailable[0])
    try:
        import psycopg
        from psycopg import sql
    except ImportError:
        _unusable("psycopg is not installed (pip install 'immutablelog[postgres]')")
    name = f"iml_test_{uuid.uuid4().hex[:16]}"
    try:
        with psycopg.connect(server, autocommit=True, connect_timeout=3) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.OperationalError as exc:
        _unusable(f"no PostgreSQL at {_describe(server)}: {str(exc).strip().splitlines()[0]}")
    try:
        yield _with_database(server, name)
    finally:
        with psycopg.connect(server, autocommit=True, connect_timeout=3) as conn:
            # FORCE (PostgreSQL 13+): a test that leaked a connection must not leak a database.
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
