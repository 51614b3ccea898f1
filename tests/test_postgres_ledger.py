"""The ledger and the rejects in a real PostgreSQL (started here, on 127.0.0.1): fresh working
directories, concurrent targets, the same-stream lock, kill -9, rejects read back."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_kill import feed_and_collect, start_target

from target_noojee.simulator import Simulator

from conftest import API_KEY, base_config, lead, record_msg, run_target, schema_msg, state_msg

ROOT = Path(__file__).resolve().parent.parent


def _postgres_module() -> Any:
    """e2e/postgres.py: the throwaway server the end-to-end tests use too."""
    spec = importlib.util.spec_from_file_location(
        "noojee_e2e_postgres", ROOT / "e2e" / "postgres.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    postgres = _postgres_module()
    try:
        postgres.find_bin_dir()
    except postgres.PostgresError as exc:
        if sys.version_info >= (3, 13):
            pytest.skip(f"no PostgreSQL server binaries for Python 3.13 here: {exc}")
        raise
    with postgres.postgres_server(dbname="ledger", user="noojee") as pg:
        yield pg.url


def pg_config(sim: Simulator, tmp_path: Path, url: str, **overrides: Any) -> dict[str, Any]:
    config = base_config(sim, tmp_path, ledger_url=url, fallback_disposition="Call Back")
    config.pop("ledger_path")
    config.update(overrides)
    return config


def leads(n: int, start: int = 0, stream: str = "contacts") -> list[dict[str, Any]]:
    out = [schema_msg(stream)]
    for i in range(start, start + n):
        out.append(record_msg(lead(i), stream))
    return [*out, state_msg(n)]


def test_a_fresh_working_directory_keeps_what_the_ledger_knows(
    sim: Simulator, tmp_path: Path, pg_url: str
) -> None:
    first, second, third = (tmp_path / d for d in ("one", "two", "three"))
    for d in (first, second, third):
        d.mkdir()
    assert run_target(pg_config(sim, first, pg_url), leads(30), first).returncode == 0
    sim.reset_stats()
    again = run_target(pg_config(sim, second, pg_url), leads(30), second)
    assert again.returncode == 0, again.stderr
    assert sim.lead_calls == 0  # nothing on this disk, everything in PostgreSQL
    changed = leads(30)
    changed[5] = record_msg(lead(4, name="Changed", disposition="Sale"))  # one update, no 107
    assert run_target(pg_config(sim, third, pg_url), changed, third).returncode == 0
    assert sim.lead_calls == 1
    assert not list(tmp_path.rglob("*.sqlite"))
    assert "password" not in json.dumps(os.listdir(third))


def test_two_targets_at_once_on_one_ledger_lose_no_update(tmp_path: Path, pg_url: str) -> None:
    with Simulator(api_key=API_KEY, slots=4, service_ms=20) as sim:
        procs = []
        for n, stream in enumerate(("north", "south")):
            work = tmp_path / stream
            work.mkdir()
            config = pg_config(
                sim, work, pg_url, mapping={"njExternalLeadId": "id", "FirstPhone": "phone"}
            )
            proc = start_target(config, work)
            procs.append((proc, feed_and_collect(proc, leads(60, 1000 * (n + 1), stream))))
        for proc, states in procs:
            assert proc.wait(timeout=120) == 0, proc.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
            states.finish()
        assert len(sim.leads(campaign_id=41)) == 120
        sim.reset_stats()
        for stream in ("north", "south"):
            work = tmp_path / stream
            config = pg_config(
                sim, work, pg_url, mapping={"njExternalLeadId": "id", "FirstPhone": "phone"}
            )
            start = 1000 if stream == "north" else 2000
            assert run_target(config, leads(60, start, stream), work).returncode == 0
        assert sim.lead_calls == 0  # every update of both runs is in the ledger


def test_a_second_run_of_the_same_stream_waits_then_stops(tmp_path: Path, pg_url: str) -> None:
    with Simulator(api_key=API_KEY, slots=1, service_ms=150) as sim:
        first_dir, second_dir = tmp_path / "a", tmp_path / "b"
        first_dir.mkdir()
        second_dir.mkdir()
        first = start_target(pg_config(sim, first_dir, pg_url, concurrency=1), first_dir)
        states = feed_and_collect(first, leads(20, 5000))
        deadline = time.monotonic() + 30
        while sim.lead_calls < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        started = time.monotonic()
        second = run_target(
            pg_config(sim, second_dir, pg_url, lock_wait_s=1), leads(20, 5000), second_dir
        )
        assert second.returncode == 1
        assert "another target-noojee run is sending stream 'contacts'" in second.stderr
        assert "lock_wait_s" in second.stderr
        assert time.monotonic() - started < 20
        assert first.wait(timeout=60) == 0
        states.finish()
        assert len(sim.leads(campaign_id=41)) == 20


def test_kill_9_then_resume_loses_nothing(tmp_path: Path, pg_url: str) -> None:
    with Simulator(api_key=API_KEY, slots=3, service_ms=15) as sim:
        messages = [schema_msg()]
        for i in range(200):
            messages.append(record_msg(lead(7000 + i)))
            if i % 10 == 9:
                messages.append({"type": "STATE", "value": {"next": i + 1}})
        config = pg_config(sim, tmp_path, pg_url)
        proc = start_target(config, tmp_path)
        states = feed_and_collect(proc, messages)
        deadline = time.monotonic() + 30
        while len(states) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        states.finish()
        resume = json.loads(states[-1])["next"] if states else 0
        held = {x["external_id"] for x in sim.leads(campaign_id=41)}
        assert all(f"L{7000 + i:05d}" in held for i in range(resume))
        records = [m for m in messages[1:] if m.get("type") == "RECORD"]
        rest = [schema_msg(), *records[resume:]]
        result = run_target(config, rest, tmp_path)
        assert result.returncode == 0, result.stderr
        held = {x["external_id"]: x for x in sim.leads(campaign_id=41)}
        assert all(f"L{7000 + i:05d}" in held for i in range(200))
        assert max(x["writes"] for x in held.values() if x["external_id"].startswith("L07")) <= 3


def test_rejects_are_kept_in_the_database_and_listed_from_it(
    sim: Simulator, tmp_path: Path, pg_url: str
) -> None:
    sim.add_dnc("0400009001")
    config = pg_config(sim, tmp_path, pg_url)
    result = run_target(config, leads(3, 9000), tmp_path)
    assert [(r["key"], r["code"]) for r in result.rejects] == [("L09001", 104)]
    (tmp_path / "rejects.jsonl").unlink()  # the file is only a view: the database keeps them
    (tmp_path / "config.json").write_text(json.dumps(config))
    listed = subprocess.run(
        [
            sys.executable,
            "-m",
            "target_noojee.rejects_command",
            "list",
            "--config",
            str(tmp_path / "config.json"),
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    assert "L09001" in json.loads(listed.stdout)["104"]
    assert "password" not in listed.stdout + listed.stderr
