"""What the viewer shows when the log lies: an attacker with the database edits an entry or a
proof node, the server's key changes, or the whole history is rewritten and re-signed."""

from __future__ import annotations

import sqlite3

from playwright import sync_api as pw_sync
from playwright.sync_api import expect

from immutablelog.checkpoint import Signer
from tests.live import LiveServer
from tests.test_tamper_drills import alter_payload, rewrite_history, stored_id, tamper
from tests.verify.helpers import ingest
from tests.viewer.conftest import Watched, open_event, screenshot, sign_in, watch
from tests.witness.test_rotation import log_key_command, post_one


def signed_in(context: pw_sync.BrowserContext, server: LiveServer, events: int) -> Watched:
    """A log of ``events`` events, and a browser that signed in and pinned its key."""
    ingest(server, events)
    viewer = watch(context, server.url)
    sign_in(viewer, server)
    return viewer


def pin_in_browser(page: pw_sync.Page, key: str) -> None:
    """Make the browser's pinned log key ``key``, as if it had pinned it on an earlier visit."""
    page.evaluate(
        """(key) => {
          const slot = Object.keys(localStorage).find((k) => k.endsWith(":log-key"));
          const pin = { key, pinned_at: new Date().toISOString() };
          localStorage.setItem(slot, JSON.stringify(pin));
        }""",
        key,
    )


def test_a_tampered_entry_or_proof_turns_its_badge_red(
    context: pw_sync.BrowserContext, live_server: LiveServer
) -> None:
    viewer = signed_in(context, live_server, 40)
    altered, bad_proof, untouched = 20, 9, 30
    for index in (altered, bad_proof, untouched):
        assert "Verified in this browser" in open_event(
            viewer, live_server, stored_id(live_server, index)
        )

    def attack(conn: sqlite3.Connection, tenant_id: int) -> None:
        alter_payload(conn, tenant_id, altered)
        # The stored subtree of leaves 0..7: a sibling on the proof of every leaf in 8..15.
        conn.execute(
            "UPDATE nodes SET hash = zeroblob(32) WHERE tenant_id = ? AND level = 3 AND idx = 0",
            (tenant_id,),
        )

    tamper(live_server, attack)
    # The payload is in the entry's erasable part: its entry still proves, the part does not
    # match the entry's commitment.
    badge = open_event(viewer, live_server, stored_id(live_server, altered))
    assert badge.startswith("Not verified: the erasable part does not match"), badge
    expect(viewer.page.locator("#badge")).to_have_class("badge failed")
    # Shown is what the server says of it, under the red badge.
    expect(viewer.page.locator("#detail-payload")).to_contain_text("does not match")
    screenshot(viewer, "tampered")
    badge = open_event(viewer, live_server, stored_id(live_server, bad_proof))
    assert badge.startswith("Not verified: the entry is not in the signed tree"), badge
    assert "Verified in this browser" in open_event(
        viewer, live_server, stored_id(live_server, untouched)
    )
    viewer.assert_quiet()


def test_a_changed_log_key_is_a_loud_warning_not_a_silent_repin(
    context: pw_sync.BrowserContext, live_server: LiveServer
) -> None:
    viewer = signed_in(context, live_server, 5)
    page = viewer.page
    event_id = stored_id(live_server, 3)

    # A log host refuses to sign with any key but its log's, so stand in for "the server now
    # presents another key" from the browser's side: the key it pinned is another one.
    earlier = Signer.generate("immutablelog").verifier_key()
    pin_in_browser(page, earlier)

    badge = open_event(viewer, live_server, event_id)
    alarm = page.locator("#alarm")
    expect(alarm).to_be_visible()
    expect(alarm).to_contain_text("The log's key has changed")
    expect(alarm).to_contain_text(f"This browser pinned {earlier}")
    expect(alarm).to_contain_text(f"the server now presents {live_server.verifier_key}")
    assert "does not verify against the pinned log key" in badge, badge
    pinned = page.evaluate("JSON.stringify(localStorage)")
    assert earlier in pinned and live_server.verifier_key not in pinned
    screenshot(viewer, "key-changed")

    # Re-pinning is a deliberate act; after it, new checkpoints verify again.
    page.click("#alarm-repin")
    expect(alarm).to_be_hidden()
    assert live_server.verifier_key in page.evaluate("JSON.stringify(localStorage)")
    assert "Verified in this browser" in open_event(viewer, live_server, event_id)


