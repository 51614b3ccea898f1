"""Closing leads that left the source or opted out, mirroring full tables, re-delivering rejects."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from test_kill import feed_and_collect, start_target

from target_noojee.simulator import Simulator

from conftest import API_KEY, base_config, lead, record_msg, run_target, schema_msg, state_msg

CLOSE = "Do Not Call"


def config(sim: Simulator, tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "close_disposition": CLOSE,
        "fallback_disposition": "Call Back",
        "report_file": str(tmp_path / "report.json"),
    }
    return base_config(sim, tmp_path, **{**settings, **overrides})


def report(tmp_path: Path) -> dict[str, Any]:
    return json.loads((tmp_path / "report.json").read_text())["streams"]["contacts"]


def deleted(i: int, **fields: Any) -> dict[str, Any]:
    return record_msg(lead(i, _sdc_deleted_at="2026-11-30T10:00:00Z", **fields))


def load(sim: Simulator, tmp_path: Path, n: int, **overrides: Any) -> None:
    messages = [schema_msg()] + [record_msg(lead(i)) for i in range(n)] + [state_msg(n)]
    result = run_target(config(sim, tmp_path, **overrides), messages, tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(sim.leads(campaign_id=41)) >= n


def closed(sim: Simulator) -> set[str]:
    return {x["external_id"] for x in sim.leads(campaign_id=41) if x["disposition"] == CLOSE}


def test_soft_deletes_close_exactly_those_leads_and_leave_their_fields(
    sim: Simulator, tmp_path: Path
) -> None:
    load(sim, tmp_path, 6)
    before = {x["external_id"]: x["fields"] for x in sim.leads(campaign_id=41)}
    messages = [schema_msg(), deleted(1), record_msg(lead(2)), deleted(4), state_msg(3)]
    sim.reset_stats()
    result = run_target(config(sim, tmp_path), messages, tmp_path)
    assert result.returncode == 0, result.stderr
    assert closed(sim) == {"L00001", "L00004"}
    assert sim.lead_calls == 2  # lead 2 is unchanged
    for x in sim.leads(campaign_id=41):
        assert x["fields"] == before[x["external_id"]]  # a close changes nothing else
    assert sim.lead(41, "L00001")["dispositions"][-1] == CLOSE
    assert result.states == [state_msg(3)["value"]]
    assert report(tmp_path)["closed"] == 2
    sim.reset_stats()
    again = run_target(config(sim, tmp_path), messages, tmp_path)
    assert again.returncode == 0 and sim.lead_calls == 0  # closed already: no call


def test_close_field_takes_booleans_and_csv_strings(sim: Simulator, tmp_path: Path) -> None:
    load(sim, tmp_path, 9)
    values = [True, False, "yes", "No", "Y", "0", "1", "", None]
    messages = [schema_msg()]
    for i, value in enumerate(values):
        messages.append(record_msg(lead(i, opted_out=value)))
    messages.append(record_msg(lead(20, opted_out="maybe")))
    result = run_target(config(sim, tmp_path, close_field="opted_out"), messages, tmp_path)
    assert result.returncode == 0, result.stderr
    assert closed(sim) == {"L00000", "L00002", "L00004", "L00006"}
    assert [(r["key"], r["code"]) for r in result.rejects] == [("L00020", "local")]
    assert "close_field" in result.rejects[0]["message"]
    assert sim.lead(41, "L00020") is None


def test_a_delete_marker_for_an_unknown_lead_inserts_nothing(
    sim: Simulator, tmp_path: Path
) -> None:
    result = run_target(config(sim, tmp_path), [schema_msg(), deleted(7), state_msg(1)], tmp_path)
    assert result.returncode == 0, result.stderr
    assert sim.leads(campaign_id=41) == [] and result.rejects == []
    assert sim.code_counts.get(101) == 1
    assert report(tmp_path)["close_unknown"] == 1
    assert result.states == [state_msg(1)["value"]]


def test_deletes_are_not_sent_while_closing_is_off(sim: Simulator, tmp_path: Path) -> None:
    load(sim, tmp_path, 2)
    sim.reset_stats()
    result = run_target(
        config(sim, tmp_path, close_disposition=None), [schema_msg(), deleted(1)], tmp_path
    )
    assert result.returncode == 0 and sim.lead_calls == 0
    assert "close_disposition" in result.stderr


def full_table(ids: list[int], version: int, *, trailing: bool) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [
        schema_msg(),
        {"type": "ACTIVATE_VERSION", "stream": "contacts", "version": version},
    ]
    for i in ids:
        messages.append({**record_msg(lead(i)), "version": version})
    if trailing:
        messages.append({"type": "ACTIVATE_VERSION", "stream": "contacts", "version": version})
    messages.append(state_msg(version))
    return messages


def test_mirror_closes_what_a_complete_version_left_out(sim: Simulator, tmp_path: Path) -> None:
    cfg = config(sim, tmp_path, mirror=True)
    first = run_target(cfg, full_table(list(range(12)), 1, trailing=True), tmp_path)
    assert first.returncode == 0, first.stderr
    assert closed(sim) == set()
    second = run_target(
        cfg, full_table([i for i in range(12) if i not in (3, 8)], 2, trailing=True), tmp_path
    )
    assert second.returncode == 0, second.stderr
    assert closed(sim) == {"L00003", "L00008"}
    assert second.states[-1] == state_msg(2)["value"]
    sim.reset_stats()
    third = run_target(
        cfg, full_table([i for i in range(12) if i not in (3, 8)], 3, trailing=True), tmp_path
    )
    assert third.returncode == 0 and sim.lead_calls == 0


def test_mirror_of_an_sdk_tap_closes_after_two_versions_and_survives_a_dead_tap(
    sim: Simulator, tmp_path: Path
) -> None:
    cfg = config(sim, tmp_path, mirror=True)
    everyone = list(range(12))
    assert run_target(cfg, full_table(everyone, 1, trailing=False), tmp_path).returncode == 0
    died = run_target(cfg, full_table(everyone[:5], 2, trailing=False), tmp_path)  # tap died
    assert died.returncode == 0 and closed(sim) == set()
    assert run_target(cfg, full_table(everyone, 3, trailing=False), tmp_path).returncode == 0
    assert closed(sim) == set()  # the dead tap's version closed nothing
    without = [i for i in everyone if i != 6]
    assert run_target(cfg, full_table(without, 4, trailing=False), tmp_path).returncode == 0
    assert closed(sim) == set()  # missing from one version only
    assert run_target(cfg, full_table(without, 5, trailing=False), tmp_path).returncode == 0
    assert closed(sim) == {"L00006"}


def test_the_guard_refuses_a_mass_close_until_raised(sim: Simulator, tmp_path: Path) -> None:
    load(sim, tmp_path, 30)
    messages = [schema_msg(), state_msg(0)] + [deleted(i) for i in range(15)] + [state_msg(15)]
    sim.reset_stats()
    result = run_target(config(sim, tmp_path), messages, tmp_path)
    assert result.returncode == 2, result.stderr
    assert "max_close_ratio" in result.stderr and "'contacts'" in result.stderr
    assert "15" in result.stderr
    assert closed(sim) == set() and sim.lead_calls == 0
    assert result.states == [state_msg(0)["value"]]  # STATE stops before the refused closes
    # 15 of 30 open leads: a ratio of 0.6 lets them through (a fraction, as Meltano writes it)
    approved = run_target(config(sim, tmp_path, max_close_ratio=0.6), messages, tmp_path)
    assert approved.returncode == 0, approved.stderr
    assert len(closed(sim)) == 15


def test_the_guard_counts_mirror_closes_too(sim: Simulator, tmp_path: Path) -> None:
    cfg = config(sim, tmp_path, mirror=True)
    assert run_target(cfg, full_table(list(range(40)), 1, trailing=True), tmp_path).returncode == 0
    shrunk = full_table(list(range(20)), 2, trailing=True)
    result = run_target(cfg, shrunk, tmp_path)
    assert result.returncode == 2 and closed(sim) == set()
    assert result.states == []


def test_reopen_with_reopen_disposition_or_a_local_reject_once(
    sim: Simulator, tmp_path: Path
) -> None:
    load(sim, tmp_path, 2)
    assert (
        run_target(
            config(sim, tmp_path), [schema_msg(), deleted(0), deleted(1)], tmp_path
        ).returncode
        == 0
    )
    assert closed(sim) == {"L00000", "L00001"}
    back = [schema_msg(), record_msg(lead(0)), record_msg(lead(1, disposition="Sale"))]
    result = run_target(config(sim, tmp_path), back, tmp_path)
    assert result.returncode == 0, result.stderr
    assert [r["key"] for r in result.rejects] == ["L00000"]
    assert "reopen_disposition" in result.rejects[0]["message"]
    assert sim.lead(41, "L00001")["disposition"] == "Sale"
    again = run_target(config(sim, tmp_path), back, tmp_path)
    assert len(again.rejects) == 1  # the same reject is not written every night
    result = run_target(config(sim, tmp_path, reopen_disposition="Call Back"), back, tmp_path)
    assert result.returncode == 0, result.stderr
    assert sim.lead(41, "L00000")["disposition"] == "Call Back"
    assert report(tmp_path)["reopened"] == 1


def test_a_104_is_redelivered_once_due_and_leaves_the_reject_file(
    sim: Simulator, tmp_path: Path
) -> None:
    sim.add_dnc("0400000003")
    messages = [schema_msg()] + [record_msg(lead(i)) for i in range(5)]
    first = run_target(config(sim, tmp_path), messages, tmp_path)
    assert [(r["key"], r["code"]) for r in first.rejects] == [("L00003", 104)]
    cfg = config(sim, tmp_path, redeliver_after_s={"104": 3600})
    not_due = run_target(cfg, [schema_msg()], tmp_path)
    assert not_due.returncode == 0 and sim.lead(41, "L00003") is None
    sim.remove_dnc("0400000003")
    due = run_target(config(sim, tmp_path, redeliver_after_s={"104": 0}), [schema_msg()], tmp_path)
    assert due.returncode == 0, due.stderr
    assert sim.lead(41, "L00003") is not None
    assert due.rejects == []  # the reject store stays true
    assert report(tmp_path)["redelivered"] == 1


def test_redelivery_gives_up_after_max_redeliveries(sim: Simulator, tmp_path: Path) -> None:
    sim.add_dnc("0400000001")
    run_target(config(sim, tmp_path), [schema_msg(), record_msg(lead(1))], tmp_path)
    cfg = config(sim, tmp_path, redeliver_after_s={"104": 0}, max_redeliveries=2)
    for _ in range(4):
        run_target(cfg, [schema_msg()], tmp_path)
    assert sim.code_counts.get(104) == 3  # the first try and two re-deliveries


def test_a_close_with_an_unknown_disposition_stops_naming_close_disposition(
    sim: Simulator, tmp_path: Path
) -> None:
    load(sim, tmp_path, 1)
    result = run_target(
        config(sim, tmp_path, close_disposition="Gone Fishing"),
        [schema_msg(), deleted(0)],
        tmp_path,
    )
    assert result.returncode == 2
    assert "close_disposition" in result.stderr


def test_dry_run_lists_each_close_with_its_reason(sim: Simulator, tmp_path: Path) -> None:
    load(sim, tmp_path, 3)
    dry = tmp_path / "dry.jsonl"
    cfg = config(sim, tmp_path, dry_run=True, dry_run_file=str(dry), close_field="gone")
    messages = [schema_msg(), deleted(0), record_msg(lead(1, gone="yes")), state_msg(2)]
    sim.reset_stats()
    result = run_target(cfg, messages, tmp_path)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(x) for x in dry.read_text().splitlines()]
    assert {(x["key"], x["action"], x["reason"], x["guard"]) for x in lines} == {
        ("L00000", "close", "deleted", "would allow"),
        ("L00001", "close", "close_field", "would allow"),
    }
    assert sim.lead_calls == 0 and closed(sim) == set()
    assert result.states == [state_msg(2)["value"]]


def test_sigkill_during_a_mirrors_closes_then_a_clean_resume(tmp_path: Path) -> None:
    with Simulator(api_key=API_KEY, slots=2, service_ms=40) as sim:
        cfg = config(sim, tmp_path, mirror=True, max_close_ratio=1)
        everyone = list(range(60))
        assert run_target(cfg, full_table(everyone, 1, trailing=True), tmp_path).returncode == 0
        (tmp_path / "config.json").write_text(json.dumps(cfg))
        shrunk = full_table(everyone[:10], 2, trailing=True)
        proc = start_target(cfg, tmp_path)
        states = feed_and_collect(proc, shrunk)
        deadline = time.monotonic() + 30
        while len(closed(sim)) < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        states.finish()
        assert 0 < len(closed(sim)) < 50
        assert states == []  # the STATE after the version waits for every close
        resumed = run_target(cfg, shrunk, tmp_path)
        assert resumed.returncode == 0, resumed.stderr
        assert closed(sim) == {f"L{i:05d}" for i in range(10, 60)}
        assert resumed.states[-1] == state_msg(2)["value"]


def test_a_dry_run_mirror_reports_its_closes_and_changes_nothing(
    sim: Simulator, tmp_path: Path
) -> None:
    cfg = config(sim, tmp_path, mirror=True)
    everyone = list(range(12))
    assert run_target(cfg, full_table(everyone, 1, trailing=False), tmp_path).returncode == 0
    without = [i for i in everyone if i != 4]
    assert run_target(cfg, full_table(without, 2, trailing=False), tmp_path).returncode == 0
    dry = tmp_path / "dry.jsonl"
    dry_cfg = {**cfg, "dry_run": True, "dry_run_file": str(dry)}
    for _ in range(2):  # a dry run writes no version: the second one sees the same
        result = run_target(dry_cfg, full_table(without, 3, trailing=False), tmp_path)
        assert result.returncode == 0, result.stderr
        closes = [json.loads(x) for x in dry.read_text().splitlines() if '"close"' in x]
        assert [(x["key"], x["reason"]) for x in closes] == [("L00004", "not in version 3")]
        dry.unlink()
    assert closed(sim) == set()


def test_an_unchanged_invalid_record_is_rejected_once(sim: Simulator, tmp_path: Path) -> None:
    messages = [schema_msg(), record_msg(lead(1, priority="high")), state_msg(1)]
    first = run_target(config(sim, tmp_path), messages, tmp_path)
    assert [r["key"] for r in first.rejects] == ["L00001"]
    second = run_target(config(sim, tmp_path), messages, tmp_path)
    assert second.returncode == 0 and len(second.rejects) == 1
    assert report(tmp_path)["unchanged"] == 1


def test_a_close_needs_only_the_id_even_when_the_rest_would_not_map(
    sim: Simulator, tmp_path: Path
) -> None:
    load(sim, tmp_path, 3)
    messages = [
        schema_msg(),
        record_msg(lead(1, opted_out=True, phone="not a phone")),
        {**deleted(2), "record": {"id": "L00002", "_sdc_deleted_at": "2026-11-30T10:00:00Z"}},
        state_msg(2),
    ]
    result = run_target(config(sim, tmp_path, close_field="opted_out"), messages, tmp_path)
    assert result.returncode == 0, result.stderr
    assert closed(sim) == {"L00001", "L00002"} and result.rejects == []


def test_a_rejected_close_redelivered_stays_a_close_and_can_reopen(
    sim: Simulator, tmp_path: Path
) -> None:
    load(sim, tmp_path, 1)
    sim.set_editing(41, "L00000", True)
    cfg = config(sim, tmp_path, redeliver_after_s={"110": 0}, reopen_disposition="Call Back")
    first = run_target(cfg, [schema_msg(), deleted(0)], tmp_path)
    assert [(r["key"], r["code"]) for r in first.rejects] == [("L00000", 110)]
    sim.set_editing(41, "L00000", False)
    assert run_target(cfg, [schema_msg()], tmp_path).returncode == 0  # the close, re-delivered
    assert closed(sim) == {"L00000"}
    back = run_target(cfg, [schema_msg(), record_msg(lead(0))], tmp_path)
    assert back.returncode == 0, back.stderr
    assert sim.lead(41, "L00000")["disposition"] == "Call Back"


def test_a_landed_redelivery_keeps_this_runs_new_reject_lines(
    sim: Simulator, tmp_path: Path
) -> None:
    sim.add_dnc("0400000001")
    run_target(config(sim, tmp_path), [schema_msg(), record_msg(lead(1))], tmp_path)
    sim.remove_dnc("0400000001")
    time.sleep(1.1)  # reject lines carry whole seconds
    cfg = config(sim, tmp_path, redeliver_after_s={"104": 0})
    result = run_target(cfg, [schema_msg(), record_msg(lead(1, phone="garbage"))], tmp_path)
    assert result.returncode == 0, result.stderr
    assert [(r["key"], r["code"]) for r in result.rejects] == [("L00001", "local")]


def test_a_complete_version_then_a_newer_one_in_the_same_run_closes_nothing(
    sim: Simulator, tmp_path: Path
) -> None:
    cfg = config(sim, tmp_path, mirror=True)
    assert run_target(cfg, full_table(list(range(5)), 1, trailing=True), tmp_path).returncode == 0
    both = (
        full_table(list(range(5)), 2, trailing=True)
        + full_table(list(range(5)), 3, trailing=False)[1:]
    )
    result = run_target(cfg, both, tmp_path)
    assert result.returncode == 0, result.stderr
    assert closed(sim) == set()
    assert result.states[-1] == state_msg(3)["value"]


def test_rows_a_stream_map_filters_are_not_closed_by_a_mirror(
    sim: Simulator, tmp_path: Path
) -> None:
    mapping = {"njExternalLeadId": "ext", "Name": "name", "FirstPhone": "phone"}
    maps = {"contacts": {"ext": "id", "__filter__": "name != 'Moved'"}}
    cfg = config(sim, tmp_path, mirror=True, mapping=mapping, stream_maps=maps)
    assert run_target(cfg, full_table(list(range(5)), 1, trailing=True), tmp_path).returncode == 0
    moved = full_table(list(range(5)), 2, trailing=True)
    moved[3] = {**moved[3], "record": {**moved[3]["record"], "name": "Moved"}}
    result = run_target(cfg, moved, tmp_path)
    assert result.returncode == 0, result.stderr
    assert closed(sim) == set()
    assert "closes none" in result.stderr


def test_a_row_a_stream_map_fails_on_is_rejected_not_closed_by_a_mirror(
    sim: Simulator, tmp_path: Path
) -> None:
    maps = {"contacts": {"name": "name + ' ' + nickname"}}  # no nickname: the map fails
    cfg = config(sim, tmp_path, mirror=True, stream_maps=maps)
    first = full_table(list(range(5)), 1, trailing=True)
    for message in first[2:7]:
        message["record"] = {**message["record"], "nickname": "x"}
    assert run_target(cfg, first, tmp_path).returncode == 0
    second = full_table(list(range(5)), 2, trailing=True)
    for message in second[2:7]:
        if message["record"]["id"] != "L00003":
            message["record"] = {**message["record"], "nickname": "x"}
    result = run_target(cfg, second, tmp_path)
    assert result.returncode == 0, result.stderr
    assert [(r["key"], r["code"]) for r in result.rejects] == [("L00003", "local")]
    assert closed(sim) == set()
    assert result.states[-1] == state_msg(2)["value"]


def test_a_run_that_dies_after_a_state_keeps_the_presence_of_the_rows_it_covers(
    sim: Simulator, tmp_path: Path
) -> None:
    """A resumable full-table tap (singer-io tap-postgres, tap-mysql) resumes an interrupted
    version after its last STATE: the unchanged rows before that STATE must count as seen."""
    cfg = config(sim, tmp_path, mirror=True)
    assert run_target(cfg, full_table(list(range(6)), 1, trailing=True), tmp_path).returncode == 0
    version = {"type": "ACTIVATE_VERSION", "stream": "contacts", "version": 2}
    dying = [schema_msg(), version]
    dying += [{**record_msg(lead(i)), "version": 2} for i in range(3)]  # unchanged
    dying += [state_msg(3)]
    stopped = run_target(
        cfg, "".join(json.dumps(m) + "\n" for m in dying) + "{not json\n", tmp_path
    )
    assert stopped.returncode == 3 and stopped.states == [state_msg(3)["value"]]
    resumed = [schema_msg()] + [{**record_msg(lead(i)), "version": 2} for i in range(3, 6)]
    resumed += [version, state_msg(6)]
    result = run_target(cfg, resumed, tmp_path)
    assert result.returncode == 0, result.stderr
    assert closed(sim) == set()


def test_a_closed_lead_reopened_then_deleted_in_one_run_ends_closed(
    sim: Simulator, tmp_path: Path
) -> None:
    """The reopen is on its way when the delete comes: the ledger still says closed, but the
    PBX will hold the lead open, so the delete closes it again (never phone it)."""
    load(sim, tmp_path, 2)
    cfg = config(sim, tmp_path, reopen_disposition="Call Back")
    assert run_target(cfg, [schema_msg(), deleted(1), state_msg(1)], tmp_path).returncode == 0
    assert closed(sim) == {"L00001"}
    again = [schema_msg(), record_msg(lead(1)), deleted(1), state_msg(2)]
    result = run_target(cfg, again, tmp_path)
    assert result.returncode == 0, result.stderr
    assert closed(sim) == {"L00001"}
    assert result.states == [state_msg(2)["value"]]
