"""The independent verifier must not share code with what it verifies."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ("immutablelog.ledger", "immutablelog.server", "immutablelog.sdk", "starlette")


def loaded_modules(statement: str) -> list[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return list(json.loads(out))


def test_verify_package_never_imports_ledger_or_server() -> None:
    modules = loaded_modules(
        "import immutablelog.verify, immutablelog.verify.bundle, immutablelog.verify.checks"
    )
    assert "immutablelog.verify.verifier" in modules
    leaked = [m for m in modules if m.startswith(FORBIDDEN)]
    assert leaked == []


def test_worker_processes_import_only_the_checks() -> None:
    modules = loaded_modules("import immutablelog.verify.checks")
    assert not [m for m in modules if m.startswith(FORBIDDEN)]
