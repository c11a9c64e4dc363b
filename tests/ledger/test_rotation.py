"""Rotating the log's key: the database decides which keys sign, every host follows it.

Each test runs on both backends. A "host" is a ledger with its own key directory on the same
database (for SQLite: the same file, another key file), as in ``test_log_key.py``.
"""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from immutablelog.checkpoint import Checkpoint, Signer, Verifier, open_checkpoint
from immutablelog.entry import Submission, validate_submission
from immutablelog.ledger import Ledger, LedgerError
from immutablelog.ledger.keyring import ROTATED_KEY_FILE
from immutablelog.ledger.storage import SigningKeyMissing, Storage
from tests.ledger.test_log_key import _host
from tests.ledger.test_storage_contract import INTEGRITY, LOG_NAME, raw_sql, storage

__all__ = ["storage"]

DAY = timedelta(days=1)


def _event(n: int) -> Submission:
    return validate_submission(
        f'{{"n": {n}}}', {"type": "info", "event_name": "t", "service": "s"}, f"rotation-{n}"
    )


def _signed_by(note: str, *keys: str) -> list[bool]:
    found = []
    for key in keys:
        _, signed = Verifier(key).check(note)
        found.append(signed)
    return found


def _two_hosts(storage: Storage, tmp_path: Path) -> tuple[Ledger, Ledger]:
    a = Ledger.open(_host(storage, tmp_path, "host-a"))
    a.create_tenant("acme")
    b_config = _host(storage, tmp_path, "host-b")
    b_config.key_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(a.keyring.key_path, b_config.key_path)
    return a, Ledger.open(b_config)


def test_a_rotation_signs_with_both_keys_then_the_new_one_on_every_host(
    storage: Storage, tmp_path: Path
) -> None:
    a, b = _two_hosts(storage, tmp_path)
    try:
        acme = a.tenant("acme")
        old = a.verifier_key()
        a.append(acme, [_event(1)])
        before = a.checkpoint(acme)

        signer, path = a.keyring.generate()
        new = signer.verifier_key()
        assert path.name == ROTATED_KEY_FILE.format(signer.key_id.hex())
        assert path.stat().st_mode & 0o777 == 0o600
        assert [k.key for k in a.log_keys()] == [old]  # generated, not yet used

        # Host B has not got the new key: it refuses to sign rather than sign with the old one.
        rotation = a.rotate_log_key(new, DAY)
        assert (rotation.old_key, rotation.new_key) == (old, new)
        history = a.log_keys()
        assert [k.key for k in history] == [old, new]
        assert (
            history[0].retired_at == rotation.old_key_retires_at and history[1].retired_at is None
        )
        assert a.verifier_key() == new
        with pytest.raises(SigningKeyMissing) as missing:
            b.append(acme, [_event(2)])
        assert new in str(missing.value) and str(b.keyring.directory) in str(missing.value)

        # A checkpoint by A carries both signatures, and the rotation is in the log.
        a.append(acme, [_event(3)])
        assert _signed_by(a.checkpoint(acme).note, old, new) == [True, True]
        admin = [e for e in a.entries(acme, 0, a.checkpoint(acme).size)]
        assert any(
            b"immutablelog.log_key.rotated" in e.data and new.encode() in e.data for e in admin
        )

        # Its file copied in, B signs with both without a restart.
        shutil.copy(path, b.keyring.directory / path.name)
        b.append(acme, [_event(4)])
        assert _signed_by(b.checkpoint(acme).note, old, new) == [True, True]

        # The handover: the checkpoint A had when the rotation began, signed by both.
        (handover,) = a.handovers(acme)
        assert (handover.old_key, handover.new_key, handover.size) == (old, new, before.size)
        assert open_checkpoint(Verifier(old), handover.note).root_hash == before.root
        assert open_checkpoint(Verifier(new), handover.note).root_hash == before.root

        with pytest.raises(LedgerError) as twice:
            a.rotate_log_key(Signer.generate(LOG_NAME).verifier_key(), DAY)
        assert twice.value.reason == "rotation_in_progress"

        a.finish_rotation()
        b.append(acme, [_event(5)])
        assert _signed_by(b.checkpoint(acme).note, old, new) == [False, True]
        a.append(acme, [_event(6)])
        assert _signed_by(a.checkpoint(acme).note, old, new) == [False, True]
        # Old checkpoints still verify, by the key that signed them (which a bundle names).
        assert open_checkpoint(Verifier(old), a.checkpoint_at(acme, before.size).note)
        assert a.key_that_signed(a.checkpoint_at(acme, before.size).note) == old
        assert a.key_that_signed(a.checkpoint(acme).note) == new
        assert a.check_integrity(acme).valid and b.check_integrity(acme).valid
        with pytest.raises(LedgerError) as none:
            a.finish_rotation()
        assert none.value.reason == "no_rotation"
    finally:
        a.close()
        b.close()


