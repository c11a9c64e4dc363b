from immutablelog._counted import counted


def test_singular_plural_and_thousands() -> None:
    assert counted(0, "tile") == "0 tiles"
    assert counted(1, "tile") == "1 tile"
    assert counted(2, "entry", "entries") == "2 entries"
    assert counted(1, "entry", "entries") == "1 entry"
    assert counted(1200, "event") == "1,200 events"
