"""`noojee-rejects`: grouped listing, and re-sending fixed records keeps the file true."""

from __future__ import annotations

import fcntl
import json
import subprocess
import sys
from pathlib import Path

from target_noojee.rejects import lock_path
from target_noojee.simulator import Simulator

from conftest import API_KEY, base_config, lead, record_msg, run_target, schema_msg


def rejects_cli(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "target_noojee.rejects_command", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert API_KEY not in proc.stdout + proc.stderr
    return proc


def load(sim: Simulator, tmp_path: Path) -> tuple[dict, Path]:
    config = base_config(sim, tmp_path, fallback_disposition="Call Back")
    batch = [
        schema_msg(),
        record_msg(lead(1, phone="0390000000")),  # 104 DNC
        record_msg(lead(2, phone="0390000000")),  # 104 DNC
        record_msg(lead(3, hours="Martian")),  # 111
        record_msg(lead(4, phone="not a phone")),  # local
        record_msg(lead(5)),
    ]
    result = run_target(config, batch, tmp_path)
    assert result.returncode == 0
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return config, path


def test_list_groups_by_code(sim: Simulator, tmp_path: Path) -> None:
    _, config_path = load(sim, tmp_path)
    proc = rejects_cli("list", "--config", str(config_path))
    assert proc.returncode == 0
    assert proc.stdout.index("104: 2 record(s)") < proc.stdout.index("111: 1 record(s)")
    assert "local: 1 record(s)" in proc.stdout and "L00001, L00002" in proc.stdout
    data = json.loads(rejects_cli("list", "--config", str(config_path), "--format", "json").stdout)
    assert data == {"104": ["L00001", "L00002"], "111": ["L00003"], "local": ["L00004"]}


def test_resend_after_the_cause_is_fixed(sim: Simulator, tmp_path: Path) -> None:
    config, config_path = load(sim, tmp_path)
    sim.remove_dnc("0390000000")
    sim.reset_stats()
    proc = rejects_cli("resend", "--config", str(config_path), "--key", "L00001")
    assert proc.returncode == 0, proc.stderr
    assert "delivered 1" in proc.stderr
    assert sim.lead(41, "L00001") is not None and sim.lead(41, "L00002") is None
    assert sim.lead_calls == 1
    left = [json.loads(x) for x in Path(config["reject_file"]).read_text().splitlines()]
    assert sorted(e["key"] for e in left) == ["L00002", "L00003", "L00004"]
    # The ledger learnt the delivery: the same record in the next run is unchanged.
    sim.reset_stats()
    run_target(config, [schema_msg(), record_msg(lead(1, phone="0390000000"))], tmp_path)
    assert sim.lead_calls == 0


def test_resend_by_code_keeps_what_is_still_rejected(sim: Simulator, tmp_path: Path) -> None:
    config, config_path = load(sim, tmp_path)
    proc = rejects_cli("resend", "--config", str(config_path), "--code", "104", "--code", "111")
    assert proc.returncode == 0, proc.stderr
    assert "rejected again 3" in proc.stderr
    left = [json.loads(x) for x in Path(config["reject_file"]).read_text().splitlines()]
    assert sorted((e["key"], e["code"]) for e in left) == [
        ("L00001", 104),
        ("L00002", 104),
        ("L00003", 111),
        ("L00004", "local"),
    ]


def test_resend_refuses_while_a_run_writes_the_file(sim: Simulator, tmp_path: Path) -> None:
    config, config_path = load(sim, tmp_path)
    with lock_path(Path(config["reject_file"])).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_SH)
        proc = rejects_cli("resend", "--config", str(config_path))
    assert proc.returncode == 1 and "try again" in proc.stderr


def test_rejects_holding_a_cut_emoji_are_listed_and_resent(sim: Simulator, tmp_path: Path) -> None:
    config = base_config(sim, tmp_path, fallback_disposition="Call Back")
    cut = [schema_msg(), record_msg(lead(1, name="cut \ud83d", phone="0390000000"))]  # 104 DNC
    cut.append(record_msg(lead(2, phone="not a phone \ud83d")))  # local, the text in the reason
    assert run_target(config, cut, tmp_path).returncode == 0
    config_path = tmp_path / "config.json"
    listed = rejects_cli("list", "--config", str(config_path))
    assert listed.returncode == 0, listed.stderr
    assert "Traceback" not in listed.stderr and "local: 1 record(s)" in listed.stdout
    sim.remove_dnc("0390000000")
    proc = rejects_cli("resend", "--config", str(config_path), "--code", "104")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "delivered 1" in proc.stderr
    assert sim.lead(41, "L00001")["fields"]["Name"] == "cut \ud83d"
    left = [json.loads(x) for x in Path(config["reject_file"]).read_text().splitlines()]
    assert [e["key"] for e in left] == ["L00002"]


def test_a_ledger_that_cannot_open_is_one_line_and_exit_2(sim: Simulator, tmp_path: Path) -> None:
    config = base_config(sim, tmp_path, ledger_url="postgresql://u:secret@127.0.0.1:9/nosuchdb")
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    for args in (("list",), ("resend", "--code", "104")):
        proc = rejects_cli(*args, "--config", str(path))
        assert proc.returncode == 2, proc.stderr
        assert "ledger_url" in proc.stderr and "Traceback" not in proc.stderr
        assert "secret" not in proc.stderr
