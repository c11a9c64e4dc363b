"""The browser's proof checks (static/verify.js) against the Python ones, vector by vector.

Every vector runs through both: the published RFC 6962 and C2SP/Go signed-note vectors, proofs
of larger trees (sizes past 2^32, where plain JavaScript bit operations would wrap), and
mutations of each. They must agree on every verdict, and on every value they return.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from playwright import sync_api as pw_sync

from immutablelog.checkpoint import MAX_TREE_SIZE, Checkpoint, NoteError, Signer, Verifier
from immutablelog.merkle import ProofError, verify_consistency, verify_inclusion
from tests.live import LiveServer
from tests.merkle.test_reference import (
    BIG_TREE,
    CONSISTENCY_PROOFS,
    INCLUSION_PROOFS,
    LEAF_INPUTS,
    ROOTS,
    VECTOR_TREE,
    UniformTree,
    naive_consistency,
    naive_inclusion,
    rfc_leaf,
)
from tests.test_checkpoint import (
    C2SP_NOTE,
    C2SP_VKEY,
    ENOCH_SIG,
    ENOCH_VKEY,
    GO_TREE_TEXT,
    PETER_SIG,
    PETER_VKEY,
    QUOTE,
)
from tests.viewer.conftest import watch

Case = dict[str, Any]


def _verdict(check: Callable[[], Any]) -> list[Any]:
    try:
        return [True, check()]
    except (ProofError, NoteError) as error:
        return [False, str(error)]


def _flip(h: bytes) -> bytes:
    return bytes([h[0] ^ 1]) + h[1:]


def _inclusion_cases(
    index: int, size: int, leaf: bytes, proof: list[bytes], root: bytes
) -> Iterator[Case]:
    variants = [(index, size, leaf, proof, root), (index, size, _flip(leaf), proof, root)]
    if proof:
        variants += [
            (index, size, leaf, [_flip(proof[0]), *proof[1:]], root),
            (index, size, leaf, proof[:-1], root),
        ]
    variants += [
        (index, size, leaf, [*proof, leaf], root),
        (index + 1, size, leaf, proof, root),
        (index, size + 1, leaf, proof, root),
        (index, index, leaf, proof, root),
    ]
    for i, s, lf, pr, rt in variants:
        if s > MAX_TREE_SIZE:
            continue  # no checkpoint can name it; verify.js refuses it before hashing
        yield {
            "kind": "inclusion",
            "index": i,
            "size": s,
            "leaf": lf.hex(),
            "proof": [h.hex() for h in pr],
            "root": rt.hex(),
        }


def _consistency_cases(
    size1: int, size2: int, proof: list[bytes], root1: bytes, root2: bytes
) -> Iterator[Case]:
    variants = [(size1, size2, proof, root1, root2), (size1, size2, proof, _flip(root1), root2)]
    if proof:
        variants += [
            (size1, size2, [*proof[:-1], _flip(proof[-1])], root1, root2),
            (size1, size2, proof[1:], root1, root2),
        ]
    variants += [
        (size1, size2, [*proof, root1], root1, root2),
        (size1, size2 + 1, proof, root1, root2),
        (size2 + 1, size2, proof, root1, root2),
    ]
    for s1, s2, pr, r1, r2 in variants:
        if max(s1, s2) > MAX_TREE_SIZE:
            continue
        yield {
            "kind": "consistency",
            "size1": s1,
            "size2": s2,
            "proof": [h.hex() for h in pr],
            "root1": r1.hex(),
            "root2": r2.hex(),
        }


def merkle_cases() -> list[Case]:
    cases: list[Case] = []
    for index, size, proof in INCLUSION_PROOFS:
        cases += _inclusion_cases(
            index,
            size,
            rfc_leaf(LEAF_INPUTS[index]),
            [bytes.fromhex(h) for h in proof],
            bytes.fromhex(ROOTS[size]),
        )
    for size1, size2, proof in CONSISTENCY_PROOFS:
        cases += _consistency_cases(
            size1,
            size2,
            [bytes.fromhex(h) for h in proof],
            bytes.fromhex(ROOTS[size1]),
            bytes.fromhex(ROOTS[size2]),
        )
    cases += _consistency_cases(0, 5, [], VECTOR_TREE.root(0), VECTOR_TREE.root(5))
    rng = random.Random(6962)
    for _ in range(25):
        size = rng.randint(1, 1100)
        index = rng.randrange(size)
        cases += _inclusion_cases(
            index,
            size,
            BIG_TREE.leaves[index],
            BIG_TREE.inclusion(index, size),
            BIG_TREE.root(size),
        )
        size1 = rng.randint(1, size)
        cases += _consistency_cases(
            size1,
            size,
            BIG_TREE.consistency(size1, size),
            BIG_TREE.root(size1),
            BIG_TREE.root(size),
        )
    # Past 2^32 and up to the largest tree size: a leaf whose hash every leaf shares.
    uniform = UniformTree(rfc_leaf(b"entry"))
    for index, size in [(2**32 + 1, 2**32 + 3), (2**40 + 5, 2**41 + 7), (2**62, 2**63 - 1)]:
        cases += _inclusion_cases(
            index,
            size,
            rfc_leaf(b"entry"),
            naive_inclusion(index, size, uniform.mth),
            uniform.root(size),
        )
    for size1, size2 in [(2**33 + 1, 2**33 + 9), (2**32, 2**40 + 1), (2**61 + 3, 2**63 - 1)]:
        cases += _consistency_cases(
            size1,
            size2,
            naive_consistency(size1, size2, uniform.mth),
            uniform.root(size1),
            uniform.root(size2),
        )
    return cases


def python_merkle(case: Case) -> list[Any]:
    proof = [bytes.fromhex(h) for h in case["proof"]]
    if case["kind"] == "inclusion":
        return _verdict(
            lambda: verify_inclusion(
                case["index"],
                case["size"],
                bytes.fromhex(case["leaf"]),
                proof,
                bytes.fromhex(case["root"]),
            )
        )
    return _verdict(
        lambda: verify_consistency(
            case["size1"],
            case["size2"],
            proof,
            bytes.fromhex(case["root1"]),
            bytes.fromhex(case["root2"]),
        )
    )


def note_cases() -> list[Case]:
    signer = Signer.generate("immutablelog")
    checkpoint_note = signer.sign(
        Checkpoint("immutablelog/default", 42, bytes(range(32))).to_text()
    )
    other = Signer.generate("immutablelog")
    bad_sig = PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]
    body, _, sig = checkpoint_note.partition("\n\n")
    notes = [
        (PETER_VKEY, QUOTE + "\n" + PETER_SIG),
        (PETER_VKEY, QUOTE + "\n" + PETER_SIG + ENOCH_SIG),
        (ENOCH_VKEY, QUOTE + "\n" + PETER_SIG + ENOCH_SIG),
        (ENOCH_VKEY, QUOTE + "\n" + PETER_SIG),
        (PETER_VKEY, QUOTE + "\n" + bad_sig),
        (PETER_VKEY, QUOTE + "\n" + PETER_SIG + PETER_SIG),
        (PETER_VKEY, QUOTE + "\n" + PETER_SIG.rstrip("\n")),
        (PETER_VKEY, QUOTE.replace("cryptography", "cryptographY") + "\n" + PETER_SIG),
        (PETER_VKEY, QUOTE + "\n" + PETER_SIG.replace("— ", "-- ")),
        (PETER_VKEY, QUOTE + "\n" + PETER_SIG.replace("M=\n", "N=\n")),
        (PETER_VKEY, "\x01" + QUOTE + "\n" + PETER_SIG),
        (PETER_VKEY, QUOTE + PETER_SIG),
        (C2SP_VKEY, C2SP_NOTE),
        (signer.verifier_key(), checkpoint_note),
        (other.verifier_key(), checkpoint_note),
        (signer.verifier_key(), body.replace("\n42\n", "\n43\n") + "\n\n" + sig),
        (signer.verifier_key(), checkpoint_note + "— immutablelog AAAAAAA=\n"),
        # Malformed keys
        (PETER_VKEY.replace("c74f20a3", "c74f20a4"), QUOTE + "\n" + PETER_SIG),
        (PETER_VKEY.replace("+ARpc", "+Apc"), QUOTE + "\n" + PETER_SIG),
        (PETER_VKEY.replace("TW", "TX"), QUOTE + "\n" + PETER_SIG),
        ("Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", QUOTE),
        ("PeterNeumann+c74f20a3", QUOTE + "\n" + PETER_SIG),
        ("PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", QUOTE),
        ("PeterNeumann+c74f20a3+" + base64.b64encode(b"\x02" + bytes(32)).decode(), QUOTE),
    ]
    return [{"kind": "note", "key": key, "note": note} for key, note in notes]


def checkpoint_cases() -> list[Case]:
    root = base64.b64encode(bytes(32)).decode()
    texts = [
        GO_TREE_TEXT,
        GO_TREE_TEXT.replace("123456789012", "0xabcdef"),
        GO_TREE_TEXT.replace("Bb0=", "BTOOBIG="),
        GO_TREE_TEXT.rstrip("\n"),
        f"log/a\n{2**63 - 1}\n{root}\n",
        f"log/a\n{2**63}\n{root}\n",
        f"log/a\n01\n{root}\n",
        f"log/a\n-1\n{root}\n",
        f"log/a\n١٢\n{root}\n",
        f"log/a\n7\n{root}\nextension\n",
        f"log/a\n7\n{root}\n\n",
        f"\n7\n{root}\n",
        f"log/a\n7\n{root[:-4]}\n",
        "log/a\n7\n",
    ]
    return [{"kind": "checkpoint", "text": text} for text in texts]


def python_note(case: Case) -> list[Any]:
    if case["kind"] == "checkpoint":
        return _verdict(lambda: _checkpoint_json(Checkpoint.from_text(case["text"])))
    return _verdict(lambda: Verifier(case["key"]).verify(case["note"]))


def _checkpoint_json(checkpoint: Checkpoint) -> dict[str, Any]:
    return {
        "origin": checkpoint.origin,
        "size": str(checkpoint.size),
        "root": checkpoint.root_hash.hex(),
        "extensions": list(checkpoint.extensions),
    }


RUN_IN_BROWSER = """
async (cases) => {
  const v = await import("./assets/verify.js");
  const run = async (case_) => {
    const h = v.fromHex;
    switch (case_.kind) {
      case "inclusion":
        return v.verifyInclusion(BigInt(case_.index), BigInt(case_.size), h(case_.leaf),
          case_.proof.map(h), h(case_.root)).then(() => null);
      case "consistency":
        return v.verifyConsistency(BigInt(case_.size1), BigInt(case_.size2), case_.proof.map(h),
          h(case_.root1), h(case_.root2)).then(() => null);
      case "note":
        return v.verifyNote(await v.parseVerifierKey(case_.key), case_.note);
      case "checkpoint": {
        const c = v.parseCheckpoint(case_.text);
        return { origin: c.origin, size: String(c.size), root: v.toHex(c.root),
                 extensions: c.extensions };
      }
    }
  };
  const verdicts = [];
  for (const case_ of cases) {
    try {
      verdicts.push([true, await run(case_)]);
    } catch (error) {
      if (!(error instanceof v.VerifyError)) throw error;
      verdicts.push([false, error.message]);
    }
  }
  return verdicts;
}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    started = LiveServer(tmp_path_factory.mktemp("vectors") / "data")
    started.start()
    yield started
    started.kill()


