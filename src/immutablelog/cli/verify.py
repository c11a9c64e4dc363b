"""``immutablelog verify`` and ``immutablelog prove``: check a log without trusting its server.

Exit codes are the contract with scripts and monitors: 0 intact (or proven), 1 tampered,
2 could not check. ``--json`` prints exactly one JSON object on stdout; progress and warnings
go to stderr so they never mix into it.
"""

from __future__ import annotations

from pathlib import Path

import click
import orjson
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress

from immutablelog.verify import (
    LogClient,
    Report,
    default_state_path,
    prove_event,
    render_human,
    verify_bundle,
    verify_remote,
)
from immutablelog.verify.witnesses import WitnessPolicy

#: Runs shorter than this finish before a progress bar would be worth drawing.
PROGRESS_MIN_ENTRIES = 20_000


class _ProgressBar:
    """A rich progress bar on stderr, drawn only for long runs."""

    def __init__(self, console: Console, label: str) -> None:
        self._console = console
        self._label = label
        self._bar: RichProgress | None = None
        self._task: TaskID | None = None

    def start(self, total: int) -> None:
        if total < PROGRESS_MIN_ENTRIES:
            return
        self._bar = RichProgress(
            TextColumn(self._label),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("entries"),
            TimeRemainingColumn(),
            console=self._console,
            transient=True,
        )
        self._bar.start()
        self._task = self._bar.add_task(self._label, total=total)

    def advance(self, count: int) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.advance(self._task, count)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def _finish(report: Report, as_json: bool) -> None:
    err = Console(stderr=True)
    for warning in report.warnings:
        if "TRUST ON FIRST USE" in warning or "came from the bundle" in warning:
            err.print(f"[bold yellow]WARNING:[/bold yellow] {warning}", highlight=False)
    if as_json:
        click.echo(orjson.dumps(report.to_json()).decode())
    else:
        render_human(report, Console(highlight=False, soft_wrap=True))
    raise SystemExit(report.exit_code)


def _remote_options(func: click.decorators.FC) -> click.decorators.FC:
    func = click.option(
        "--retries",
        default=4,
        show_default=True,
        type=click.IntRange(min=0),
        help="Retries on transient network errors.",
    )(func)
    func = click.option(
        "--timeout",
        default=30.0,
        show_default=True,
        type=click.FloatRange(min=0, min_open=True),
        help="Seconds per request.",
    )(func)
    func = click.option(
        "--tenant", default=None, help="The tenant the log must be (checked against its origin)."
    )(func)
    func = click.option(
        "--state",
        "state_file",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="State file (last verified checkpoint); default: one per server and read key "
        "under $IMMUTABLELOG_STATE_DIR, else $XDG_STATE_HOME/immutablelog.",
    )(func)
    func = click.option(
        "--log-key",
        envvar="IMMUTABLELOG_LOG_KEY",
        show_envvar=True,
        default=None,
        help="The log's verifier key (name+id+key), as its operator published it. Pin it.",
    )(func)
    func = click.option(
        "--key",
        envvar="IMMUTABLELOG_READ_KEY",
        show_envvar=True,
        default=None,
        help="A read-scope API key.",
    )(func)
    func = click.option(
        "--url", envvar="IMMUTABLELOG_URL", show_envvar=True, default=None, help="Server URL."
    )(func)
    func = click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")(func)
    func = click.option(
        "--quorum",
        type=click.IntRange(min=1),
        default=None,
        help="How many of the --witness keys must have cosigned (default: all of them).",
    )(func)
    func = click.option(
        "--witness",
        "witness_keys",
        multiple=True,
        metavar="KEY",
        help="A witness's verifier key (C2SP tlog-cosignature). Repeatable. The checkpoint "
        "checked is then the newest cosigned one, and needs --quorum valid cosignatures.",
    )(func)
    return func


def _witness_policy(keys: tuple[str, ...], quorum: int | None) -> WitnessPolicy | None:
    if not keys:
        if quorum is not None:
            raise click.UsageError("--quorum needs --witness keys")
        return None
    try:
        return WitnessPolicy.parse(keys, quorum)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


@click.command()
@_remote_options
@click.option(
    "--bundle",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Verify an export bundle offline instead of a server.",
)
@click.option(
    "--full", is_flag=True, help="Re-download and re-check every entry, not only new ones."
)
@click.option(
    "--workers",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Processes that fetch and check pages (0: one per core for runs of 50,000+ "
    "entries, else one).",
)
def verify(
    as_json: bool,
    url: str | None,
    key: str | None,
    log_key: str | None,
    state_file: Path | None,
    tenant: str | None,
    timeout: float,
    retries: int,
    bundle: Path | None,
    full: bool,
    workers: int,
    witness_keys: tuple[str, ...],
    quorum: int | None,
) -> None:
    """Verify a log: signature, consistency with the last run, every new entry, the root.

    Exit 0 intact, 1 tampered (with each finding pinpointed), 2 could not check.
    """
    progress = _ProgressBar(Console(stderr=True), "verifying")
    witnesses = _witness_policy(witness_keys, quorum)
    if bundle is not None:
        report = verify_bundle(
            bundle,
            pinned_key=log_key,
            state_path=state_file,
            tenant=tenant,
            workers=workers or None,
            progress=progress,
            witnesses=witnesses,
        )
        _finish(report, as_json)
    if not url or not key:
        raise click.UsageError("give --url and --key (a read-scope API key), or --bundle FILE")
    state_path = state_file or default_state_path(url, key)
    with LogClient(url, key, timeout=timeout, retries=retries) as client:
        report = verify_remote(
            client,
            state_path=state_path,
            pinned_key=log_key,
            tenant=tenant,
            full=full,
            workers=workers or None,
            progress=progress,
            witnesses=witnesses,
        )
    _finish(report, as_json)


@click.command()
@click.argument("event")
@_remote_options
def prove(
    event: str,
    as_json: bool,
    url: str | None,
    key: str | None,
    log_key: str | None,
    state_file: Path | None,
    tenant: str | None,
    timeout: float,
    retries: int,
    witness_keys: tuple[str, ...],
    quorum: int | None,
) -> None:
    """Prove that EVENT (an event id, or a log index) is in the signed log, checking
    everything locally.

    Exit 0 proven, 1 tampered, 2 could not check.
    """
    if not url or not key:
        raise click.UsageError("give --url and --key (a read-scope API key)")
    witnesses = _witness_policy(witness_keys, quorum)
    index = int(event) if event.isascii() and event.isdigit() else None
    with LogClient(url, key, timeout=timeout, retries=retries) as client:
        report = prove_event(
            client,
            index,
            pinned_key=log_key,
            state_path=state_file,
            tenant=tenant,
            event_id=None if index is not None else event,
            witnesses=witnesses,
        )
    _finish(report, as_json)
