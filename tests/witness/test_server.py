"""The tlog-witness server: every answer the spec defines, state kept across restarts."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from immutablelog.checkpoint import Checkpoint, Signer, sign_checkpoint
from immutablelog.cosignature import CosignatureVerifier
from immutablelog.merkle import CompactRange, consistency_nodes, leaf_hash
from immutablelog.witness.server import MAX_BODY_BYTES, WitnessConfig, create_witness_app

ORIGIN = "example.com/log"


class Log:
    """A small in-memory log: every tree's nodes, to build real consistency proofs."""

    def __init__(self, signer: Signer, prefix: str = "entry", origin: str = ORIGIN) -> None:
        self.signer = signer
        self.origin = origin
        self.prefix = prefix
        self.leaves: list[bytes] = []

    def grow(self, count: int) -> None:
        start = len(self.leaves)
        self.leaves += [
            leaf_hash(f"{self.prefix} {n}".encode()) for n in range(start, start + count)
        ]

    def root(self, size: int) -> bytes:
        tree = CompactRange()
        tree.extend(self.leaves[:size])
        return tree.root()

    def checkpoint(self, size: int | None = None) -> str:
        size = len(self.leaves) if size is None else size
        return sign_checkpoint(self.signer, Checkpoint(self.origin, size, self.root(size)))

    def proof(self, old: int, new: int) -> list[bytes]:
        plan = consistency_nodes(old, new)
        return plan.rehash([self._node(level, index) for level, index in plan.ids])

    def _node(self, level: int, index: int) -> bytes:
        tree = CompactRange()
        tree.extend(self.leaves[index << level : (index + 1) << level])
        return tree.root()

    def request(self, old: int, new: int | None = None) -> bytes:
        new = len(self.leaves) if new is None else new
        lines = [f"old {old}"] + [base64.b64encode(h).decode() for h in self.proof(old, new)]
        return ("\n".join(lines) + "\n\n" + self.checkpoint(new)).encode()


@pytest.fixture
def log() -> Log:
    return Log(Signer.generate(ORIGIN))


def witness_app(tmp_path: Path, log: Log, **more: object) -> TestClient:
    config = WitnessConfig(
        tmp_path / "witness", "witness.example/w1", {ORIGIN: [log.signer.verifier_key()]}, **more
    )
    return TestClient(create_witness_app(config))


@pytest.fixture
def witness(tmp_path: Path, log: Log) -> Iterator[TestClient]:
    with witness_app(tmp_path, log) as client:
        yield client


def cosigner_of(client: TestClient) -> CosignatureVerifier:
    return CosignatureVerifier(client.get("/healthz").json()["witness"])


def test_cosigns_consistent_checkpoints_and_remembers_them(
    witness: TestClient, log: Log, tmp_path: Path
) -> None:
    log.grow(5)
    first = witness.post("/add-checkpoint", content=log.request(0))
    assert first.status_code == 200, first.text
    found = cosigner_of(witness).find(log.checkpoint() + first.text)
    assert found is not None
    log.grow(7)
    assert witness.post("/add-checkpoint", content=log.request(5)).status_code == 200
    # Resubmitting the same checkpoint is fine (old size = its size, same root).
    assert witness.post("/add-checkpoint", content=log.request(12, 12)).status_code == 200
    # A stale old size: 409 with the witness's size.
    stale = witness.post("/add-checkpoint", content=log.request(5))
    assert stale.status_code == 409
    assert stale.headers["content-type"] == "text/x.tlog.size"
    assert stale.text == "12\n"
    # Restarted, it holds the same size, under the same key.
    key = cosigner_of(witness).verifier_key
    witness.close()
    with witness_app(tmp_path, log) as again:
        assert again.post("/add-checkpoint", content=log.request(0)).text == "12\n"
        assert cosigner_of(again).verifier_key == key


def test_refuses_a_fork(witness: TestClient, log: Log) -> None:
    log.grow(8)
    assert witness.post("/add-checkpoint", content=log.request(0)).status_code == 200
    fork = Log(log.signer, prefix="forked")
    fork.leaves = log.leaves[:6]
    fork.grow(6)
    # The fork's own proof from 8 does not lead to its root from the witness's root.
    answer = witness.post("/add-checkpoint", content=fork.request(8))
    assert answer.status_code == 422
    assert answer.json()["reason"] == "inconsistent"
    # Same size, other root: 409.
    same_size = Log(log.signer, prefix="other")
    same_size.grow(8)
    assert witness.post("/add-checkpoint", content=same_size.request(8, 8)).status_code == 409
    # Still at the honest log's size.
    assert witness.post("/add-checkpoint", content=log.request(0)).text == "8\n"


def test_unknown_logs_and_keys(witness: TestClient, log: Log) -> None:
    log.grow(3)
    stranger = Log(Signer.generate("example.com/other"), origin="example.com/other")
    stranger.grow(3)
    note = stranger.checkpoint().replace("example.com/other", ORIGIN)  # body only, sig is junk
    unknown = witness.post("/add-checkpoint", content=b"old 0\n\n" + stranger.checkpoint().encode())
    assert unknown.status_code == 404
    impostor = Log(Signer.generate(ORIGIN))  # right name, wrong key
    impostor.grow(3)
    assert witness.post("/add-checkpoint", content=impostor.request(0)).status_code == 403
    assert witness.post("/add-checkpoint", content=b"old 0\n\n" + note.encode()).status_code == 403
    # Old size beyond the checkpoint: 400.
    too_far = witness.post("/add-checkpoint", content=log.request(0).replace(b"old 0", b"old 4"))
    assert too_far.status_code == 400


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"old 0",
        b"old 0\n",
        b"old -1\n\n",
        b"old 01\n\n",
        b"old \xd9\xa1\n\n",
        b"old 9223372036854775808\n\n",
        b"new 0\n\n",
        b"old 0\nAAAA\n\n",
        b"old 0\n!!!!\n\n",
        b"\xff\xfe",
        b"old 0\n\nnot a checkpoint",
        b"old 0\n\nexample.com/log\n1\nAAAA\n\n",
        b"old 0\n" + b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n" * 64 + b"\n",
    ],
)
def test_malformed_requests_get_400(witness: TestClient, body: bytes) -> None:
    answer = witness.post("/add-checkpoint", content=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["ok"] is False


def test_a_proof_with_old_size_zero_is_refused(witness: TestClient, log: Log) -> None:
    log.grow(4)
    body = b"old 0\n" + base64.b64encode(b"\0" * 32) + b"\n\n" + log.checkpoint().encode()
    assert witness.post("/add-checkpoint", content=body).status_code == 400


def test_oversized_bodies_and_other_methods(witness: TestClient) -> None:
    big = witness.post("/add-checkpoint", content=b"x" * (MAX_BODY_BYTES + 1))
    assert big.status_code == 413
    assert witness.get("/add-checkpoint").status_code == 405
    assert witness.get("/nothing").json()["reason"] == "not_found"


def test_rate_limit(tmp_path: Path, log: Log) -> None:
    log.grow(1)
    with witness_app(tmp_path, log, rate=0.01, burst=3) as client:
        codes = [client.post("/add-checkpoint", content=b"old 0\n").status_code for _ in range(5)]
    assert codes == [400, 400, 400, 429, 429]