@pytest.mark.parametrize(
    ("cases", "python"),
    [(merkle_cases(), python_merkle), (note_cases() + checkpoint_cases(), python_note)],
    ids=["rfc6962", "signed-note"],
)
def test_browser_and_python_agree_on_every_vector(
    context: pw_sync.BrowserContext,
    server: LiveServer,
    cases: list[Case],
    python: Callable[[Case], list[Any]],
) -> None:
    watched = watch(context, server.url)
    watched.page.goto(server.url + "/")
    # Sizes travel as strings: a JavaScript number would round those past 2^53.
    as_strings = [{k: str(v) if isinstance(v, int) else v for k, v in c.items()} for c in cases]
    in_browser = watched.page.evaluate(RUN_IN_BROWSER, as_strings)
    expected = [python(case) for case in cases]
    for case, js, py in zip(cases, in_browser, expected, strict=True):
        assert js[0] == py[0], (case, js, py)
        if py[0]:
            assert js[1] == py[1], (case, js, py)
    # Both verdicts occur, so agreement is not agreement on "everything passes".
    assert {ok for ok, _ in expected} == {True, False}
    watched.assert_quiet()


CHECK_ERASABLE = """
async (cases) => {
  const v = await import("./assets/verify.js");
  const verdicts = [];
  for (const [entry, part] of cases) {
    try {
      verdicts.push([true, await v.checkErasable(entry, part)]);
    } catch (error) {
      if (!(error instanceof v.VerifyError)) throw error;
      verdicts.push([false, null]);
    }
  }
  return verdicts;
}
"""


