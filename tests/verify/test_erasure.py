"""The verifier tells intact, erased and tampered entries apart (entry format 2).

The logs here are built from the entry contract alone (no server), so each case can be
made exactly: an erasure the log records, values removed without one, a changed salt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from immutablelog.checkpoint import Checkpoint, Signer, sign_checkpoint
from immutablelog.entry import (
    ADMIN_SERVICE,
    SALT_BYTES,
    build_entry,
    encode_entry,
    validate_submission,
)
from immutablelog.erasure import ERASURE_EVENT, erasure_payloads
from immutablelog.merkle import leaf_hash, root_from_leaves
from immutablelog.verify import verify_bundle
from immutablelog.verify.checks import check_lines, check_page
from immutablelog.verify.report import FindingKind, Report, Status
from tests.verify.helpers import encode_records

SIGNER = Signer("erasure-test", Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
TENANT = "default"
AT = "2026-12-07T12:00:00.000000Z"


@dataclass
class Log:
    """A tenant's log built in memory: entry bytes and the erasable parts still held."""

    entries: list[bytes] = field(default_factory=list)
    parts: list[bytes | None] = field(default_factory=list)

    def add_event(self, actor: str, payload: str | None = None) -> int:
        index = len(self.entries)
        submission = validate_submission(
            payload or f'{{"n": {index}, "email": "{actor}@example.com"}}',
            {"type": "info", "event_name": "user.updated", "service": "app", "actor": actor},
            f"key-{index}",
        )
        self._append(submission)
        assert submission.erasable is not None
        self.parts[index] = submission.erasable.to_bytes()
        return index

    def erase(self, indexes: list[int], reason: str = "GDPR Art. 17 request 42") -> list[int]:
        """Log the erasure of ``indexes`` and drop their values, as the server does."""
        records = []
        for payload in erasure_payloads(indexes, reason, "iml_admin_test"):
            submission = validate_submission(
                payload,
                {"type": "info", "event_name": ERASURE_EVENT, "service": ADMIN_SERVICE},
                f"erasure-{len(self.entries)}",
                clear=True,
            )
            records.append(self._append(submission))
        for index in indexes:
            self.parts[index] = None
        return records

    def _append(self, submission: Any) -> int:
        index = len(self.entries)
        entry = build_entry(
            submission, tenant=TENANT, index=index, entry_id=f"id-{index}", received_at=AT
        )
        self.entries.append(encode_entry(entry))
        self.parts.append(None)
        return index

    def bundle(self, path: Path, *, omit_values: bool = False) -> Path:
        size = len(self.entries)
        root = root_from_leaves([leaf_hash(e) for e in self.entries])
        origin = f"{SIGNER.name}/{TENANT}"
        header: dict[str, Any] = {
            "format": "immutablelog-bundle/2",
            "origin": origin,
            "log_key": SIGNER.verifier_key(),
            "checkpoint": sign_checkpoint(SIGNER, Checkpoint(origin, size, root)),
            "tree_size": size,
        }
        if omit_values:
            header["erasable"] = "omitted"
        lines = [orjson.dumps(header)]
        for index, (data, part) in enumerate(zip(self.entries, self.parts, strict=True)):
            line: dict[str, Any] = {"index": index, "entry": data.decode()}
            if part is not None and not omit_values:
                line["erasable"] = {
                    "salt": part[:SALT_BYTES].hex(),
                    "values": part[SALT_BYTES:].decode(),
                }
            lines.append(orjson.dumps(line))
        path.write_bytes(b"\n".join(lines) + b"\n")
        return path


def verify(path: Path) -> Report:
    return verify_bundle(path, pinned_key=SIGNER.verifier_key())


def kinds(report: Report) -> list[str]:
    return [f.kind.value for f in report.findings]


def log_of(count: int, actors: tuple[str, ...] = ("alice", "bob", "carol")) -> Log:
    log = Log()
    for i in range(count):
        log.add_event(actors[i % len(actors)])
    return log


