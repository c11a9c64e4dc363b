"""Every code block in README.md and docs/*.md runs as written (like doctest).

Shell blocks run in bash, in order, one document at a time, against a real server started
with ``immutablelog serve`` on a fresh data directory, as a reader would: the keys it prints
are ``$INGEST_KEY`` and ``$READ_KEY``, variables set by one block are seen by the next, and
``curl`` fails on an HTTP error (``--fail-with-body``), so a 401 cannot pass for an answer. The
only change to the text is the ports: ``:8080`` becomes the test server's, and those of the
further servers the README starts (``OTHER_PORTS``) free ones. Python blocks of a
document run in order in one namespace, with ``IMTBL_URL``/``IMTBL_API_KEY`` naming that
server. JSON, YAML and INI blocks must parse, TOML blocks be valid config files. See
``blocks.py`` for the directives.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from immutablelog.cli.commands import cli
from immutablelog.cli.config import config_from_text
from tests.docs.blocks import Block, code_blocks
from tests.live import free_port, interrupt_once_shown, serve_command

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL = {"sh", "bash", "console", "shell"}
DATA = {"json", "toml", "yaml", "ini"}
TEXT = {"", "text", "dockerfile", "systemd"}
ALL_BLOCKS = [block for doc in DOCS for block in code_blocks(doc)]
EXPECT_RETRY_SECONDS = 10.0


def _ids(blocks: list[Block]) -> list[str]:
    return [block.where for block in blocks]


def test_every_block_is_run_or_parsed_or_plain_text() -> None:
    unknown = [b.where + f" ({b.lang})" for b in ALL_BLOCKS if b.lang not in SHELL | DATA | TEXT
               | {"python"}]  # fmt: skip
    assert unknown == []
    skipped = [b for b in ALL_BLOCKS if "skip" in b.directives]
    assert all(b.directives["skip"] for b in skipped), "a skip must say why"
    assert len(skipped) <= 4, [b.where for b in skipped]


DATA_BLOCKS = [b for b in ALL_BLOCKS if b.lang in DATA]


@pytest.mark.parametrize("block", DATA_BLOCKS, ids=_ids(DATA_BLOCKS))
def test_data_block_parses(block: Block) -> None:
    if block.lang == "json":
        json.loads(block.code)
    elif block.lang == "toml":  # a config file: every setting must name a real option
        config_from_text(cli, block.code, block.where)
    elif block.lang == "yaml":
        assert yaml.safe_load(block.code) is not None
    else:
        configparser.ConfigParser(strict=False, interpolation=None).read_string(block.code)


class DocServer:
    """``immutablelog serve`` on a fresh data directory, with the keys it printed."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            # The default data directory, ./immutablelog-data, in the reader's directory.
            serve_command(workdir / "immutablelog-data", self.port, "--log-format", "text"),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )  # fmt: skip
        keys: dict[str, str] = {}
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("Log verifier key:"):
                break
            scope, found, secret = line.strip().partition(" key:")
            if found:
                keys[scope] = secret.strip()
        self.ingest_key, self.read_key = keys["ingest"], keys["read"]
        _wait_healthy(self.url)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(30)


def _wait_healthy(url: str) -> None:
    import httpx

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise AssertionError(f"no server at {url}")


@pytest.fixture
def doc_server(tmp_path: Path) -> Iterator[DocServer]:
    workdir = tmp_path / "work"
    workdir.mkdir()
    server = DocServer(workdir)
    try:
        yield server
    finally:
        server.stop()


#: Ports of the further servers the README starts (a witness, a witnessed server): each run
#: maps them to free ones, so that runs in parallel never collide on a fixed port.
OTHER_PORTS = (8081, 8090)


def _on_test_port(code: str, port: int, others: dict[int, int] | None = None) -> str:
    code = re.sub(r"\b(localhost|127\.0\.0\.1):8080\b", rf"\g<1>:{port}", code)
    for fixed, free in (others or {}).items():
        code = re.sub(rf"(?<![0-9]){fixed}(?![0-9])", str(free), code)
    return code