def test_browser_and_python_agree_on_erasable_parts(
    context: pw_sync.BrowserContext, server: LiveServer
) -> None:
    import json

    from immutablelog.entry import EntryError, build_entry, decode_erasable, validate_submission

    meta = {"type": "info", "event_name": "user.login", "service": "web", "actor": "zoë"}
    sub = validate_submission('{"note": "café"}', meta, "k")
    assert sub.erasable is not None
    entry = build_entry(sub, tenant="t", index=0, entry_id="i", received_at="now")
    part = {"salt": sub.erasable.salt.hex(), "values": sub.erasable.values.decode()}
    other_salt = {**part, "salt": bytes(16).hex()}
    other_values = {**part, "values": part["values"].replace("zoë", "zoe")}
    cases = [[entry, part], [entry, other_salt], [entry, other_values]]
    watched = watch(context, server.url)
    watched.page.goto(server.url + "/")
    in_browser = watched.page.evaluate(CHECK_ERASABLE, cases)
    for (_, case), (ok, values) in zip(cases, in_browser, strict=True):
        raw = bytes.fromhex(case["salt"]) + case["values"].encode()
        try:
            expected = [True, decode_erasable(entry, raw)]
        except EntryError:
            expected = [False, None]
        assert [ok, values] == expected, json.dumps(case)
    assert [ok for ok, _ in in_browser] == [True, False, False]
    watched.assert_quiet()