def test_values_in_the_bundle_are_held_to_their_commitments(tmp_path: Path) -> None:
    report = verify(log_of(20).bundle(tmp_path / "b.jsonl"))
    assert report.status is Status.INTACT, report.to_json()
    assert report.entries_checked == 20 and report.erased_entries == 0


def test_a_logged_erasure_is_intact_and_says_who_when_why(tmp_path: Path) -> None:
    log = log_of(30)
    bobs = [i for i in range(30) if i % 3 == 1]
    (record,) = log.erase(bobs, reason="GDPR Art. 17 request 42")
    report = verify(log.bundle(tmp_path / "b.jsonl"))
    assert report.status is Status.INTACT, report.to_json()
    assert report.erased_entries == len(bobs)
    assert report.erasures == [
        {
            "index": record,
            "at": AT,
            "by": "iml_admin_test",
            "reason": "GDPR Art. 17 request 42",
            "count": len(bobs),
        }
    ]
    assert report.to_json()["erased_entries"] == len(bobs)


def test_values_removed_without_an_erasure_are_tampered_and_pinpointed(tmp_path: Path) -> None:
    log = log_of(12)
    log.erase([2])
    log.parts[5] = None  # deleted behind the API: no record says so
    log.parts[6] = None
    report = verify(log.bundle(tmp_path / "b.jsonl"))
    assert report.status is Status.TAMPERED
    (finding,) = report.findings
    assert finding.kind is FindingKind.MISSING_VALUES
    assert (finding.index, finding.end) == (5, 7)
    assert report.erased_entries == 1


def test_an_erasure_record_never_covers_an_entry_after_it(tmp_path: Path) -> None:
    log = log_of(4)
    log.erase([1])
    later = log.add_event("dave")
    log.parts[later] = None
    report = verify(log.bundle(tmp_path / "b.jsonl"))
    assert kinds(report) == ["missing_values"] and report.findings[0].index == later


@pytest.mark.parametrize("damage", ["salt", "values", "truncated"])
def test_a_changed_salt_or_value_is_tampered(tmp_path: Path, damage: str) -> None:
    log = log_of(8)
    part = log.parts[3]
    assert part is not None
    if damage == "salt":
        log.parts[3] = bytes([part[0] ^ 1]) + part[1:]
    elif damage == "values":
        log.parts[3] = part.replace(b"alice", b"mallory")
    else:
        log.parts[3] = part[:SALT_BYTES]
    report = verify(log.bundle(tmp_path / "b.jsonl"))
    assert kinds(report) == ["altered_values"] and report.findings[0].index == 3
    assert report.findings[0].entry_id == "id-3"


def test_a_bundle_without_values_proves_the_clear_fields(tmp_path: Path) -> None:
    log = log_of(10)
    log.erase([4])
    report = verify(log.bundle(tmp_path / "b.jsonl", omit_values=True))
    assert report.status is Status.INTACT, report.to_json()
    assert report.erased_entries == 1 and report.withheld_entries == 9


def test_a_client_cannot_forge_an_erasure_record(tmp_path: Path) -> None:
    """A client's event named like an erasure record is a committed entry, never a record."""
    log = log_of(6)
    forged = validate_submission(
        '{"message":"immutablelog.erasure","reason":"x","by":"me","count":1,"ranges":[[2,3]]}',
        {"type": "info", "event_name": ERASURE_EVENT, "service": ADMIN_SERVICE},
        "forged",
    )
    log._append(forged)
    assert forged.erasable is not None
    log.parts[-1] = forged.erasable.to_bytes()
    log.parts[2] = None
    report = verify(log.bundle(tmp_path / "b.jsonl"))
    assert kinds(report) == ["missing_values"] and report.erasures == []


