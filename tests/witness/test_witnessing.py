"""A log server with two witness processes: cosigned checkpoints, a witness down and back,
and a split view the witnesses refuse."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from tlog_scales import tlog
from tlog_scales.signing import Vkey

from immutablelog.cli.commands import cli
from immutablelog.cosignature import CosignatureVerifier
from immutablelog.ledger import DEFAULT_TENANT
from tests.live import LiveServer
from tests.verify.helpers import ingest
from tests.witness.live import LiveWitness

ORIGIN = f"immutablelog/{DEFAULT_TENANT}"


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def checkpoint(server: LiveServer, path: str = "/v1/checkpoint") -> str:
    answer = httpx.get(server.url + path, headers=server.headers(server.read_key), timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.text


def cosigners(note: str, witnesses: list[LiveWitness]) -> list[str]:
    return [w.name for w in witnesses if CosignatureVerifier(w.verifier_key).find(note)]


def size_of(note: str) -> int:
    return int(note.split("\n")[1])


def metric(server: LiveServer, name: str, **labels: str) -> float:
    text = httpx.get(server.url + "/metrics", timeout=10).text
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{wanted}}} "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name}{{{wanted}}} in /metrics")


def witness_env(witnesses: list[LiveWitness]) -> dict[str, str]:
    """What ``serve --witness URL KEY ... --witness-interval 0.2`` passes to its workers."""
    return {
        "IMMUTABLELOG_WITNESSES": json.dumps([[w.url, w.verifier_key] for w in witnesses]),
        "IMMUTABLELOG_WITNESS_INTERVAL": "0.2",
    }


def verify_with_quorum(
    server: LiveServer, witnesses: list[LiveWitness], state: Path, *more: str
) -> dict[str, object]:
    """``immutablelog verify --witness K1 --witness K2 [...] --json``: its JSON report."""
    return run_verify(
        server,
        witnesses,
        "--url",
        server.url,
        "--key",
        server.read_key,
        "--state",
        str(state),
        *more,
    )


def verify_bundle(
    server: LiveServer, witnesses: list[LiveWitness], path: Path
) -> dict[str, object]:
    """Export the log as a bundle, then ``verify --bundle`` it with the witnesses' keys."""
    export = httpx.get(server.url + "/v1/export", headers=server.headers(server.read_key))
    assert export.status_code == 200
    path.write_bytes(export.content)
    return run_verify(server, witnesses, "--bundle", str(path))


def run_verify(server: LiveServer, witnesses: list[LiveWitness], *more: str) -> dict[str, object]:
    keys = [arg for w in witnesses for arg in ("--witness", w.verifier_key)]
    args = ["verify", "--json", "--log-key", server.verifier_key, *keys, *more]
    result = CliRunner().invoke(cli, args)
    report: dict[str, object] = json.loads(result.stdout)
    assert report["exit_code"] == result.exit_code
    return report


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[LiveServer, list[LiveWitness]]]:
    server = LiveServer(tmp_path / "data")
    logs = [(ORIGIN, server.verifier_key)]
    witnesses = [LiveWitness(tmp_path / f"w{n}", f"witness.example/w{n}", logs) for n in (1, 2)]
    for witness in witnesses:
        witness.start()
    server.extra_env = witness_env(witnesses)
    server.start()
    try:
        yield server, witnesses
    finally:
        server.kill()
        for witness in witnesses:
            witness.kill()


def test_cosigned_by_two_witnesses_down_and_back_and_a_refused_fork(
    setup: tuple[LiveServer, list[LiveWitness]], tmp_path: Path
) -> None:
    server, witnesses = setup
    ingest(server, 50)
    size = size_of(checkpoint(server))
    wait_for(lambda: len(cosigners(checkpoint(server), witnesses)) == 2, "two cosignatures")
    # The tiles checkpoint carries them too, and a third-party verifier accepts them.
    tiles_note = checkpoint(server, f"/tlog/{DEFAULT_TENANT}/checkpoint")
    assert size_of(tiles_note) == size
    parsed = tlog.Checkpoint.from_text(tiles_note)
    parsed.verify(Vkey.from_string(server.verifier_key))
    for witness in witnesses:
        parsed.verify(Vkey.from_string(witness.verifier_key))
    assert metric(server, "immutablelog_witness_lag_entries", witness="witness.example/w2") == 0

    # A witness down: ingest goes on, the other cosigns, the lag and failures show.
    witnesses[1].kill()
    started = time.monotonic()
    ingest(server, 30)
    assert time.monotonic() - started < 10
    newer = size_of(checkpoint(server))
    wait_for(lambda: cosigners(checkpoint(server), witnesses) == ["witness.example/w1"], "w1")
    wait_for(
        lambda: metric(server, "immutablelog_witness_failures", witness="witness.example/w2") >= 1,
        "a recorded failure",
    )
    lag = metric(server, "immutablelog_witness_lag_entries", witness="witness.example/w2")
    assert lag == newer - size
    # With a quorum of two, the tiles checkpoint stays at the last one both cosigned, which
    # is what a verifier asking for both checks.
    assert size_of(checkpoint(server, f"/tlog/{DEFAULT_TENANT}/checkpoint")) == size
    assert verify_with_quorum(server, witnesses, tmp_path / "s2.json")["tree_size"] == size

    # Back up (state kept): it catches up.
    witnesses[1].start()
    wait_for(lambda: len(cosigners(checkpoint(server), witnesses)) == 2, "catching up", 90)
    assert size_of(checkpoint(server, f"/tlog/{DEFAULT_TENANT}/checkpoint")) == newer
    # An export carries that cosigned checkpoint, and holds offline.
    bundled = verify_bundle(server, witnesses, tmp_path / "log.jsonl")
    assert (bundled["status"], bundled["tree_size"]) == ("intact", newer)

    # Split view: the operator runs a fork under the same name and key, with other entries.
    fork = LiveServer(tmp_path / "fork", signing_key=server.data_dir / "log-signing.key")
    fork.extra_env = witness_env(witnesses)
    fork.start()
    try:
        ingest(fork, newer + 20)
        assert fork.verifier_key == server.verifier_key
        wait_for(
            lambda: all(
                metric(fork, "immutablelog_witness_failures", witness=w.name) >= 1
                for w in witnesses
            ),
            "both witnesses refusing the fork",
        )
        assert cosigners(checkpoint(fork), witnesses) == []
        assert cosigners(checkpoint(fork, f"/tlog/{DEFAULT_TENANT}/checkpoint"), witnesses) == []
        # A reader with no saved state, only the log key, is fooled without a witness policy,
        # and refuses the fork with one (even of one witness).
        fresh = verify_with_quorum(fork, [], tmp_path / "fresh-1.json")
        assert fresh["status"] == "intact"
        refused = verify_with_quorum(fork, witnesses, tmp_path / "fresh-2.json", "--quorum", "1")
        assert refused["status"] == "error"
        error = refused["error"]
        assert isinstance(error, dict)
        assert error["reason"] == "witness_quorum"
        assert "split view" in error["message"]
        forked_bundle = verify_bundle(fork, witnesses, tmp_path / "fork.jsonl")
        assert forked_bundle["status"] == "error"
    finally:
        fork.kill()
