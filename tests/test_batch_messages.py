"""BATCH messages: their records go the way of RECORD messages; an unreadable file stops the run
before any STATE after it."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from target_noojee.simulator import Simulator

from conftest import base_config, lead, run_target, schema_msg, state_msg


def _batch(files: list[Path], compression: str | None = None) -> dict:
    return {
        "type": "BATCH",
        "stream": "contacts",
        "encoding": {"format": "jsonl", "compression": compression},
        "manifest": [f.as_uri() for f in files],
    }


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_batch_records_are_delivered_and_state_waits_for_them(
    sim: Simulator, tmp_path: Path, compression: str | None
) -> None:
    lines = [json.dumps(lead(i)) + "\n" for i in range(1, 6)]
    lines.insert(2, json.dumps(lead(6, phone="not a phone")) + "\n")
    first, second = tmp_path / "part-1.jsonl", tmp_path / "part-2.jsonl"
    for path, chunk in ((first, lines[:3]), (second, lines[3:])):
        data = "".join(chunk).encode()
        path.write_bytes(gzip.compress(data) if compression else data)
    messages = [schema_msg(), _batch([first, second], compression), state_msg(1)]
    result = run_target(base_config(sim, tmp_path), messages, tmp_path)
    assert result.returncode == 0, result.stderr
    assert {sim.lead(41, f"L{i:05d}") is not None for i in range(1, 6)} == {True}
    assert [(r["key"], r["code"]) for r in result.rejects] == [("L00006", "local")]
    assert result.states == [state_msg(1)["value"]]


def test_an_unreadable_batch_file_stops_the_run_before_the_state_after_it(
    sim: Simulator, tmp_path: Path
) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps(lead(1)) + "\n")
    messages = [
        schema_msg(),
        _batch([good]),
        state_msg(1),
        _batch([tmp_path / "missing.jsonl"]),
        state_msg(2),
    ]
    result = run_target(base_config(sim, tmp_path), messages, tmp_path)
    assert result.returncode == 3, result.stderr
    assert "missing.jsonl" in result.stderr and "Traceback" not in result.stderr
    # Bad input stops the run at once (README, exit 3): STATE 1 went out only if lead 1 landed.
    assert state_msg(2)["value"] not in result.states
    assert (sim.lead(41, "L00001") is not None) == (result.states == [state_msg(1)["value"]])


def test_a_damaged_gzip_batch_file_stops_the_run_naming_it(sim: Simulator, tmp_path: Path) -> None:
    damaged = tmp_path / "part.jsonl.gz"
    damaged.write_bytes(gzip.compress(json.dumps(lead(1)).encode() * 50)[:40] + b"\x00" * 40)
    messages = [schema_msg(), _batch([damaged], "gzip"), state_msg(1)]
    result = run_target(base_config(sim, tmp_path), messages, tmp_path)
    assert result.returncode == 3, result.stderr
    assert "part.jsonl.gz" in result.stderr and "Traceback" not in result.stderr
    assert result.states == []