def test_a_rewritten_history_turns_the_page_red(
    context: pw_sync.BrowserContext, live_server: LiveServer
) -> None:
    viewer = signed_in(context, live_server, 30)
    verified_size = live_server.checkpoint().size
    signer = Signer.from_private_key_string(
        (live_server.data_dir / "log-signing.key").read_text().strip()
    )
    tamper(live_server, lambda conn, tenant_id: rewrite_history(conn, tenant_id, signer))
    ingest(live_server, 2)

    page = viewer.page
    page.reload()
    alarm = page.locator("#alarm")
    expect(alarm).to_contain_text("The log's history was rewritten")
    expect(alarm).to_contain_text(f"a tree of {verified_size} entries")
    expect(alarm).to_contain_text(f"tree of {verified_size + 2} entries does not extend it")
    expect(page.locator("body")).to_have_class("compromised")
    screenshot(viewer, "history-rewritten")
    # Each forged event on its own still proves against the forged, validly signed tree:
    # only the memory of the earlier checkpoint tells, and the whole page says so.
    assert "Verified in this browser" in open_event(viewer, live_server, stored_id(live_server, 4))
    expect(alarm).to_be_visible()


def test_the_viewer_follows_a_key_rotation_and_refuses_an_unknown_key(
    context: pw_sync.BrowserContext, live_server: LiveServer
) -> None:
    """Pinned before a rotation; the log rotates and retires the old key; on the next visit
    the page checks the handover, re-pins and says so. A key no handover leads to is red."""
    viewer = signed_in(context, live_server, 5)
    page = viewer.page
    old = live_server.verifier_key
    event_id = stored_id(live_server, 3)
    assert "Verified in this browser" in open_event(viewer, live_server, event_id)
    expect(page.locator("#notice")).to_be_hidden()

    rotated = log_key_command(live_server, "rotate", "--transition", "1h")
    assert rotated.returncode == 0, rotated.stderr
    new = rotated.stdout.strip()
    assert post_one(live_server).is_success
    assert log_key_command(live_server, "finish").returncode == 0
    assert post_one(live_server).is_success  # signed by the new key alone

    page.reload()
    notice = page.locator("#notice")
    expect(notice).to_be_visible()
    expect(notice).to_contain_text("The log's key was rotated")
    expect(notice).to_contain_text(f"from {old} to {new}")
    expect(page.locator("#alarm")).to_be_hidden()
    expect(page.locator("#int-key")).to_have_text(new)
    expect(page.locator("#int-rotations")).to_contain_text(f"from {old}")
    pinned = page.evaluate("JSON.stringify(localStorage)")
    assert new in pinned
    screenshot(viewer, "key-rotated")
    badge = open_event(viewer, live_server, event_id)
    assert "Verified in this browser" in badge, badge
    expect(page.locator("#alarm")).to_be_hidden()
    viewer.assert_quiet()

    # A key the log never handed over to stays a loud warning, handovers or not.
    stranger = Signer.generate("immutablelog").verifier_key()
    pin_in_browser(page, stranger)
    badge = open_event(viewer, live_server, event_id)
    alarm = page.locator("#alarm")
    expect(alarm).to_be_visible()
    expect(alarm).to_contain_text("The log's key has changed")
    expect(alarm).to_contain_text(f"This browser pinned {stranger}")
    assert "does not verify against the pinned log key" in badge, badge
    assert new not in page.evaluate("JSON.stringify(localStorage)")
