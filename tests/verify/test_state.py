"""The state file: round trip, atomic replacement, and refusing a damaged one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from immutablelog.checkpoint import Signer
from immutablelog.merkle import CompactRange, leaf_hash
from immutablelog.verify import CouldNotCheck, VerifierState, load_state, save_state
from immutablelog.verify import state as state_module
from immutablelog.verify.state import default_state_path

KEY = Signer.generate("immutablelog").verifier_key()


def make_state(size: int) -> VerifierState:
    frontier = CompactRange()
    frontier.extend(leaf_hash(str(i).encode()) for i in range(size))
    return VerifierState(
        log_key=KEY,
        origin="immutablelog/default",
        tree_size=size,
        root_hash=frontier.root(),
        frontier=frontier.hashes,
        url="http://x",
        verified_at="2026-01-01T00:00:00Z",
    )


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "state.json"
    assert load_state(path) is None
    for size in (0, 1, 7, 1000):
        save_state(path, make_state(size))
        assert load_state(path) == make_state(size)
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]  # no temp files left


def test_save_is_atomic_when_writing_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "state.json"
    save_state(path, make_state(5))
    before = path.read_bytes()

    def broken_fsync(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(state_module.os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        save_state(path, make_state(9))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text[:-20],
        lambda text: text.replace('"tree_size": 5', '"tree_size": 6'),
        lambda text: text.replace("immutablelog-verifier-state/1", "other/1"),
        lambda text: text.replace('"log_key": "immutablelog+', '"log_key": "x+'),
    ],
)
def test_damaged_state_cannot_be_used(tmp_path: Path, damage: object) -> None:
    path = tmp_path / "state.json"
    save_state(path, make_state(5))
    path.write_text(damage(path.read_text()))  # type: ignore[operator]
    with pytest.raises(CouldNotCheck) as caught:
        load_state(path)
    assert caught.value.reason == "state_file"


def test_state_whose_frontier_disagrees_with_its_root_is_refused() -> None:
    good = make_state(6)
    with pytest.raises(ValueError):
        VerifierState(KEY, good.origin, 6, bytes(32), good.frontier)


def test_default_path_is_per_server_and_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("IMMUTABLELOG_STATE_DIR", str(tmp_path))
    a = default_state_path("http://h:1", "iml_live_a")
    assert a.parent == tmp_path
    assert a != default_state_path("http://h:1", "iml_live_b")
    assert a != default_state_path("http://h:2", "iml_live_a")
    assert "iml_live_a" not in a.name
    assert os.fspath(a).endswith(".json")
