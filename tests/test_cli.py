"""The command line as a newcomer meets it: help, listings and missing extras."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from immutablelog.cli.commands import cli
from tests.live import free_port, serve_command


def wait_healthy(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise AssertionError(f"no server at {url}")


def run_cli(
    *args: str, block: str | None = None, columns: int = 80
) -> subprocess.CompletedProcess[str]:
    """``immutablelog ARGS`` in a child process; ``block`` makes one module unimportable."""
    prelude = f"import sys; sys.modules[{block!r}] = None; " if block else ""
    return subprocess.run(
        [sys.executable, "-c", prelude + "from immutablelog.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": str(columns)},
    )


@pytest.mark.parametrize(
    ("command", "variables"),
    [
        (
            ["serve"],
            ["IMMUTABLELOG_DATA_DIR", "IMMUTABLELOG_DATABASE_URL", "IMMUTABLELOG_SIGNING_KEY_FILE"],
        ),
        (["keys", "create"], ["IMMUTABLELOG_DATA_DIR", "IMMUTABLELOG_DATABASE_URL"]),
        (["verify"], ["IMMUTABLELOG_URL", "IMMUTABLELOG_READ_KEY", "IMMUTABLELOG_LOG_KEY"]),
        (["export"], ["IMMUTABLELOG_URL", "IMMUTABLELOG_READ_KEY"]),
        (["tail"], ["IMMUTABLELOG_URL", "IMMUTABLELOG_READ_KEY"]),
    ],
)
def test_help_names_the_environment_variables_options_read(
    command: list[str], variables: list[str]
) -> None:
    result = CliRunner().invoke(cli, [*command, "--help"], terminal_width=200)
    assert result.exit_code == 0
    for variable in variables:
        assert f"env var: {variable}" in result.output or f"env var: {variable};" in result.output


@pytest.mark.parametrize(
    ("command", "option", "value"),
    [
        ("verify", "--timeout", "-1"),
        ("verify", "--timeout", "0"),
        ("verify", "--retries", "-3"),
        ("verify", "--workers", "-2"),
        ("prove", "--timeout", "-1"),
        ("prove", "--retries", "-3"),
    ],
)
def test_a_number_out_of_range_is_a_usage_error_not_a_traceback(
    command: str, option: str, value: str
) -> None:
    # Refused before any request: the URL answers nothing, and no traceback escapes.
    args = [command, *(["1"] if command == "prove" else [])]
    result = run_cli(*args, "--url", "http://127.0.0.1:9", "--key", "k", option, value)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert f"Invalid value for '{option}'" in result.stderr


def test_keys_list_never_cuts_the_prefix_revoke_needs(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    tenant = "a-tenant-with-a-rather-long-name-for-a-narrow-terminal"
    assert run_cli("tenants", "create", tenant, "--data-dir", data).returncode == 0
    created = run_cli(
        "keys",
        "create",
        "--tenant",
        tenant,
        "--scope",
        "ingest,read,admin",
        "--label",
        "a label long enough to push the table past eighty columns",
        "--data-dir",
        data,
    )
    secret = created.stdout.strip()
    listed = run_cli("keys", "list", "--data-dir", data, columns=40)
    assert listed.returncode == 0, listed.stderr
    (row,) = [line for line in listed.stdout.splitlines() if line.startswith("iml_")]
    prefix = row.split()[0]
    assert secret.startswith(prefix) and len(prefix) > len("iml_live_")
    assert tenant in row and "…" not in listed.stdout
    revoked = run_cli("keys", "revoke", prefix, "--data-dir", data)
    assert revoked.returncode == 0, revoked.stderr


def test_a_file_that_cannot_be_written_is_one_line_naming_it(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    assert run_cli("tenants", "create", "acme", "--data-dir", data).returncode == 0
    missing = tmp_path / "no-such-dir"
    for args in (
        ["backup", "--data-dir", data, str(missing / "ledger-backup.db")],
        ["erasures", "export", "--tenant", "acme", "--data-dir", data, str(missing / "e.json")],
    ):
        result = run_cli(*args)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        assert result.stderr.strip() == f"Error: cannot write {args[-1]}: No such file or directory"


@pytest.mark.parametrize(
    "args",
    [
        ["erase", "--actor", "42", "--reason", "r"],
        ["erasures", "export", "erasures.json"],
    ],
)
def test_an_unreachable_server_is_one_line_naming_it(args: list[str], tmp_path: Path) -> None:
    result = run_cli(*args, "--url", "http://127.0.0.1:9", "--key", "k")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("Error: cannot reach http://127.0.0.1:9: ")
    assert len(result.stderr.strip().splitlines()) == 1


def test_tenants_list_never_cuts_a_name(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    tenant = "acme-corporation-european-subsidiary-billing-department-eu-west"
    assert run_cli("tenants", "create", tenant, "--data-dir", data).returncode == 0
    listed = run_cli("tenants", "list", "--data-dir", data, columns=40)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0].split() == ["TENANT", "ENTRIES", "CREATED"]
    (row,) = [line for line in listed.stdout.splitlines() if line.startswith("acme")]
    name, size, created = row.split()
    assert (name, size) == (tenant, "1") and created.endswith("Z")
    assert "…" not in listed.stdout


def test_a_missing_postgres_extra_is_one_line_naming_it(tmp_path: Path) -> None:
    result = run_cli(
        "keys",
        "list",
        "--database-url",
        "postgresql://postgres@127.0.0.1:5432/postgres",
        block="psycopg",
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "Error: PostgreSQL support needs the 'postgres' extra, which is not installed "
        "(no module 'psycopg'): pip install 'immutablelog[postgres]'"
    ]


def test_a_missing_server_extra_is_one_line_naming_it(tmp_path: Path) -> None:
    result = run_cli("serve", "--data-dir", str(tmp_path / "data"), "--port", "1", block="uvicorn")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "pip install 'immutablelog[server]'" in result.stderr.strip().splitlines()[-1]


def test_serve_on_a_taken_port_fails_before_creating_or_showing_keys(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(*serve_command(tmp_path / "data", port, "--log-format", "text")[3:])
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"Error: port {port} on 127.0.0.1 is already in use; pick another with --port"
    )
    assert "key" not in result.stdout and "Serving" not in result.stdout + result.stderr
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    ("more", "complaint"),
    [
        (["--witness", "http://127.0.0.1:9", "garbage"], "Invalid value for --witness"),
        (["--witness-quorum", "2"], "Invalid value for --witness-quorum"),
    ],
)
def test_serve_with_a_bad_witness_option_fails_before_creating_or_showing_keys(
    tmp_path: Path, more: list[str], complaint: str
) -> None:
    command = serve_command(tmp_path / "data", free_port(), "--log-format", "text", *more)
    result = run_cli(*command[3:])
    assert result.returncode == 2, result.stdout + result.stderr
    assert complaint in result.stderr and "Traceback" not in result.stderr
    assert "key" not in result.stdout and "Serving" not in result.stdout + result.stderr
    assert not (tmp_path / "data").exists()


def test_with_json_logs_every_line_the_server_writes_is_json(tmp_path: Path) -> None:
    port = free_port()
    server = subprocess.Popen(
        serve_command(tmp_path / "data", port, "--log-format", "json"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_healthy(f"http://127.0.0.1:{port}")
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
    lines = output.splitlines()
    records = [json.loads(line) for line in lines]  # every line parses
    shown_once = [r for r in records if r["message"].startswith("created tenant")]
    assert shown_once and shown_once[0]["ingest_key"].startswith("iml_live_")
    assert any(r["logger"].startswith("uvicorn") for r in records)


def test_json_logging_covers_library_loggers() -> None:
    script = (
        "import logging, logging.config, warnings\n"
        "from immutablelog.server.logs import logging_config\n"
        "logging.config.dictConfig(logging_config('info', 'json'))\n"
        "logging.captureWarnings(True)\n"
        "logging.getLogger('psycopg.pool').warning('error connecting in %r', 'pool-1')\n"
        "warnings.warn('a library warning')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
    )
    records = [json.loads(line) for line in result.stderr.splitlines()]
    assert [r["logger"] for r in records] == ["psycopg.pool", "py.warnings"]
    assert records[0]["message"] == "error connecting in 'pool-1'"


def test_a_config_file_sets_options_that_flags_and_environment_override(tmp_path: Path) -> None:
    config = tmp_path / "immutablelog.toml"
    config.write_text(
        f'[tenants.create]\ndata-dir = "{tmp_path / "from-file"}"\n'
        f'[keys.list]\njson = true\ndata_dir = "{tmp_path / "from-file"}"\n'
    )
    assert run_cli("--config", str(config), "tenants", "create", "shop").returncode == 0
    assert (tmp_path / "from-file" / "ledger.db").exists()
    listed = run_cli("--config", str(config), "keys", "list")
    assert listed.returncode == 0 and listed.stdout == ""  # --json from the file, no keys yet
    by_flag = run_cli("--config", str(config), "tenants", "create", "x", "--data-dir",
                      str(tmp_path / "from-flag"))  # fmt: skip
    assert by_flag.returncode == 0 and (tmp_path / "from-flag" / "ledger.db").exists()
    by_env = subprocess.run(
        [sys.executable, "-m", "immutablelog", "tenants", "create", "y"],
        env={**os.environ, "IMMUTABLELOG_CONFIG": str(config),
             "IMMUTABLELOG_DATA_DIR": str(tmp_path / "from-env")},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert by_env.returncode == 0 and (tmp_path / "from-env" / "ledger.db").exists()


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("[serve]\nprot = 1\n", "no command or option 'serve.prot'"),
        ("[sevre]\nport = 1\n", "no command or option 'sevre'"),
        ("[serve\nport = 1\n", "is not valid TOML"),
    ],
)
def test_a_config_file_with_a_typo_is_refused(tmp_path: Path, text: str, complaint: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text)
    result = run_cli("--config", str(config), "serve", "--port", "1")
    assert result.returncode == 2
    assert complaint in result.stderr and "Traceback" not in result.stderr


def test_with_json_logs_a_failed_start_is_a_json_line_too(tmp_path: Path) -> None:
    # psycopg and its pool fail here, on a database that does not exist.
    result = run_cli(
        "serve", "--log-format", "json", "--port", str(free_port()), "--database-url",
        "postgresql://postgres@127.0.0.1:5432/immutablelog_no_such_database",
    )  # fmt: skip
    assert result.returncode == 1
    records = [json.loads(line) for line in (result.stdout + result.stderr).splitlines()]
    assert [r["level"] for r in records] == ["error"]
    assert records[0]["message"].startswith("cannot open the ledger")
