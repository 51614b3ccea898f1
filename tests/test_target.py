"""target-noojee end to end: the real CLI against noojee-sim over loopback."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from target_noojee.simulator import Simulator

from conftest import (
    API_KEY,
    base_config,
    lead,
    record_msg,
    run_target,
    schema_msg,
    state_msg,
)


def test_upsert_delivers_every_lead_and_forwards_state_last(sim: Simulator, tmp_path: Path) -> None:
    messages = [schema_msg()]
    for i in range(60):
        messages.append(record_msg(lead(i, address={"city": "Hobart"}, priority=i % 10)))
        if i % 20 == 19:
            messages.append(state_msg(i + 1))
    result = run_target(base_config(sim, tmp_path), messages, tmp_path)
    assert result.returncode == 0, result.stderr
    assert [s["bookmarks"]["contacts"]["n"] for s in result.states] == [20, 40, 60]
    leads = {x["external_id"]: x for x in sim.leads(campaign_id=41)}
    assert len(leads) == 60
    assert leads["L00007"]["fields"]["City"] == "Hobart"
    assert leads["L00007"]["fields"]["FirstPhone"] == "0400000007"
    assert sim.problems == []
    assert "summary: stream contacts:" in result.stderr


def test_update_keeps_fields_whose_source_is_null(sim: Simulator, tmp_path: Path) -> None:
    first = [schema_msg(), record_msg(lead(1, address={"city": "Perth"}, disposition="Sale"))]
    assert run_target(base_config(sim, tmp_path), first, tmp_path).returncode == 0
    second = [schema_msg(), record_msg({"id": "L00001", "name": "Renamed", "phone": None})]
    result = run_target(base_config(sim, tmp_path, operation="update"), second, tmp_path)
    assert result.returncode == 0, result.stderr
    held = sim.lead(41, "L00001")
    assert held is not None
    assert held["fields"]["Name"] == "Renamed"
    assert held["fields"]["City"] == "Perth"
    assert held["fields"]["FirstPhone"] == "0400000001"
    assert held["disposition"] == "Sale"


def test_permanent_codes_go_to_the_reject_file(sim: Simulator, tmp_path: Path) -> None:
    assert (
        run_target(
            base_config(sim, tmp_path), [schema_msg(), record_msg(lead(1))], tmp_path
        ).returncode
        == 0
    )
    sim.set_editing(41, "L00001", True)
    messages = [
        schema_msg(),
        record_msg(lead(1, name="edited by a person")),  # 110
        record_msg(lead(2, phone="0390000000")),  # 104 DNC
        record_msg(lead(3, phone="0400000001")),  # 105 duplicate of L00001's phone
        record_msg(lead(4, disposition="Nonsense")),  # 106
        record_msg(lead(5, hours="Martian")),  # 111
        state_msg(1),
    ]
    result = run_target(base_config(sim, tmp_path), messages, tmp_path)
    assert result.returncode == 0, result.stderr
    codes = {r["key"]: r["code"] for r in result.rejects}
    assert codes == {"L00001": 110, "L00002": 104, "L00003": 105, "L00004": 106, "L00005": 111}
    for entry in result.rejects:
        assert entry["stream"] == "contacts" and entry["message"] and entry["time"]
        assert entry["lead"]["njExternalLeadId"] == entry["key"]
    assert result.states == [{"bookmarks": {"contacts": {"n": 1}}}]
    assert sim.lead(41, "L00001")["fields"]["Name"] == "Lead 1"  # the person's edit is kept


def test_update_mode_rejects_unknown_lead_with_101(sim: Simulator, tmp_path: Path) -> None:
    result = run_target(
        base_config(sim, tmp_path, operation="update"),
        [schema_msg(), record_msg(lead(9))],
        tmp_path,
    )
    assert result.returncode == 0
    assert [r["code"] for r in result.rejects] == [101]
    assert sim.leads(campaign_id=41) == []


def test_insert_mode_rejects_existing_external_id_with_112(sim: Simulator, tmp_path: Path) -> None:
    config = base_config(sim, tmp_path, operation="insert")
    assert run_target(config, [schema_msg(), record_msg(lead(1))], tmp_path).returncode == 0
    result = run_target(config, [schema_msg(), record_msg(lead(1, phone="0411111111"))], tmp_path)
    assert [r["code"] for r in result.rejects] == [112]


def test_upsert_updates_existing_lead(sim: Simulator, tmp_path: Path) -> None:
    config = base_config(sim, tmp_path)
    run_target(config, [schema_msg(), record_msg(lead(1, disposition="Sale"))], tmp_path)
    result = run_target(config, [schema_msg(), record_msg(lead(1, name="New"))], tmp_path)
    assert result.returncode == 0 and result.rejects == []
    assert sim.lead(41, "L00001")["fields"]["Name"] == "New"


def test_107_uses_the_fallback_disposition_or_rejects(sim: Simulator, tmp_path: Path) -> None:
    insert = base_config(sim, tmp_path, operation="insert")
    run_target(insert, [schema_msg(), record_msg(lead(1)), record_msg(lead(2))], tmp_path)
    update = base_config(sim, tmp_path, operation="update")
    result = run_target(update, [schema_msg(), record_msg(lead(1, name="Changed"))], tmp_path)
    assert [r["code"] for r in result.rejects] == [107]
    (tmp_path / "rejects.jsonl").unlink()
    fallback = base_config(sim, tmp_path, operation="update", fallback_disposition="Call Back")
    result = run_target(fallback, [schema_msg(), record_msg(lead(2, name="Again"))], tmp_path)
    assert result.rejects == []
    held = sim.lead(41, "L00002")
    assert held["disposition"] == "Call Back" and held["fields"]["Name"] == "Again"


def test_literal_no_change_never_reaches_an_insert(sim: Simulator, tmp_path: Path) -> None:
    config = base_config(sim, tmp_path, operation="insert")
    result = run_target(config, [schema_msg(), record_msg(lead(1, name="<No Change>"))], tmp_path)
    assert result.rejects == [] and sim.code_counts.get(108, 0) == 0
    assert "Name" not in sim.lead(41, "L00001")["fields"]


def test_phone_field_the_template_lacks_is_rejected_with_102(
    sim: Simulator, tmp_path: Path
) -> None:
    mapping = {"njExternalLeadId": "id", "Name": "name", "Mobile": "phone"}
    config = base_config(
        sim, tmp_path, operation="insert", mapping=mapping, phone_fields=["Mobile"]
    )
    result = run_target(config, [schema_msg(), record_msg(lead(1))], tmp_path)
    assert [r["code"] for r in result.rejects] == [102]


def test_local_rejections_are_never_sent(sim: Simulator, tmp_path: Path) -> None:
    schema = {
        "type": "SCHEMA",
        "stream": "contacts",
        "key_properties": ["id"],
        "schema": {
            "type": "object",
            "properties": {
                "id": {"type": ["string", "null"]},
                "name": {"type": ["string", "null"]},
                "phone": {"type": ["string", "null"]},
                "callback": {"type": ["string", "null"]},
                "priority": {"type": ["integer", "null"]},
            },
        },
    }
    messages = [
        schema,
        record_msg(lead(1, phone="not a phone")),
        record_msg(lead(2, callback="next tuesday-ish")),
        record_msg(lead(3, priority=101)),
        record_msg(lead(5, phone=None)) | {"record": {"id": "L00005", "name": "no phone"}},
        record_msg(lead(6, priority="high")),  # fails the stream's schema
        record_msg(lead(7, name="x" * 50)),  # fails lead_schema
        record_msg(lead(8)),
        state_msg(8),
    ]
    lead_schema = {"properties": {"Name": {"maxLength": 40}}}
    config = base_config(sim, tmp_path, operation="insert", lead_schema=lead_schema)
    config["mapping"] = {k: v for k, v in config["mapping"].items() if v not in ("address.city",)}
    result = run_target(config, messages, tmp_path)
    assert result.returncode == 0, result.stderr
    assert {r["code"] for r in result.rejects} == {"local"}
    assert len(result.rejects) == 6
    assert [x["external_id"] for x in sim.leads(campaign_id=41)] == ["L00008"]
    assert sim.lead_calls == 1
    assert result.states == [{"bookmarks": {"contacts": {"n": 8}}}]


def test_missing_external_id_is_rejected_for_update_and_upsert(
    sim: Simulator, tmp_path: Path
) -> None:
    for operation in ("update", "upsert"):
        config = base_config(sim, tmp_path, operation=operation)
        result = run_target(config, [schema_msg(), record_msg(lead(1, id=None))], tmp_path)
        assert result.returncode == 0
        assert [r["code"] for r in result.rejects] == ["local"]
        assert "njExternalLeadId" in result.rejects[0]["message"]
        (tmp_path / "rejects.jsonl").unlink()
    assert sim.lead_calls == 0


def test_later_record_for_the_same_lead_wins(sim: Simulator, tmp_path: Path) -> None:
    messages = [schema_msg()] + [record_msg(lead(1, name=f"v{n}")) for n in range(8)]
    config = base_config(sim, tmp_path, fallback_disposition="Call Back")
    result = run_target(config, messages, tmp_path)
    assert result.returncode == 0
    assert sim.lead(41, "L00001")["fields"]["Name"] == "v7"


def test_transient_faults_are_retried_until_delivered(tmp_path: Path) -> None:
    with Simulator(api_key=API_KEY, slots=4, service_ms=0, fault_rate=0.3, seed=3) as sim:
        messages = [schema_msg()] + [record_msg(lead(i)) for i in range(40)] + [state_msg(40)]
        result = run_target(base_config(sim, tmp_path), messages, tmp_path)
        assert result.returncode == 0, result.stderr
        assert len(sim.leads(campaign_id=41)) == 40
        assert sim.code_counts.get(103, 0) > 0
        assert result.rejects == []


def test_lost_replies_on_insert_do_not_duplicate_or_reject(tmp_path: Path) -> None:
    with Simulator(api_key=API_KEY, slots=4, service_ms=0, drop_rate=0.3, seed=5) as sim:
        for operation in ("insert", "upsert"):
            messages = [schema_msg()] + [
                record_msg(lead(i + (100 if operation == "upsert" else 0))) for i in range(30)
            ]
            result = run_target(base_config(sim, tmp_path, operation=operation), messages, tmp_path)
            assert result.returncode == 0, result.stderr
            assert result.rejects == []
        assert len(sim.leads(campaign_id=41)) == 60


def test_queue_timeouts_109_are_retried(tmp_path: Path) -> None:
    with Simulator(api_key=API_KEY, slots=1, service_ms=100, queue_timeout_s=0.15) as sim:
        messages = [schema_msg()] + [record_msg(lead(i)) for i in range(12)]
        config = base_config(sim, tmp_path, concurrency=6)
        result = run_target(config, messages, tmp_path)
        assert result.returncode == 0, result.stderr
        assert sim.code_counts.get(109, 0) > 0
        assert len(sim.leads(campaign_id=41)) == 12


def test_wrong_ids_stop_the_run_naming_the_setting(sim: Simulator, tmp_path: Path) -> None:
    for setting_name in ("allocation_id", "template_id", "campaign_id"):
        config = base_config(sim, tmp_path, **{setting_name: 999})
        result = run_target(config, [schema_msg(), record_msg(lead(1)), state_msg(1)], tmp_path)
        assert result.returncode == 2
        # Preflight catches it before any lead is sent (the PBX would answer 115/116/117).
        assert f"setting `{setting_name}` is 999" in result.stderr and "valid: " in result.stderr
        assert "Traceback" not in result.stderr
        assert result.states == []
        assert sim.lead_calls == 0


def test_wrong_api_key_stops_the_run(sim: Simulator, tmp_path: Path) -> None:
    config = base_config(sim, tmp_path, api_key="wrong-key-123")
    result = run_target(config, [schema_msg(), record_msg(lead(1)), state_msg(1)], tmp_path)
    assert result.returncode == 2
    assert "api_key" in result.stderr and "Traceback" not in result.stderr
    assert "wrong-key-123" not in result.stderr
    assert result.states == []


def test_outage_beyond_max_retry_time_fails_the_run(sim: Simulator, tmp_path: Path) -> None:
    sim.set_outage("refuse")
    config = base_config(sim, tmp_path, max_retry_time_s=1.5)
    result = run_target(config, [schema_msg(), record_msg(lead(1)), state_msg(1)], tmp_path)
    sim.set_outage(None)
    assert result.returncode == 1
    assert "max_retry_time_s" in result.stderr and "Traceback" not in result.stderr
    assert result.states == []


def test_malformed_input_names_the_line(sim: Simulator, tmp_path: Path) -> None:
    good = json.dumps(schema_msg()) + "\n" + json.dumps(record_msg(lead(1))) + "\n"
    result = run_target(base_config(sim, tmp_path), good + '{"type": "RECORD", oops\n', tmp_path)
    assert result.returncode == 3
    assert "line 3" in result.stderr and "Traceback" not in result.stderr
    early = json.dumps(record_msg(lead(1))) + "\n"
    result = run_target(base_config(sim, tmp_path), early, tmp_path)
    assert result.returncode == 3
    assert "line 1" in result.stderr and "SCHEMA" in result.stderr


def test_invalid_config_names_the_setting(sim: Simulator, tmp_path: Path) -> None:
    config = base_config(sim, tmp_path)
    del config["campaign_id"]
    result = run_target(config, [schema_msg(), record_msg(lead(1))], tmp_path)
    assert result.returncode == 2 and "campaign_id" in result.stderr
    assert "Traceback" not in result.stderr
    config = base_config(sim, tmp_path, operation="merge")
    result = run_target(config, [schema_msg()], tmp_path)
    assert result.returncode == 2 and "operation" in result.stderr


def test_stream_without_mapping_is_a_config_error(sim: Simulator, tmp_path: Path) -> None:
    config = base_config(sim, tmp_path)
    del config["mapping"]
    config["streams"] = {"contacts": {"mapping": {"njExternalLeadId": "id", "FirstPhone": "phone"}}}
    result = run_target(config, [schema_msg("orders"), record_msg(lead(1), "orders")], tmp_path)
    assert result.returncode == 2
    assert "orders" in result.stderr and "mapping" in result.stderr


def test_stream_maps_apply_before_the_mapping(sim: Simulator, tmp_path: Path) -> None:
    config = base_config(sim, tmp_path)
    config["stream_maps"] = {"contacts": {"name": "'Dr ' + name", "__filter__": "id != 'L00002'"}}
    messages = [schema_msg()] + [record_msg(lead(i)) for i in range(3)] + [state_msg(3)]
    result = run_target(config, messages, tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(x["external_id"] for x in sim.leads(campaign_id=41)) == ["L00000", "L00001"]
    assert sim.lead(41, "L00001")["fields"]["Name"] == "Dr Lead 1"
    assert result.states == [{"bookmarks": {"contacts": {"n": 3}}}]


def test_dry_run_sends_nothing(sim: Simulator, tmp_path: Path) -> None:
    dry_file = tmp_path / "dry.jsonl"
    config = base_config(sim, tmp_path, dry_run=True, dry_run_file=str(dry_file))
    messages = [schema_msg()] + [record_msg(lead(i)) for i in range(5)] + [state_msg(5)]
    result = run_target(config, messages, tmp_path)
    assert result.returncode == 0
    assert sim.lead_calls == 0
    lines = [json.loads(x) for x in dry_file.read_text().splitlines()]
    assert [x["endpoint"] for x in lines] == ["insertLeadFast"] * 5  # upsert, leads unknown
    assert lines[0]["lead"]["FirstPhone"] == "0400000000"
    assert result.states == [{"bookmarks": {"contacts": {"n": 5}}}]


def test_api_key_never_logged_even_at_debug(sim: Simulator, tmp_path: Path) -> None:
    messages = [schema_msg(), record_msg(lead(1)), record_msg(lead(2, phone="0390000000"))]
    result = run_target(base_config(sim, tmp_path), messages, tmp_path, env={"LOGLEVEL": "DEBUG"})
    assert result.returncode == 0
    assert "apiKey=***" in result.stderr  # urllib3's request lines, redacted
    # run_target itself asserts the key is in no output and no reject line.


def test_malformed_messages_are_named_not_echoed(sim: Simulator, tmp_path: Path) -> None:
    schema = json.dumps(schema_msg())
    cases = {
        '{"type": "RECORD", "stream": "contacts"}': "needs `record`",
        schema + '\n{"type": "RECORD", "stream": "contacts", "record": "secret-ish"}': "object",
        '{"type": "SCHEMA", "stream": "s", "schema": {"properties": {"id": {"type": "wat"}}}}': (
            "not a valid JSON Schema"
        ),
        '{"type": "STATE"}': "needs `value`",
        '{"type": "NOPE"}': "unknown message type",
        "[1, 2]": "not a JSON object",
    }
    for text, expected in cases.items():
        result = run_target(base_config(sim, tmp_path), text + "\n", tmp_path)
        assert result.returncode == 3, text
        assert expected in result.stderr and "Traceback" not in result.stderr
        assert "secret-ish" not in result.stderr


def test_manual_import_window_pauses_then_delivers(sim: Simulator, tmp_path: Path) -> None:
    sim.schedule_import(0.0, 2.0)
    messages = [schema_msg()] + [record_msg(lead(i)) for i in range(10)] + [state_msg(10)]
    config = base_config(sim, tmp_path, overload_pause_s=1.0)
    started = time.monotonic()
    result = run_target(config, messages, tmp_path)
    assert result.returncode == 0, result.stderr
    assert sim.code_counts.get(109, 0) > 0
    assert len(sim.leads(campaign_id=41)) == 10 and result.rejects == []
    assert time.monotonic() - started >= 2.0
    assert result.states == [{"bookmarks": {"contacts": {"n": 10}}}]


def test_sdk_builtins_that_would_do_nothing_stop_the_run(sim: Simulator, tmp_path: Path) -> None:
    for name, value, hint in (
        ("load_method", "overwrite", "operation"),
        ("load_method", "upsert", "operation"),
        ("batch_size_rows", 500, "max_concurrency"),
    ):
        config = base_config(sim, tmp_path, **{name: value})
        result = run_target(config, [schema_msg(), record_msg(lead(1))], tmp_path)
        assert result.returncode == 2, (name, value)
        assert f"`{name}`" in result.stderr and hint in result.stderr
        assert "Traceback" not in result.stderr
        assert sim.lead_calls == 0
    default = base_config(sim, tmp_path, load_method="append-only")
    assert run_target(default, [schema_msg(), record_msg(lead(1))], tmp_path).returncode == 0


def test_malformed_activate_version_and_state_messages_name_the_line(
    sim: Simulator, tmp_path: Path
) -> None:
    schema = json.dumps(schema_msg())
    for bad, expected in (
        (
            '{"type": "ACTIVATE_VERSION", "stream": "contacts"}',
            "needs `version`",
        ),
        ('{"type": "ACTIVATE_VERSION", "version": 3}', "needs `stream`"),
        (
            '{"type": "ACTIVATE_VERSION", "stream": "contacts", "version": "three"}',
            "`version`",
        ),
        ('{"type": "STATE", "valu": {}}', "needs `value`"),
    ):
        result = run_target(base_config(sim, tmp_path), f"{schema}\n{bad}\n", tmp_path)
        assert result.returncode == 3, bad
        assert "line 2" in result.stderr and expected in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    good = f'{schema}\n{{"type": "ACTIVATE_VERSION", "stream": "contacts", "version": 3}}\n'
    assert run_target(base_config(sim, tmp_path), good, tmp_path).returncode == 0


@pytest.mark.parametrize("operation", ["insert", "upsert", "update"])
def test_a_record_sent_twice_in_one_input_costs_one_call(
    sim: Simulator, tmp_path: Path, operation: str
) -> None:
    """Two copies of a record wait one for the other (one lead); the second finds the PBX
    holding it already and settles as unchanged, without a call (insert: no false 112)."""
    if operation == "update":
        seed = base_config(sim, tmp_path, operation="insert", ledger_path=str(tmp_path / "x.db"))
        assert (
            run_target(
                seed, [schema_msg(), *[record_msg(lead(i)) for i in range(3)]], tmp_path
            ).returncode
            == 0
        )
    sim.reset_stats()
    twice = [record_msg(lead(i)) for i in range(3)] * 2
    messages = [schema_msg(), *twice, record_msg(lead(0, name="Renamed")), state_msg(7)]
    config = base_config(sim, tmp_path, operation=operation, fallback_disposition="Call Back")
    result = run_target(config, messages, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.states == [state_msg(7)["value"]]
    renamed_rejected = operation == "insert"  # insert mode never touches a lead that exists
    assert [(r["key"], r["code"]) for r in result.rejects] == (
        [("L00000", 112)] if renamed_rejected else []
    )
    writes = {x["external_id"]: x["writes"] for x in sim.leads(campaign_id=41)}
    once = 2 if operation == "update" else 1  # update: the seed run wrote them first
    assert writes["L00001"] == writes["L00002"] == once  # the second copy wrote nothing
    assert 112 not in sim.code_counts or renamed_rejected
    expected = "Lead 0" if renamed_rejected else "Renamed"
    assert sim.lead(41, "L00000")["fields"]["Name"] == expected


def test_a_streams_entry_no_input_stream_matches_is_named(sim: Simulator, tmp_path: Path) -> None:
    config = base_config(sim, tmp_path, streams={"Contacts": {"campaign_id": 41}})
    result = run_target(config, [schema_msg(), record_msg(lead(1)), state_msg(1)], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "setting `streams` names 'Contacts'" in result.stderr and "'contacts'" in result.stderr


def test_the_reject_budget_counts_records_only_and_the_report_says_why(
    sim: Simulator, tmp_path: Path
) -> None:
    """Closes and versions the watermark also numbers are no records: 2 rejected of 3 is more
    than half, however many ACTIVATE_VERSIONs come with them."""
    version = {"type": "ACTIVATE_VERSION", "stream": "contacts", "version": 1}
    messages = [schema_msg(), version, record_msg(lead(1, phone="not a phone"))]
    messages += [record_msg(lead(2, phone="nor this")), record_msg(lead(3)), version, version]
    report = tmp_path / "report.json"
    config = base_config(
        sim,
        tmp_path,
        max_reject_ratio=0.5,
        mirror=True,
        close_disposition="Call Back",
        report_file=str(report),
    )
    result = run_target(config, [*messages, state_msg(3)], tmp_path)
    assert result.returncode == 1, result.stderr
    assert "2 of 3 records rejected" in result.stderr
    assert "2 of 3 records rejected" in json.loads(report.read_text())["error"]


def test_redeliveries_rejected_again_do_not_count_against_the_reject_budget(
    sim: Simulator, tmp_path: Path
) -> None:
    dnc = [record_msg(lead(i, phone="0390000000")) for i in range(3)]  # on the DNC list: 104
    config = base_config(sim, tmp_path, fallback_disposition="Call Back")
    assert run_target(config, [schema_msg(), *dnc], tmp_path).returncode == 0
    nightly = {**config, "redeliver_after_s": {"104": 0}, "max_reject_ratio": 0.2}
    fresh = [record_msg(lead(i)) for i in range(10, 20)]
    result = run_target(nightly, [schema_msg(), *fresh, state_msg(10)], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "re-delivering 3" in result.stderr
    assert result.states == [state_msg(10)["value"]]
