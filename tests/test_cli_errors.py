"""The command line: a wrong argument or config is one plain line and exit 2; every setting,
numbers too, can come from the TARGET_NOOJEE_* environment (`--config ENV`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from target_noojee.simulator import Simulator

from conftest import API_KEY, MAPPING, lead, record_msg, schema_msg, state_msg


def _target(
    args: list[str], env: dict[str, str] | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TARGET_NOOJEE_")}
    return subprocess.run(
        [sys.executable, "-m", "target_noojee", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--config", "{dir}/missing.json"], "cannot read --config"),
        (["--config", "{dir}/bad.json"], "is not JSON (line 1"),
        (["--config", "{dir}/list.json"], "must hold a JSON object"),
        (["--config", "{dir}/nan.json"], "NaN is not JSON"),
        (["--config", "{dir}/empty.json", "--input", "{dir}/missing.singer"], "--input"),
        (["--bogus"], "--bogus"),
    ],
)
def test_a_wrong_argument_is_one_line_and_exit_2(
    tmp_path: Path, args: list[str], says: str
) -> None:
    (tmp_path / "bad.json").write_text('{"api_key": "' + API_KEY + '", oops')
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "nan.json").write_text('{"max_reject_ratio": NaN}')
    (tmp_path / "empty.json").write_text("{}")
    proc = _target([a.format(dir=tmp_path) for a in args])
    assert proc.returncode == 2, proc.stderr
    assert says in proc.stderr
    assert "Traceback" not in proc.stderr and API_KEY not in proc.stderr
    assert proc.stdout == ""


def test_a_variable_of_the_wrong_type_is_one_line_and_exit_2() -> None:
    proc = _target(["--config", "ENV"], {"TARGET_NOOJEE_CAMPAIGN_ID": "forty-one"})
    assert proc.returncode == 2
    assert "TARGET_NOOJEE_CAMPAIGN_ID must hold an integer" in proc.stderr
    assert "Traceback" not in proc.stderr and "forty-one" not in proc.stderr


def test_number_settings_come_from_the_environment(sim: Simulator, tmp_path: Path) -> None:
    env = {
        "TARGET_NOOJEE_BASE_URL": sim.url,
        "TARGET_NOOJEE_API_KEY": API_KEY,
        "TARGET_NOOJEE_TEMPLATE_ID": "41",
        "TARGET_NOOJEE_CAMPAIGN_ID": "41",
        "TARGET_NOOJEE_ALLOCATION_ID": "38",
        "TARGET_NOOJEE_OPERATION": "upsert",
        "TARGET_NOOJEE_MAPPING": json.dumps(MAPPING),
        "TARGET_NOOJEE_REJECT_FILE": str(tmp_path / "rejects.jsonl"),
        "TARGET_NOOJEE_LEDGER_PATH": str(tmp_path / "ledger.sqlite"),
        "TARGET_NOOJEE_MAX_CLOSE_RATIO": "0.25",
        "TARGET_NOOJEE_MAX_REJECT_RATIO": "0.5",
        "TARGET_NOOJEE_REQUEST_TIMEOUT_S": "30",
        # Empty: unset, as the helper commands read them (not false, not a failed number).
        "TARGET_NOOJEE_CLOSE_FIELD": "",
        "TARGET_NOOJEE_TLS_VERIFY": "",
        "TARGET_NOOJEE_MAX_CONCURRENCY": "",
    }
    messages = [schema_msg(), record_msg(lead(1)), state_msg(1)]
    stdin = "".join(json.dumps(m) + "\n" for m in messages)
    proc = _target(["--config", "ENV"], env, stdin)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == state_msg(1)["value"]
    assert sim.lead(41, "L00001") is not None
    assert API_KEY not in proc.stderr + proc.stdout
