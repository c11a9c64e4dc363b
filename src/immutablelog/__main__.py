"""``python -m immutablelog`` is the ``immutablelog`` command."""

from immutablelog.cli import main

main()
