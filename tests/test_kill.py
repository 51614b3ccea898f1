"""Killed at any moment, the last STATE covers settled records only; resuming loses none."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from target_noojee.simulator import Simulator

from conftest import API_KEY, base_config, lead, record_msg, schema_msg

N = 300


def messages(start: int = 0, n: int = N) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [schema_msg()]
    for i in range(start, n):
        out.append(record_msg(lead(i)))
        if i % 10 == 9:
            out.append({"type": "STATE", "value": {"next": i + 1}})
    if start >= n:
        out.append({"type": "STATE", "value": {"next": n}})  # a resumed tap restates its bookmark
    return out


def start_target(config: dict[str, Any], tmp_path: Path) -> subprocess.Popen[bytes]:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return subprocess.Popen(
        [sys.executable, "-m", "target_noojee", "--config", str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


class Collected(list[str]):
    """STATE lines as they arrive; `finish()` waits for the reader to reach end of output."""

    reader: threading.Thread

    def finish(self) -> Collected:
        self.reader.join(timeout=30)
        return self


def feed_and_collect(proc: subprocess.Popen[bytes], lines: list[dict[str, Any]]) -> Collected:
    """Write input in the background; collect STATE lines as they come."""
    assert proc.stdin is not None and proc.stdout is not None

    def feed() -> None:
        try:
            for m in lines:
                proc.stdin.write((json.dumps(m) + "\n").encode())  # type: ignore[union-attr]
            proc.stdin.close()  # type: ignore[union-attr]
        except (BrokenPipeError, ValueError):
            pass

    threading.Thread(target=feed, daemon=True).start()
    states = Collected()
    states.reader = threading.Thread(
        target=lambda: states.extend(line.decode() for line in proc.stdout),  # type: ignore[union-attr]
        daemon=True,
    )
    states.reader.start()
    return states


def assert_state_covers_only_settled(sim: Simulator, states: list[str]) -> int:
    """Every record before the last STATE is in the simulator; returns where to resume."""
    if not states:
        return 0
    resume = json.loads(states[-1])["next"]
    held = {x["external_id"] for x in sim.leads(campaign_id=41)}
    missing = [f"L{i:05d}" for i in range(resume) if f"L{i:05d}" not in held]
    assert missing == [], f"STATE next={resume} but {len(missing)} earlier leads missing"
    return int(resume)


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_kill_mid_run_then_resume(tmp_path: Path, how: str) -> None:
    with Simulator(api_key=API_KEY, slots=3, service_ms=15) as sim:
        report = tmp_path / "report.json"
        config = base_config(
            sim, tmp_path, fallback_disposition="Call Back", report_file=str(report)
        )
        proc = start_target(config, tmp_path)
        states = feed_and_collect(proc, messages())
        deadline = time.monotonic() + 30
        while len(states) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert states, "no STATE came out progressively"
        assert len(sim.leads(campaign_id=41)) < N, "run finished before the kill"
        os.kill(proc.pid, signal.SIGKILL if how == "SIGKILL" else signal.SIGTERM)
        rc = proc.wait(timeout=60)
        states.finish()
        if how == "SIGTERM":
            assert rc != 0  # input was cut off with records in flight or unread
            assert b"Traceback" not in proc.stderr.read()  # type: ignore[union-attr]
            assert "stopped by signal 15" in json.loads(report.read_text())["error"]
        resume = assert_state_covers_only_settled(sim, states)
        proc = start_target(config, tmp_path)
        states = feed_and_collect(proc, messages(resume))
        assert proc.wait(timeout=120) == 0
        assert json.loads(states.finish()[-1]) == {"next": N}
        held = {x["external_id"]: x for x in sim.leads(campaign_id=41)}
        assert sorted(held) == [f"L{i:05d}" for i in range(N)]
        assert not (tmp_path / "rejects.jsonl").exists()


def test_sigkill_at_random_moments(tmp_path: Path) -> None:
    """Kill -9 at 20 random moments of one input; every STATE seen covers settled leads."""
    import random

    rng = random.Random(7)
    n, kills = 1200, 20
    with Simulator(api_key=API_KEY, slots=4, service_ms=20) as sim:
        config = base_config(sim, tmp_path, fallback_disposition="Call Back")
        resume = 0
        for _ in range(kills):
            proc = start_target(config, tmp_path)
            states = feed_and_collect(proc, messages(resume, n))
            time.sleep(rng.uniform(0.3, 1.6))
            proc.kill()
            proc.wait(timeout=30)
            states.finish()
            resume = max(resume, assert_state_covers_only_settled(sim, states))
        proc = start_target(config, tmp_path)
        states = feed_and_collect(proc, messages(resume, n))
        assert proc.wait(timeout=120) == 0
        assert json.loads(states.finish()[-1]) == {"next": n}
        held = sim.leads(campaign_id=41)
        assert sorted(x["external_id"] for x in held) == [f"L{i:05d}" for i in range(n)]
        # The ledger skips what was delivered before a kill: only calls cut off mid-flight
        # repeat, and the limiter's start (doubling until a queue shows) holds at most 2 x C.
        assert sum(x["writes"] for x in held) <= n + 2 * 4 * kills


def test_second_signal_exits_at_once_without_false_state(tmp_path: Path) -> None:
    with Simulator(api_key=API_KEY, slots=2, service_ms=400) as sim:
        config = base_config(sim, tmp_path, fallback_disposition="Call Back", shutdown_grace_s=60)
        proc = start_target(config, tmp_path)
        states = feed_and_collect(proc, messages())
        deadline = time.monotonic() + 30
        while sim.lead_calls < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        time.sleep(2.3)  # later than the 2 s in which a second signal is the same request
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
        assert time.monotonic() - started < 5  # did not wait out the 60 s grace
        assert rc != 0
        states.finish()
        assert_state_covers_only_settled(sim, states)


def test_sigint_then_sigterm_is_one_stop_request_under_meltano(tmp_path: Path) -> None:
    """Ctrl+C on `meltano run`: SIGINT to the group, then SIGTERM from Meltano 50 ms later."""
    with Simulator(api_key=API_KEY, slots=1, service_ms=1500) as sim:
        config = base_config(
            sim, tmp_path, fallback_disposition="Call Back", concurrency=1, shutdown_grace_s=30
        )
        proc = start_target(config, tmp_path)
        lines: list[dict[str, Any]] = [schema_msg()]
        for i in range(20):
            lines += [record_msg(lead(i)), {"type": "STATE", "value": {"next": i + 1}}]
        states = feed_and_collect(proc, lines)
        deadline = time.monotonic() + 30
        while sim.in_service < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # the first call is in the PBX's hands
        proc.send_signal(signal.SIGINT)
        time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
        states.finish()
        assert rc == 128 + signal.SIGINT  # records were left unsent
        assert sim.lead(41, "L00000") is not None  # the call in flight completed
        assert sim.code_counts.get(103, 0) == 0
        assert assert_state_covers_only_settled(sim, states) >= 1  # its record's STATE is out
        assert len(sim.leads(campaign_id=41)) < 20


def kill_with_inserts_in_service(
    sim: Simulator,
    config: dict[str, Any],
    tmp_path: Path,
    lines: list[dict[str, Any]],
    calls: int,
) -> None:
    """SIGKILL a run once `calls` of its calls are in service, and let the PBX finish them
    (it applies them: only the replies are lost); the PBX is fast from then on."""
    proc = start_target(config, tmp_path)
    states = feed_and_collect(proc, lines)
    deadline = time.monotonic() + 30
    while sim.in_service < calls and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.kill()
    proc.wait(timeout=30)
    states.finish()
    while sim.in_service and time.monotonic() < deadline + 30:
        time.sleep(0.05)
    sim.set_service_ms(0)


def test_inserts_cut_off_by_a_kill_are_not_rejected_as_existing_on_resume(tmp_path: Path) -> None:
    """Insert mode: the PBX applied the inserts a SIGKILL cut off; the next run must not reject
    them as existing (112), the ledger marked them as sent."""
    with Simulator(api_key=API_KEY, slots=4, service_ms=1500) as sim:
        config = base_config(sim, tmp_path, operation="insert", concurrency=4)
        lines = messages(0, 10)
        kill_with_inserts_in_service(sim, config, tmp_path, lines, 4)
        assert len(sim.leads(campaign_id=41)) == 4
        proc = start_target(config, tmp_path)
        states = feed_and_collect(proc, lines)
        assert proc.wait(timeout=120) == 0
        assert json.loads(states.finish()[-1]) == {"next": 10}
        assert not (tmp_path / "rejects.jsonl").exists()
        held = sim.leads(campaign_id=41)
        assert sorted(x["external_id"] for x in held) == [f"L{i:05d}" for i in range(10)]


def test_inserts_only_queued_when_killed_are_sent_as_new_next_run(tmp_path: Path) -> None:
    """Only the insert in flight may have landed: the queued ones are plain inserts next run
    (a 105 is a reject, not an endless insert / update / insert)."""
    lines = [schema_msg(), *[record_msg(lead(i)) for i in range(5)]]
    lines += [record_msg(lead(5, phone="0400000000")), {"type": "STATE", "value": {"next": 6}}]
    with Simulator(api_key=API_KEY, slots=1, service_ms=1500) as sim:
        config = base_config(sim, tmp_path, concurrency=1)
        kill_with_inserts_in_service(sim, config, tmp_path, lines, 1)
        proc = start_target(config, tmp_path)
        states = feed_and_collect(proc, lines)
        assert proc.wait(timeout=60) == 0
        assert json.loads(states.finish()[-1]) == {"next": 6}
        rejects = [json.loads(x) for x in (tmp_path / "rejects.jsonl").read_text().splitlines()]
        assert [(r["key"], r["code"]) for r in rejects] == [("L00005", 105)]
        assert sim.lead_calls < 20


def test_a_lead_changed_after_a_kill_cut_off_its_insert_reaches_the_pbx(tmp_path: Path) -> None:
    def lines(name: str) -> list[dict[str, Any]]:
        return [schema_msg(), record_msg(lead(1, name=name)), {"type": "STATE", "value": {"n": 1}}]

    with Simulator(api_key=API_KEY, slots=1, service_ms=1500) as sim:
        config = base_config(sim, tmp_path, concurrency=1, fallback_disposition="Call Back")
        kill_with_inserts_in_service(sim, config, tmp_path, lines("Old"), 1)
        assert sim.lead(41, "L00001")["fields"]["Name"] == "Old"
        proc = start_target(config, tmp_path)
        states = feed_and_collect(proc, lines("New"))
        assert proc.wait(timeout=60) == 0
        assert json.loads(states.finish()[-1]) == {"n": 1}
        assert sim.lead(41, "L00001")["fields"]["Name"] == "New"


def test_a_lost_reply_does_not_hold_state_back_behind_the_whole_window(tmp_path: Path) -> None:
    """The retry of a call whose reply was lost goes, once its backoff is over, before the
    records queued after its own: STATE keeps coming while the run goes on, so a run killed
    half way resumes from half way."""
    n = 600
    with Simulator(api_key=API_KEY, slots=4, service_ms=10, drop_rate=0.03, seed=5) as sim:
        config = base_config(sim, tmp_path, concurrency=4, request_timeout_s=1)
        proc = start_target(config, tmp_path)
        states = feed_and_collect(proc, messages(0, n))
        deadline = time.monotonic() + 120
        while not states and time.monotonic() < deadline:
            time.sleep(0.01)
        delivered_then = len(sim.leads(campaign_id=41))
        assert proc.wait(timeout=180) == 0
        assert len(states.finish()) > 10 and len(sim.leads(campaign_id=41)) == n
        assert delivered_then < n / 2  # the first STATE came while most of the run was to come


def test_a_duplicate_phone_cut_off_by_a_kill_is_rejected_105_next_run(tmp_path: Path) -> None:
    """Two inserts of one phone in flight when the run is killed: the PBX takes one and answers
    the other 105 to nobody. Next run the noted one is tried as maybe ours (update), the PBX
    does not know it (101): its reject is the 105 it is, to re-send by `--code 105`."""
    lines = [schema_msg(), record_msg(lead(1, phone="0411111111"))]
    lines += [record_msg(lead(2, phone="0411111111")), {"type": "STATE", "value": {"next": 2}}]
    with Simulator(api_key=API_KEY, slots=2, service_ms=1500) as sim:
        config = base_config(sim, tmp_path, operation="insert", concurrency=2)
        kill_with_inserts_in_service(sim, config, tmp_path, lines, 2)
        held = [x["external_id"] for x in sim.leads(campaign_id=41)]
        assert len(held) == 1
        proc = start_target(config, tmp_path)
        states = feed_and_collect(proc, lines)
        assert proc.wait(timeout=60) == 0
        assert json.loads(states.finish()[-1]) == {"next": 2}
        rejects = [json.loads(x) for x in (tmp_path / "rejects.jsonl").read_text().splitlines()]
        other = "L00002" if held == ["L00001"] else "L00001"
        assert [(r["key"], r["code"], r["endpoint"]) for r in rejects] == [
            (other, 105, "insertLeadFast")
        ]
