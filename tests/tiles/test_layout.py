"""Tile names and geometry, checked against the examples of the C2SP tlog-tiles spec."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from immutablelog.tiles.layout import (
    ENTRIES_LEVEL,
    MAX_TREE_SIZE,
    TileError,
    TileRef,
    available,
    encode_index,
    parse_tile_path,
    tiles_for_size,
)


def test_index_encoding_of_the_spec() -> None:
    assert encode_index(1234067) == "x001/x234/067"
    assert encode_index(0) == "000"
    assert encode_index(1000) == "x001/000"
    assert TileRef(0, 1234067).path() == "tile/0/x001/x234/067"
    assert TileRef(ENTRIES_LEVEL, 5, 17).path() == "tile/entries/005.p/17"


def test_tree_of_70000_has_the_tiles_the_spec_lists() -> None:
    tiles = [t for t in tiles_for_size(70_000, entries=False)]
    level0 = [t for t in tiles if t.level == 0]
    assert sum(not t.partial for t in level0) == 273
    assert [t.width for t in level0 if t.partial] == [112]
    level1 = [t for t in tiles if t.level == 1]
    assert [t.width for t in level1] == [256, 17]
    assert [(t.level, t.width) for t in tiles if t.level >= 2] == [(2, 1)]


def test_tree_of_256_is_one_full_tile_and_a_level_1_tile_of_width_1() -> None:
    assert list(tiles_for_size(256, entries=False)) == [TileRef(0, 0), TileRef(1, 0, 1)]
    assert list(tiles_for_size(0)) == []


def test_a_tile_is_available_once_the_tree_holds_all_its_hashes() -> None:
    assert available(TileRef(0, 0), 256)
    assert not available(TileRef(0, 0), 255)
    assert available(TileRef(0, 0, 255), 255)
    assert available(TileRef(0, 0, 3), 255)  # a prefix of what the tree has
    assert not available(TileRef(0, 1, 1), 256)
    assert available(TileRef(1, 0, 1), 256)
    assert not available(TileRef(1, 0, 2), 511)


@given(
    level=st.sampled_from([ENTRIES_LEVEL, 0, 1, 2, 5]),
    index=st.integers(0, 10**12),
    width=st.integers(1, 256),
)
def test_paths_parse_back_to_their_tile(level: int, index: int, width: int) -> None:
    tile = TileRef(level, index, width)
    assume(available(tile, MAX_TREE_SIZE))
    assert parse_tile_path(tile.path().removeprefix("tile/")) == tile


@pytest.mark.parametrize(
    "path",
    [
        "",
        "0",
        "0/",
        "0/1",
        "0/0001",
        "00/000",
        "01/000",
        "64/000",
        "-1/000",
        "0/-01",
        "0/x001",
        "0/001/000",
        "0/x000/001",
        "0/y001/000",
        "0/x01/000",
        "0/000.p",
        "0/000.p/0",
        "0/000.p/256",
        "0/000.p/01",
        "0/000.p/1/",
        "0/000.q/1",
        "0/.p/1",
        "0/\u0661\u0662\u0663",
        "\u0661/000",
        "0/000.p/\u0661",
        "0/00\x00",
        "entries/",
        "Entries/000",
        "0/ 000",
        "0/+00",
        "1e1/000",
        "0/x999/x999/x999/x999/x999/x999/x999/999",
        "7/x001/000",
        "0/" + "x001/" * 20 + "000",
    ],
)
def test_malformed_or_impossible_paths_are_refused(path: str) -> None:
    with pytest.raises(TileError):
        parse_tile_path(path)


def test_the_last_tile_an_int64_tree_can_have_parses() -> None:
    last_leaf = MAX_TREE_SIZE - 1
    tile = TileRef(0, last_leaf // 256, last_leaf % 256 + 1)
    assert parse_tile_path(tile.path().removeprefix("tile/")) == tile
    beyond = TileRef(0, last_leaf // 256 + 1, 1)
    with pytest.raises(TileError):
        parse_tile_path(beyond.path().removeprefix("tile/"))