FOLLOW_IN_BROWSER = """
async (cases) => {
  const v = await import("./assets/verify.js");
  const verdicts = [];
  for (const case_ of cases) {
    const trusted = await v.parseVerifierKey(case_.trusted);
    let asked = 0;
    const handovers = async () => {
      asked += 1;
      return case_.handovers;
    };
    const r = await v.followRotation(trusted, case_.note, handovers);
    verdicts.push({ key: r.key.text, replaced: r.rotations.map((x) => x.oldKey),
                    sizes: r.rotations.map((x) => String(x.size)), ignored: r.ignored.length,
                    asked });
  }
  return verdicts;
}
"""


def rotation_cases() -> list[Case]:
    """Handover vectors: genuine ones, a chain, a cycle, and every forgery the Python tests
    name (a handover not signed by the trusted key, not by the key it names, of another
    tenant or log name, not a key, not a note)."""
    from tests.verify.test_rotation_trust import ATTACKER, NEW, OLD, ORIGIN, THIRD, note

    other_name = Signer.generate("otherlog")

    def handover(old: Signer, new: Signer, *signers: Signer, origin: str = ORIGIN) -> Case:
        text = sign_checkpoint_note(list(signers), origin)
        return {"old_key": old.verifier_key(), "new_key": new.verifier_key(), "checkpoint": text}

    def sign_checkpoint_note(signers: list[Signer], origin: str) -> str:
        from immutablelog.checkpoint import sign_checkpoint

        return sign_checkpoint(signers, Checkpoint(origin, 3, bytes(32)))

    genuine = handover(OLD, NEW, OLD, NEW)
    chain = [handover(NEW, THIRD, NEW, THIRD), genuine]
    cases = [
        (note(OLD), []),
        (note(OLD), [genuine]),  # no other key signed the note: nothing is asked
        (note(OLD, NEW), [genuine]),
        (note(NEW), [genuine]),
        (note(THIRD), chain),
        (note(NEW), [handover(NEW, OLD, NEW, OLD), genuine]),  # a cycle: at most 16 steps
        (note(ATTACKER), [handover(OLD, ATTACKER, ATTACKER)]),
        (note(ATTACKER), [handover(OLD, ATTACKER, OLD)]),
        (note(ATTACKER), [handover(OLD, ATTACKER, OLD, NEW)]),
        (note(ATTACKER), [{**genuine, "new_key": "immutablelog+00000000+AAAA"}]),
        (note(ATTACKER), [{**genuine, "new_key": ATTACKER.verifier_key(), "checkpoint": "x"}]),
        (note(NEW), [handover(OLD, NEW, OLD, NEW, origin="immutablelog/other")]),
        (note(NEW), [handover(OLD, other_name, OLD, other_name)]),
        (note(NEW), [handover(THIRD, NEW, THIRD, NEW)]),  # from a key not trusted
        (note(ATTACKER), [handover(OLD, ATTACKER, ATTACKER), genuine]),  # one forged, one not
        (note(other_name), [genuine]),  # only another log's key signed it: nothing is asked
        ("not a note", [genuine]),
    ]
    return [
        {"trusted": OLD.verifier_key(), "note": text, "handovers": offered}
        for text, offered in cases
    ]


