"""The independent verifier: checks a log using nothing from the server but bytes and proofs.

It imports the Merkle core, the checkpoint format, the entry format and an HTTP client —
never ``immutablelog.ledger`` or ``immutablelog.server`` — so a bug there cannot hide itself
here (tests/verify/test_isolation.py holds it to that).

- :func:`verify_remote` — verify a live log over HTTP, continuing from a saved state.
- :func:`verify_bundle` — verify an export bundle offline.
- :func:`prove_event` — prove one event's inclusion.

Each returns a :class:`Report`: ``status`` intact / tampered / error, exit code 0 / 1 / 2.
"""

from immutablelog.verify import _requires  # noqa: F401  (first: names a missing extra)
from immutablelog.verify.bundle import BUNDLE_FORMAT, verify_bundle
from immutablelog.verify.client import LogClient
from immutablelog.verify.report import (
    CouldNotCheck,
    Finding,
    FindingKind,
    Report,
    Status,
    render_human,
)
from immutablelog.verify.state import (
    STATE_FORMAT,
    VerifierState,
    default_state_path,
    load_state,
    save_state,
)
from immutablelog.verify.verifier import prove_event, verify_remote

__all__ = [
    "BUNDLE_FORMAT",
    "STATE_FORMAT",
    "CouldNotCheck",
    "Finding",
    "FindingKind",
    "LogClient",
    "Report",
    "Status",
    "VerifierState",
    "default_state_path",
    "load_state",
    "prove_event",
    "render_human",
    "save_state",
    "verify_bundle",
    "verify_remote",
]
