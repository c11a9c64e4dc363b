from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from immutablelog.ledger import DEFAULT_TENANT, Ledger, LedgerConfig
from tests.live import LiveServer
from tests.postgres_fixture import postgres_url

__all__ = ["postgres_url"]

# A shell starts a background job with SIGINT ignored, and an ignored signal stays ignored
# across exec: the tests that stop a child server or CLI with Ctrl-C would then wait for
# ever. A handled signal is reset to its default in every child, so handle it here.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session", autouse=True)
def state_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The SDK's spool and the verifier's saved state default to $XDG_STATE_HOME (else
    ~/.local/state): point it at a temporary directory for the whole run, servers and CLIs
    started as child processes included, so tests leave nothing in the user's home."""
    home = tmp_path_factory.mktemp("state-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_STATE_HOME", str(home))
        yield home


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    """A real server process on a fresh SQLite data directory."""
    server = LiveServer(tmp_path / "data")
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    """An in-process ledger with the default tenant."""
    with Ledger.open(LedgerConfig(data_dir=tmp_path / "ledger")) as opened:
        opened.create_tenant(DEFAULT_TENANT)
        yield opened


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server process for a module of tests that do not disturb each other."""
    server = LiveServer(tmp_path_factory.mktemp("shared") / "data")
    server.start()
    try:
        yield server
    finally:
        server.kill()
