"""What a verification found, and how it is told: to a person, and to a machine.

Three outcomes, three exit codes: the log is intact (0), it is tampered with (1), or it could
not be checked (2). Keeping "could not check" apart from "tampered" matters to whoever is
paged: an unreachable server is an outage, a failed proof is an incident.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.markup import escape

from immutablelog._counted import counted

#: How many findings a report keeps. A log with every entry renumbered has a million
#: symptoms of one cause; the first ones and the total are what an investigator needs.
MAX_FINDINGS = 200


class Status(enum.StrEnum):
    INTACT = "intact"
    TAMPERED = "tampered"
    ERROR = "error"

    @property
    def exit_code(self) -> int:
        return {Status.INTACT: 0, Status.TAMPERED: 1, Status.ERROR: 2}[self]


class FindingKind(enum.StrEnum):
    """What is wrong. Each kind is described in docs/VERIFY.md."""

    ALTERED_ENTRY = "altered_entry"
    NON_CANONICAL_ENTRY = "non_canonical_entry"
    WRONG_INDEX = "wrong_index"
    WRONG_TENANT = "wrong_tenant"
    MISSING_ENTRY = "missing_entry"
    EXTRA_ENTRY = "extra_entry"
    ROOT_MISMATCH = "root_mismatch"
    BAD_SIGNATURE = "bad_signature"
    WRONG_LOG_KEY = "wrong_log_key"
    WRONG_ORIGIN = "wrong_origin"
    INCONSISTENT_HISTORY = "inconsistent_history"
    ROLLBACK = "rollback"
    MALFORMED_BUNDLE = "malformed_bundle"
    ALTERED_VALUES = "altered_values"
    MISSING_VALUES = "missing_values"
    INVALID_ERASURE = "invalid_erasure"


@dataclass(frozen=True, slots=True)
class Finding:
    """One piece of evidence of tampering, pinned to an index (or ``[index, end)``) if possible."""

    kind: FindingKind
    message: str
    index: int | None = None
    end: int | None = None
    entry_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind.value, "message": self.message}
        if self.index is not None:
            out["index"] = self.index
        if self.end is not None:
            out["end"] = self.end
        if self.entry_id is not None:
            out["entry_id"] = self.entry_id
        return out


class CouldNotCheck(Exception):
    """The verification could not be carried out (exit code 2); nothing was concluded.

    ``reason`` is a machine code: ``network``, ``auth``, ``malformed_answer``, ``not_found``,
    ``server_error``, ``bad_argument``, ``state_file``, ``bundle``, ``witness_quorum``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __reduce__(self) -> tuple[type[CouldNotCheck], tuple[str, str]]:
        # Raised in worker processes too: pickle both arguments, not just the message.
        return CouldNotCheck, (self.reason, self.message)


@dataclass
class Report:
    """Everything a run learned. ``status`` follows from ``findings`` and ``error``."""

    command: str
    source: str
    origin: str | None = None
    log_key: str | None = None
    key_source: str | None = None
    tree_size: int | None = None
    root_hash: bytes | None = None
    previous_size: int | None = None
    entries_checked: int = 0
    findings: list[Finding] = field(default_factory=list)
    findings_total: int = 0
    warnings: list[str] = field(default_factory=list)
    error: CouldNotCheck | None = None
    state_file: str | None = None
    state_saved: bool = False
    elapsed_seconds: float = 0.0
    event: dict[str, Any] | None = None
    #: The witnesses whose valid cosignatures the checkpoint carried (with a witness policy).
    witnesses: list[str] | None = None
    #: Entries whose erasable values are gone under an erasure the log records (intact).
    erased_entries: int = 0
    #: Entries whose values the source left out by design (a bundle without erasable parts).
    withheld_entries: int = 0
    #: The erasure records among the entries checked: who, when, why, how many.
    erasures: list[dict[str, Any]] = field(default_factory=list)
    #: Rotations of the log key followed in this run (each vouched for by the key before it).
    key_rotations: list[str] = field(default_factory=list)
    #: The keys trusted before them, oldest first.
    replaced_keys: list[str] = field(default_factory=list)

    def add(self, finding: Finding) -> None:
        self.findings_total += 1
        if len(self.findings) < MAX_FINDINGS:
            self.findings.append(finding)

    @property
    def status(self) -> Status:
        if self.findings_total:
            return Status.TAMPERED
        if self.error is not None:
            return Status.ERROR
        return Status.INTACT

    @property
    def exit_code(self) -> int:
        return self.status.exit_code

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "command": self.command,
            "status": self.status.value,
            "exit_code": self.exit_code,
            "source": self.source,
            "origin": self.origin,
            "log_key": self.log_key,
            "key_source": self.key_source,
            "tree_size": self.tree_size,
            "root_hash": self.root_hash.hex() if self.root_hash is not None else None,
            "previous_size": self.previous_size,
            "entries_checked": self.entries_checked,
            "findings": [f.to_json() for f in self.findings],
            "findings_total": self.findings_total,
            "warnings": list(self.warnings),
            "state_file": self.state_file,
            "state_saved": self.state_saved,
            "elapsed_seconds": round(self.elapsed_seconds, 3),
        }
        if self.error is not None:
            out["error"] = {"reason": self.error.reason, "message": self.error.message}
        if self.event is not None:
            out["event"] = self.event
        if self.witnesses is not None:
            out["witnesses"] = list(self.witnesses)
        if self.erasures or self.erased_entries:
            out["erased_entries"] = self.erased_entries
            out["erasures"] = list(self.erasures)
        if self.withheld_entries:
            out["withheld_entries"] = self.withheld_entries
        if self.key_rotations:
            out["key_rotations"] = list(self.key_rotations)
        return out