@pytest.mark.parametrize("ranges", ["[[3,9]]", "[[3,4,5]]", "[3]", '[["3",4]]', "[[4,3]]"])
def test_a_malformed_erasure_record_covers_nothing(tmp_path: Path, ranges: str) -> None:
    log = log_of(5)
    bad = validate_submission(
        '{"message":"immutablelog.erasure","reason":"x","by":"me","ranges":' + ranges + "}",
        {"type": "info", "event_name": ERASURE_EVENT, "service": ADMIN_SERVICE},
        "bad",
        clear=True,
    )
    log._append(bad)  # past the record itself, not a pair of indexes, or backwards
    log.parts[3] = None
    report = verify(log.bundle(tmp_path / "b.jsonl"))
    assert sorted(kinds(report)) == ["invalid_erasure", "missing_values"]


def test_format_1_and_2_entries_in_one_log(tmp_path: Path) -> None:
    log = Log()
    for i in range(3):  # what an earlier release wrote: the payload inside the entry
        entry = {
            "v": 1,
            "tenant": TENANT,
            "index": i,
            "id": f"old-{i}",
            "received_at": AT,
            "idempotency_key": f"old-{i}",
            "type": "info",
            "event_name": "old",
            "service": "app",
            "request_id": None,
            "env": None,
            "actor": "alice",
            "payload": "{}",
        }
        log.entries.append(encode_entry(entry))
        log.parts.append(None)
    for _ in range(3):
        log.add_event("bob")
    log.erase([4])
    report = verify(log.bundle(tmp_path / "b.jsonl"))
    assert report.status is Status.INTACT, report.to_json()
    assert report.erased_entries == 1


def test_pages_and_bundle_lines_agree_on_parts() -> None:
    log = log_of(6)
    log.parts[2] = None
    log.parts[4] = b"\x00" * SALT_BYTES + b'{"payload":"{}"}'
    page = check_page(
        encode_records(list(zip(range(6), log.entries, log.parts, strict=True))), 0, 6, TENANT
    )
    lines = b"".join(
        orjson.dumps(
            {"index": i, "entry": e.decode()}
            | (
                {"erasable": {"salt": p[:SALT_BYTES].hex(), "values": p[SALT_BYTES:].decode()}}
                if p
                else {}
            )
        )
        + b"\n"
        for i, (e, p) in enumerate(zip(log.entries, log.parts, strict=True))
    )
    block = check_lines(lines, 0, TENANT)
    for result in (page, block):
        assert result.unrevealed == ((2, 3),)
        assert [(a.kind, a.position) for a in result.anomalies] == [("altered_values", 4)]
        assert result.leaves == page.leaves


@pytest.mark.parametrize(
    "erasable",
    [
        {"salt": "00" * 15, "values": "{}"},
        {"salt": "zz" * 16, "values": "{}"},
        {"salt": " 0" * 16, "values": "{}"},
        {"salt": "00" * 16},
        {"salt": "00" * 16, "values": "{}", "extra": 1},
        "not an object",
    ],
)
def test_a_malformed_erasable_member_is_a_malformed_line(erasable: object) -> None:
    log = log_of(2)
    lines = (
        orjson.dumps({"index": 0, "entry": log.entries[0].decode()})
        + b"\n"
        + orjson.dumps({"index": 1, "entry": log.entries[1].decode(), "erasable": erasable})
        + b"\n"
    )
    result = check_lines(lines, 0, TENANT)
    assert [(a.kind, a.position) for a in result.anomalies] == [("malformed_bundle", 1)]


def test_entries_checked_before_still_have_their_parts_checked() -> None:
    """A --full run only hashes entries an earlier run checked, but values may have been
    changed or erased since: the root does not cover them, so parts are checked anyway."""
    log = log_of(6)
    log.erase([1])
    part = log.parts[4]
    assert part is not None
    log.parts[4] = part.replace(b"bob", b"eve")
    log.parts[5] = None
    records = list(zip(range(len(log.entries)), log.entries, log.parts, strict=True))
    for content in (True, False):
        result = check_page(encode_records(records), 0, len(records), TENANT, content=content)
        assert [(a.kind, a.position) for a in result.anomalies] == [("altered_values", 4)]
        assert result.unrevealed == ((1, 2), (5, 6))
        assert [r.ranges for r in result.erasures] == [((1, 2),)]