def python_rotation(case: Case) -> dict[str, Any]:
    from immutablelog.verify.report import Report
    from immutablelog.verify.trust import follow_rotation

    class Log:
        asked = 0

        def handovers(self) -> list[tuple[str, str, str]]:
            self.asked += 1
            return [(h["old_key"], h["new_key"], h["checkpoint"]) for h in case["handovers"]]

    log = Log()
    report = Report("verify", "test")
    report.log_key = case["trusted"]
    follow_rotation(log, report, Verifier(case["trusted"]), case["note"], None)  # type: ignore[arg-type]
    return {
        "key": report.log_key,
        "replaced": report.replaced_keys,
        "sizes": [
            line.split("checkpoint of size ")[1].split(" ")[0] for line in report.key_rotations
        ],
        "ignored": len(report.warnings),
        "asked": log.asked,
    }


def test_browser_and_python_follow_the_same_key_rotations(
    context: pw_sync.BrowserContext, server: LiveServer
) -> None:
    cases = rotation_cases()
    watched = watch(context, server.url)
    watched.page.goto(server.url + "/")
    in_browser = watched.page.evaluate(FOLLOW_IN_BROWSER, cases)
    expected = [python_rotation(case) for case in cases]
    for case, js, py in zip(cases, in_browser, expected, strict=True):
        assert js == py, (case, js, py)
    # The vectors cover a followed chain, a cycle cut at the limit, and refused forgeries.
    assert {len(py["replaced"]) for py in expected} >= {0, 1, 2, 16}
    assert any(py["ignored"] and not py["replaced"] for py in expected)
    watched.assert_quiet()