def _environment(server: DocServer, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMMUTABLELOG_", "IMTBL_"))}
    return {
        **env,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
        "HOME": str(home),
        "XDG_STATE_HOME": str(home / "state"),
        "INGEST_KEY": server.ingest_key,
        "READ_KEY": server.read_key,
        "IMTBL_URL": server.url,
        "IMTBL_API_KEY": server.ingest_key,
        "COLUMNS": "200",
    }


class ShellSession:
    """Runs blocks one after another in bash, carrying variables from block to block."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.cwd = cwd
        self.env = env
        self.saved = cwd / ".docs-test-variables"
        self.saved.write_text("")

    def script(self, code: str) -> str:
        return (
            "set -euo pipefail\nset -a\n"
            f"source {self.saved}\n"
            'curl() { command curl --fail-with-body "$@"; }\n'
            f"{code}\n"
            f"declare -px > {self.saved}.next\n"
        )

    def run(self, block: Block, code: str) -> str:
        expect = block.directives.get("expect")
        deadline = time.monotonic() + EXPECT_RETRY_SECONDS
        while True:
            result = subprocess.run(
                ["bash", "-c", self.script(code)],
                cwd=self.cwd,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            output = result.stdout + result.stderr
            assert result.returncode == 0, f"{block.where} failed:\n{code}\n{output}"
            if expect is None or expect in output or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert expect is None or expect in output, f"{block.where}: no {expect!r} in:\n{output}"
        Path(f"{self.saved}.next").replace(self.saved)
        return output

    def run_until_interrupted(self, block: Block, code: str) -> str:
        """Start it, wait for its first output (and the expected text), check that it keeps
        running, then stop it as a reader would, with Ctrl-C."""
        process = subprocess.Popen(
            ["bash", "-c", self.script("exec " + code.strip())],
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        expect = block.directives.get("expect", "")
        code, output = interrupt_once_shown(process, expect)
        assert code == 0, f"{block.where}:\n{output}"
        assert expect in output, f"{block.where}: no {expect!r} in:\n{output}"
        return output


def _blocks_of(doc: Path, langs: set[str]) -> list[Block]:
    return [b for b in code_blocks(doc) if b.lang in langs and "skip" not in b.directives]


DOCS_WITH_SHELL = [doc for doc in DOCS if _blocks_of(doc, SHELL)]
DOCS_WITH_PYTHON = [doc for doc in DOCS if _blocks_of(doc, {"python"})]


@pytest.mark.parametrize("doc", DOCS_WITH_SHELL, ids=[d.name for d in DOCS_WITH_SHELL])
def test_shell_blocks_run_against_a_real_server(
    doc: Path, doc_server: DocServer, tmp_path: Path
) -> None:
    session = ShellSession(doc_server.workdir, _environment(doc_server, tmp_path / "home"))
    others = {fixed: free_port() for fixed in OTHER_PORTS}
    for block in _blocks_of(doc, SHELL):
        code = _on_test_port(block.code, doc_server.port, others)
        if "until-interrupted" in block.directives:
            session.run_until_interrupted(block, code)
        else:
            session.run(block, code)


@pytest.mark.parametrize("doc", DOCS_WITH_PYTHON, ids=[d.name for d in DOCS_WITH_PYTHON])
def test_python_blocks_run(
    doc: Path, doc_server: DocServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name, value in _environment(doc_server, tmp_path / "home").items():
        monkeypatch.setenv(name, value)
    namespace: dict[str, Any] = {"__name__": "docs_example"}
    try:
        for block in _blocks_of(doc, {"python"}):
            code = compile(_on_test_port(block.code, doc_server.port), block.where, "exec")
            exec(code, namespace)
    finally:
        for value in namespace.values():
            if type(value).__module__.startswith("immutablelog.") and hasattr(value, "close"):
                value.close(timeout=5)
