"""Where the tampering is: which entries an unexpected root comes from (walking down the
signed tree with inclusion proofs), and entries hidden past the signed tree."""

from __future__ import annotations

from immutablelog.checkpoint import Checkpoint, Verifier
from immutablelog.merkle import node_hash
from immutablelog.verify.checks import MalformedAnswer, check_page
from immutablelog.verify.client import LogClient
from immutablelog.verify.engine import Rebuild, UnknownSubtree
from immutablelog.verify.report import CouldNotCheck, Finding, FindingKind, Report
from immutablelog.verify.trust import open_signed_checkpoint

#: How many altered entries to pinpoint through proofs before stopping (each costs ~2 log n
#: proof requests); more are summarized by the root mismatch.
LOCATE_LIMIT = 5


def pinpoint_altered(
    client: LogClient, rebuild: Rebuild, checkpoint: Checkpoint, verified_below: int
) -> None:
    """The rebuilt root is not the signed one: find which entries differ, through proofs.

    Walk down the tree from the signed root. At each node, the server's inclusion proofs give
    its hashes for both children; they must hash to the node's (already authenticated) hash,
    so they are authenticated in turn, and a child whose hash differs from ours holds an
    altered entry. If the server's two hashes do not add up (its own storage is damaged too),
    one of ours may stand in for one of them; failing that, the node's range is reported as
    it is. ``verified_below`` is the size of the prefix a consistency proof already vouched
    for, which holds nothing to find.
    """
    report = rebuild.report
    size, root = checkpoint.size, checkpoint.root_hash
    proofs: dict[int, dict[tuple[int, int], bytes]] = {}
    found: list[tuple[int, bytes]] = []
    unresolved: list[tuple[int, int]] = []

    def siblings(leaf: int) -> dict[tuple[int, int], bytes]:
        if leaf not in proofs:
            path = _path_siblings(leaf, size)
            hashes = client.inclusion_proof(leaf, size)
            if len(hashes) != len(path):
                raise _Unlocatable(f"the inclusion proof for {leaf} has the wrong length")
            proofs[leaf] = dict(zip(path, hashes, strict=True))
        return proofs[leaf]

    def descend(start: int, end: int, committed: bytes) -> None:
        if len(found) >= LOCATE_LIMIT:
            return
        if end - start == 1:
            found.append((start, committed))
            return
        split = start + (1 << ((end - start - 1).bit_length() - 1))
        left = siblings(split)[(start, split)]
        right = siblings(start)[(split, end)]
        ours_left = rebuild.subtree_hash(start, split) if split > verified_below else None
        ours_right = rebuild.subtree_hash(split, end)
        if node_hash(left, right) != committed:
            if ours_left is not None and node_hash(ours_left, right) == committed:
                left = ours_left
            elif node_hash(left, ours_right) == committed:
                right = ours_right
            else:
                unresolved.append((start, end))
                return
        if ours_left is not None and ours_left != left:
            descend(start, split, left)
        if ours_right != right:
            descend(split, end, right)

    try:
        descend(0, size, root)
    except (_Unlocatable, UnknownSubtree) as exc:
        report.add(
            Finding(
                FindingKind.ROOT_MISMATCH,
                f"the entries do not rebuild the signed root {root.hex()} (got "
                f"{rebuild.frontier.root().hex()}); could not pinpoint further: {exc}",
            )
        )
        return
    located = [(p, h) for p, h in found if not rebuild.is_explained(p)]
    for position, committed in located:
        entry_id = None
        try:
            page = check_page(
                client.entries_page(position, position + 1), position, position + 1, ""
            )
            entry_id = page.last_id
        except (CouldNotCheck, MalformedAnswer):
            pass
        ours = rebuild.subtree_hash(position, position + 1)
        report.add(
            Finding(
                FindingKind.ALTERED_ENTRY,
                f"entry {position} hashes to {ours.hex()}, but the signed tree holds "
                f"{committed.hex()} at that index: its bytes were changed",
                position,
                entry_id=entry_id,
            )
        )
    for start, end in unresolved:
        if rebuild.overlaps_explained(start, end):
            continue
        report.add(
            Finding(
                FindingKind.ROOT_MISMATCH,
                f"the entries do not rebuild the signed root {root.hex()}; the server's own "
                f"hashes contradict it too; the difference lies in entries {start}..{end - 1}",
                start,
                end,
            )
        )
    if not found and not unresolved:
        report.add(
            Finding(
                FindingKind.ROOT_MISMATCH,
                f"the entries do not rebuild the signed root {root.hex()}",
            )
        )
    elif len(found) >= LOCATE_LIMIT and located:
        report.warnings.append(
            f"stopped pinpointing after {LOCATE_LIMIT} altered entries; there may be more"
        )
    report.findings.sort(key=lambda f: -1 if f.index is None else f.index)


class _Unlocatable(Exception):
    pass


def _path_siblings(leaf: int, size: int) -> list[tuple[int, int]]:
    """The ``[start, end)`` of each sibling on ``leaf``'s path, bottom-up (RFC 9162 order)."""
    out: list[tuple[int, int]] = []
    start, end = 0, size
    while end - start > 1:
        split = start + (1 << ((end - start - 1).bit_length() - 1))
        if leaf < split:
            out.append((split, end))
            end = split
        else:
            out.append((start, split))
            start = split
    out.reverse()
    return out


def probe_beyond(
    client: LogClient, report: Report, verifier: Verifier, checkpoint: Checkpoint, tenant: str
) -> None:
    """An entry stored past the signed tree was never signed for: a hidden insertion.

    New events may legitimately land between the two requests, so a hit only counts if the
    latest checkpoint still does not cover it.
    """
    size = checkpoint.size
    try:
        probe = check_page(client.entries_page(size, size + 1), size, size + 1, tenant)
    except MalformedAnswer as exc:
        raise CouldNotCheck("malformed_answer", f"GET /v1/entries: {exc}") from None
    if not probe.received:
        return
    latest = open_signed_checkpoint(
        report, verifier, client.checkpoint(), checkpoint.origin, "the latest checkpoint"
    )
    if latest.size <= size:
        report.add(
            Finding(
                FindingKind.EXTRA_ENTRY,
                f"the server stores an entry at index {size}, beyond its signed tree of size "
                f"{latest.size}",
                size,
                entry_id=probe.last_id,
            )
        )
