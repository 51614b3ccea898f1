"""Shared fixtures: the project's own simulator over loopback, and a runner for the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from target_noojee.simulator import Simulator

API_KEY = "test-key-5f2b8c0e9d1a"  # must never show up in any output
MAPPING = {
    "njExternalLeadId": "id",
    "Name": "name",
    "City": "address.city",
    "FirstPhone": "phone",
    "SecondPhone": "phone2",
    "njDisposition": "disposition",
    "njCallBackDate": "callback",
    "njPriority": "priority",
    "njContactHours": "hours",
}
SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": ["string", "null"]},
        "name": {"type": ["string", "null"]},
        "address": {
            "type": ["object", "null"],
            "properties": {"city": {"type": ["string", "null"]}},
        },
        "phone": {"type": ["string", "null"]},
        "phone2": {"type": ["string", "null"]},
        "disposition": {"type": ["string", "null"]},
        "callback": {"type": ["string", "null"]},
        "priority": {"type": ["integer", "null"]},
        "hours": {"type": ["string", "null"]},
    },
}


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """A fast simulator: 4 slots, no service time."""
    with Simulator(api_key=API_KEY, slots=4, service_ms=0) as simulator:
        yield simulator


def pbx_config(sim: Simulator, **overrides: Any) -> dict[str, Any]:
    """The PBX and lead settings for the default fixture (template 41, campaign 41, allocation
    38): enough for a preflight, no files."""
    config: dict[str, Any] = {
        "base_url": sim.url,
        "api_key": API_KEY,
        "template_id": 41,
        "campaign_id": 41,
        "allocation_id": 38,
        "operation": "upsert",
        "mapping": MAPPING,
    }
    config.update(overrides)
    return config


def base_config(sim: Simulator, tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    """A config for a run: `pbx_config` plus files under tmp_path and short retry bounds."""
    run_settings: dict[str, Any] = {
        "reject_file": str(tmp_path / "rejects.jsonl"),
        "ledger_path": str(tmp_path / "ledger.sqlite"),
        "max_retry_time_s": 20,
        "overload_pause_s": 0.2,
    }
    return pbx_config(sim, **{**run_settings, **overrides})


def schema_msg(stream: str = "contacts", key: list[str] | None = None) -> dict[str, Any]:
    return {"type": "SCHEMA", "stream": stream, "schema": SCHEMA, "key_properties": key or ["id"]}


def record_msg(record: dict[str, Any], stream: str = "contacts") -> dict[str, Any]:
    return {"type": "RECORD", "stream": stream, "record": record}


def state_msg(n: int) -> dict[str, Any]:
    return {"type": "STATE", "value": {"bookmarks": {"contacts": {"n": n}}}}


def lead(i: int, **fields: Any) -> dict[str, Any]:
    """A valid record for lead i with a unique mobile number."""
    record = {"id": f"L{i:05d}", "name": f"Lead {i}", "phone": f"04{i:08d}"}
    record.update(fields)
    return record


@dataclass
class Result:
    returncode: int
    states: list[Any]
    stdout: str
    stderr: str
    rejects: list[dict[str, Any]]


def write_lines(path: Path, messages: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(m) + "\n" for m in messages), encoding="utf-8")
    return path


def run_target(
    config: dict[str, Any],
    messages: list[dict[str, Any]] | str,
    tmp_path: Path,
    timeout: float = 120,
    env: dict[str, str] | None = None,
) -> Result:
    """Run the real CLI in a subprocess with messages on stdin."""
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config), encoding="utf-8")
    data = (
        messages if isinstance(messages, str) else "".join(json.dumps(m) + "\n" for m in messages)
    )
    proc = subprocess.run(
        [sys.executable, "-m", "target_noojee", "--config", str(config_path)],
        input=data.encode(),
        capture_output=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )
    stdout, stderr = proc.stdout.decode(), proc.stderr.decode()
    assert API_KEY not in stdout and API_KEY not in stderr
    reject_path = Path(config.get("reject_file", tmp_path / "rejects.jsonl"))
    rejects = []
    if reject_path.exists():
        text = reject_path.read_text(encoding="utf-8")
        assert API_KEY not in text
        rejects = [json.loads(line) for line in text.splitlines()]
    return Result(
        proc.returncode, [json.loads(s) for s in stdout.splitlines()], stdout, stderr, rejects
    )