def test_a_host_without_the_current_key_refuses_to_start(storage: Storage, tmp_path: Path) -> None:
    a, b = _two_hosts(storage, tmp_path)
    b_config = b.config
    b.close()
    try:
        signer, _ = a.keyring.generate()
        a.rotate_log_key(signer.verifier_key(), DAY)
        with pytest.raises(LedgerError) as refused:
            Ledger.open(b_config)
        assert refused.value.reason == "key_missing"
        assert signer.verifier_key() in refused.value.message
    finally:
        a.close()


def test_rotation_refusals(storage: Storage, tmp_path: Path) -> None:
    with Ledger.open(_host(storage, tmp_path, "host-a")) as ledger:
        ledger.create_tenant("acme")
        old = ledger.verifier_key()
        unheld = Signer.generate(LOG_NAME).verifier_key()
        with pytest.raises(LedgerError) as missing:
            ledger.rotate_log_key(unheld, DAY)
        assert missing.value.reason == "key_missing"
        with pytest.raises(LedgerError) as same:
            ledger.rotate_log_key(old, DAY)
        assert same.value.reason == "key_exists"
        signer, _ = ledger.keyring.generate()
        with pytest.raises(LedgerError) as short:
            ledger.rotate_log_key(signer.verifier_key(), timedelta(seconds=59))
        assert short.value.reason == "bad_transition"
        assert [k.key for k in ledger.log_keys()] == [old]  # nothing was recorded


def test_the_key_history_cannot_be_rewritten(storage: Storage, tmp_path: Path) -> None:
    with Ledger.open(_host(storage, tmp_path, "host-a")) as ledger:
        ledger.create_tenant("acme")
        signer, _ = ledger.keyring.generate()
        ledger.rotate_log_key(signer.verifier_key(), DAY)
        impostor = Signer.generate(LOG_NAME).verifier_key()
        for statement in (
            f"UPDATE log_keys SET key = '{impostor}'",
            "UPDATE log_keys SET added_at = '2000-01-01T00:00:00.000000Z'",
            "UPDATE log_keys SET retired_at = NULL",
            "UPDATE log_keys SET retired_at = '9999-01-01T00:00:00.000000Z'",
            "DELETE FROM log_keys",
            "UPDATE log_key_handovers SET size = 0",
            "DELETE FROM log_key_handovers",
        ):
            with pytest.raises(INTEGRITY):
                raw_sql(ledger.storage, statement)
        # Retiring earlier is what `log-key finish` does, and allowed.
        ledger.finish_rotation()
        assert [k.retired_at is None for k in ledger.log_keys()] == [False, True]


def test_tenants_made_during_a_rotation_start_signed_by_both(
    storage: Storage, tmp_path: Path
) -> None:
    with Ledger.open(_host(storage, tmp_path, "host-a")) as ledger:
        ledger.create_tenant("acme")
        old = ledger.verifier_key()
        signer, _ = ledger.keyring.generate()
        ledger.rotate_log_key(signer.verifier_key(), DAY)
        fresh = ledger.create_tenant("globex")
        note = ledger.checkpoint_at(fresh, 0).note
        assert _signed_by(note, old, signer.verifier_key()) == [True, True]
        assert Checkpoint.from_text(Verifier(old).verify(note)).size == 0