_SHOWN_FINDINGS = 50
_SHOWN_ERASURES = 10


def render_human(report: Report, console: Console) -> None:
    """Print the report for a person: the verdict first, then the evidence."""
    status = report.status
    where = escape(report.source)
    if report.origin:
        where += f" [dim](origin {escape(report.origin)})[/dim]"
    console.print(f"[bold]immutablelog {report.command}[/bold] {where}")
    if report.log_key:
        console.print(f"  log key     {escape(report.log_key)} [dim]({report.key_source})[/dim]")
    if report.tree_size is not None and report.root_hash is not None:
        console.print(f"  checkpoint  size {report.tree_size:,}  root {report.root_hash.hex()}")
    if report.witnesses is not None:
        console.print(f"  cosigned by {escape(', '.join(report.witnesses))}")
    if report.previous_size is not None:
        console.print(f"  previously  verified up to size {report.previous_size:,}")
    if report.command != "prove":
        console.print(f"  checked     {counted(report.entries_checked, 'entry', 'entries')}")
    if report.event is not None:
        event = report.event
        console.print(
            f"  event       index {event.get('index')}  id {escape(str(event.get('id')))}  "
            f"{escape(str(event.get('type')))} {escape(str(event.get('event_name')))} "
            f"({escape(str(event.get('service')))}) at {escape(str(event.get('received_at')))}"
        )
    if report.erasures or report.erased_entries:
        console.print(
            f"  erased      the values of {counted(report.erased_entries, 'entry', 'entries')}, "
            f"under {counted(len(report.erasures), 'erasure record')} in the log"
        )
        for record in report.erasures[:_SHOWN_ERASURES]:
            console.print(
                f"    index {record['index']} at {escape(record['at'])} by "
                f"{escape(record['by'])}: {escape(record['reason'])} ({record['count']:,})"
            )
    if report.withheld_entries:
        console.print(
            f"  withheld    the values of {counted(report.withheld_entries, 'entry', 'entries')} "
            "are not in this source: "
            "their clear fields and commitments are what is proven"
        )
    for rotation in report.key_rotations:
        console.print(f"  [cyan]key rotated[/cyan] {escape(rotation)}")
    for warning in report.warnings:
        console.print(f"  [yellow]warning[/yellow]     {escape(warning)}")
    if status is Status.TAMPERED:
        noun = "finding" if report.findings_total == 1 else "findings"
        console.print(f"[bold red]TAMPERED[/bold red] — {report.findings_total:,} {noun}")
        for finding in report.findings[:_SHOWN_FINDINGS]:
            where_at = ""
            if finding.index is not None:
                where_at = f"index {finding.index}"
                if finding.end is not None and finding.end != finding.index + 1:
                    where_at = f"indexes {finding.index}..{finding.end - 1}"
            ident = f" id {escape(finding.entry_id)}" if finding.entry_id else ""
            console.print(
                f"  [red]{finding.kind.value}[/red] {where_at}{ident}: {escape(finding.message)}"
            )
        hidden = report.findings_total - min(len(report.findings), _SHOWN_FINDINGS)
        if hidden > 0:
            console.print(f"  … and {hidden:,} more (use --json for the full list)")
        if report.error is not None:
            console.print(f"  [dim]then stopped: {escape(report.error.message)}[/dim]")
    elif status is Status.ERROR:
        assert report.error is not None
        console.print(
            f"[bold yellow]COULD NOT CHECK[/bold yellow] ({report.error.reason}): "
            f"{escape(report.error.message)}"
        )
    else:
        verdict = "PROVEN" if report.command == "prove" else "INTACT"
        console.print(f"[bold green]{verdict}[/bold green]", end="")
        if report.state_saved and report.state_file:
            console.print(f" — state saved to {escape(report.state_file)}")
        else:
            console.print()
