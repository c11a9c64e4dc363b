"""``immutablelog tail``: show the newest events, then follow new ones as they arrive."""

from __future__ import annotations

import json
import time
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from immutablelog.cli.errors import reaching
from immutablelog.cli.remote import client, fail_on_error, server_options

_STYLE = {"success": "green", "info": "cyan", "warning": "yellow", "error": "bold red"}


def _show(console: Console, event: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(event, ensure_ascii=False))
        return
    # Names, services and actors are the senders' text: escaped, so "[/id]" is shown as sent.
    style = _STYLE.get(event.get("type", ""), "") or "none"
    actor = f" actor={event['actor']}" if event.get("actor") else ""
    console.print(
        f"[dim]{event['index']:>8} {event['received_at']}[/dim] "
        f"[{style}]{escape(event['type']):<7}[/{style}] {escape(event['event_name'])} "
        f"[dim]{escape(event['service'] + actor)}[/dim]",
        highlight=False,
    )


@click.command()
@server_options
@click.option(
    "-n",
    "--lines",
    default=10,
    show_default=True,
    type=click.IntRange(0, 1000),
    help="How many recent events to show first.",
)
@click.option(
    "--follow/--no-follow",
    "-f/-F",
    default=True,
    show_default=True,
    help="Keep printing new events as they arrive.",
)
@click.option(
    "--interval",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0.1, 60),
    help="Seconds between looks for new events.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON event per line.")
def tail(url: str, key: str, lines: int, follow: bool, interval: float, as_json: bool) -> None:
    """Print the latest events and keep printing new ones (Ctrl-C to stop)."""
    # One line per event even when piped (no wrapping at 80 columns), so grep sees it whole.
    console = Console(highlight=False, soft_wrap=True)
    try:
        with reaching(url), client(url, key) as http:
            response = http.get("/v1/events", params={"limit": max(lines, 1)})
            fail_on_error(response)
            recent = response.json()["events"]
            last = recent[0]["index"] if recent else -1
            for event in reversed(recent[:lines]):
                _show(console, event, as_json)
            while follow:
                time.sleep(interval)
                response = http.get(
                    "/v1/events", params={"order": "asc", "after": last, "limit": 1000}
                )
                fail_on_error(response)
                for event in response.json()["events"]:
                    _show(console, event, as_json)
                    last = event["index"]
    except KeyboardInterrupt:
        pass
