"""The log's private keys that this host holds, and the signers of a checkpoint made now.

The database decides which keys sign (``key_history``: every host follows it); the private
keys never enter it. A host keeps them as files in its key directory, the directory of its
signing key file (``--signing-key``, default the data directory): that file, and
``log-key-<key id>.key`` for each key a rotation added (``immutablelog log-key generate``
writes one; copy it to every host before ``log-key rotate``). A key the database names and
the directory lacks is looked for again on each use, so a file copied in later is picked up
without a restart; until then this host signs nothing (:class:`SigningKeyMissing`), never a
checkpoint with fewer keys than the log requires.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

from immutablelog.checkpoint import NoteError, Signer, read_key_file, write_key_file
from immutablelog.ledger.key_history import LogKey
from immutablelog.ledger.storage import SigningKeyMissing

logger = logging.getLogger(__name__)

#: The file name of a key added by a rotation, by its 8 hex digit key id.
ROTATED_KEY_FILE = "log-key-{}.key"
_ROTATED_KEY_GLOB = "log-key-*.key"


class KeyRing:
    """The private keys in one host's key directory, by verifier key."""

    def __init__(self, key_path: Path, log_name: str) -> None:
        self.key_path = key_path
        self.directory = key_path.parent
        self.log_name = log_name
        self._lock = threading.Lock()
        self._signers: dict[str, Signer] = {}
        self._unreadable: set[Path] = set()
        self._scan()

    def _scan(self) -> None:
        """Read the key files again (a rotation's new file may have been copied in)."""
        found: dict[str, Signer] = {}
        paths = [self.key_path, *sorted(self.directory.glob(_ROTATED_KEY_GLOB))]
        for path in paths:
            if not path.is_file():
                continue
            try:
                signer = read_key_file(path, self.log_name)
            except (OSError, NoteError) as exc:
                if path not in self._unreadable:  # once per file, not per commit
                    self._unreadable.add(path)
                    logger.error("ignoring the unreadable log key file %s: %s", path, exc)
                continue
            found.setdefault(signer.verifier_key(), signer)
        with self._lock:
            self._signers = found

    def primary(self) -> Signer | None:
        """The key in this host's signing key file, if there is one."""
        if not self.key_path.is_file():
            return None
        return read_key_file(self.key_path, self.log_name)

    def signer(self, verifier_key: str) -> Signer | None:
        """The private key of ``verifier_key``, if this host holds it."""
        with self._lock:
            found = self._signers.get(verifier_key)
        if found is None:
            self._scan()
            with self._lock:
                found = self._signers.get(verifier_key)
        return found

    def signers(self, keys: Sequence[LogKey]) -> list[Signer]:
        """The private keys of ``keys``, in order; :class:`SigningKeyMissing` if one is not
        held here."""
        out: list[Signer] = []
        for key in keys:
            signer = self.signer(key.key)
            if signer is None:
                raise SigningKeyMissing(self.missing_message(key.key))
            out.append(signer)
        return out

    def missing_message(self, verifier_key: str) -> str:
        key_id = verifier_key.split("+", 2)[1] if verifier_key.count("+") >= 2 else "?"
        return (
            f"the log must be signed by the key {verifier_key}, and this host holds no key "
            f"file for it in {self.directory} (looked for {self.key_path.name} and "
            f"{ROTATED_KEY_FILE.format(key_id)}): copy that file from the host where the key "
            "was generated; nothing is signed until then"
        )

    def generate(self) -> tuple[Signer, Path]:
        """A new key for the log, written to ``log-key-<id>.key`` in the key directory."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        while True:
            signer = Signer.generate(self.log_name)
            path = self.directory / ROTATED_KEY_FILE.format(signer.key_id.hex())
            if write_key_file(path, signer):  # an id taken already: draw another key
                self._scan()
                return signer, path
