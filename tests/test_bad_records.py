"""One bad record never stops a run: whatever the SDK cannot read is rejected with its reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from target_noojee.simulator import Simulator

from conftest import API_KEY, base_config, record_msg, run_target, state_msg

SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "name": {"type": ["string", "null"]},
        "phone": {"type": ["string", "null"]},
        "callback": {"type": ["string", "null"], "format": "date-time"},
        "birthday": {"type": ["string", "null"], "format": "date"},
        "priority": {"type": ["integer", "null"]},
        "score": {"type": ["number", "null"]},
        "vip": {"type": ["boolean", "null"]},
        "address": {"type": ["object", "null"], "properties": {"city": {"type": "string"}}},
        "tags": {"type": ["array", "null"], "items": {"type": "string"}},
    },
}
MAPPING = {
    "njExternalLeadId": "id",
    "Name": "name",
    "FirstPhone": "phone",
    "njCallBackDate": "callback",
    "njPriority": "priority",
    "City": "address.city",
    "Email": "tags",
}
FIELDS = [f for f in SCHEMA["properties"] if f != "id"]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.sampled_from(["next tuesday", "2026-13-45T99:00:00", "", "<No Change>", "0412345678"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
records = st.lists(
    st.fixed_dictionaries({}, optional={f: json_values for f in FIELDS}), min_size=1, max_size=8
)


def schema_message() -> dict[str, Any]:
    return {"type": "SCHEMA", "stream": "people", "schema": SCHEMA, "key_properties": ["id"]}


def config(sim: Simulator, tmp_path: Path) -> dict[str, Any]:
    return base_config(
        sim,
        tmp_path,
        mapping=MAPPING,
        fallback_disposition="Call Back",
        report_file=str(tmp_path / "report.json"),
    )


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=records)
def test_any_json_value_in_any_field_ends_delivered_or_rejected(
    sim: Simulator, tmp_path_factory: Any, batch: list[dict[str, Any]]
) -> None:
    tmp_path = tmp_path_factory.mktemp("run")
    messages: list[dict[str, Any]] = [schema_message()]
    for i, fields in enumerate(batch):
        messages.append(record_msg({"id": f"P{i}", **fields}, "people"))
    messages.append(state_msg(len(batch)))
    result = run_target(config(sim, tmp_path), messages, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert result.states == [state_msg(len(batch))["value"]]
    report = json.loads((tmp_path / "report.json").read_text())
    settled = report["streams"]["people"]
    delivered, rejected = settled["delivered"] + settled["unchanged"], settled["rejected"]
    assert delivered + rejected == len(batch), settled
    rejected_keys = {r["key"] for r in result.rejects}
    assert len(rejected_keys) == rejected
    for r in result.rejects:
        assert r["message"] and "\n" not in r["message"]


def test_an_unparseable_date_time_is_rejected_naming_the_field(
    sim: Simulator, tmp_path: Path
) -> None:
    messages = [
        schema_message(),
        record_msg({"id": "A", "phone": "0411111111", "callback": "next tuesday"}, "people"),
        record_msg(
            {"id": "B", "phone": "0422222222", "callback": "2026-11-24T01:30:00Z"}, "people"
        ),
        record_msg({"id": "C", "phone": "0433333333", "birthday": "31/02/1990"}, "people"),
        record_msg(  # a valid date-time before the bad date: the reason names the bad one
            {"id": "D", "phone": "0444444444", "callback": "2026-11-24T01:30:00Z", "birthday": "x"},
            "people",
        ),
        state_msg(3),
    ]
    result = run_target(config(sim, tmp_path), messages, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    reasons = {r["key"]: r["message"] for r in result.rejects}
    assert set(reasons) == {"A", "C", "D"}
    assert "`callback`" in reasons["A"] and "`birthday`" in reasons["C"]
    assert "`birthday`" in reasons["D"], reasons["D"]
    assert sim.lead(41, "B")["callback_date"] == "2026/11/24 12:30"
    assert result.states == [state_msg(3)["value"]]


def test_a_value_of_the_wrong_type_is_rejected_naming_the_field(
    sim: Simulator, tmp_path: Path
) -> None:
    messages = [
        schema_message(),
        record_msg({"id": "A", "phone": "0411111111", "priority": "high"}, "people"),
        record_msg({"id": "B", "phone": 412345678, "address": {"city": 7}}, "people"),
        record_msg({"id": "C", "phone": "0433333333"}, "people"),
    ]
    result = run_target(config(sim, tmp_path), messages, tmp_path)
    assert result.returncode == 0, result.stderr
    reasons = {r["key"]: r["message"] for r in result.rejects}
    assert set(reasons) == {"A", "B"}
    assert "`priority`" in reasons["A"]
    assert "`phone`" in reasons["B"] or "`address.city`" in reasons["B"]
    assert sim.lead(41, "C") is not None


def test_a_stream_map_that_fails_on_one_record_rejects_only_that_record(
    sim: Simulator, tmp_path: Path
) -> None:
    cfg = config(sim, tmp_path)
    cfg["stream_maps"] = {"people": {"name": "name + ' (' + phone + ')'"}}
    messages = [
        schema_message(),
        record_msg({"id": "A", "name": "Ann", "phone": None}, "people"),  # None + str fails
        record_msg({"id": "B", "name": "Bob", "phone": "0422222222"}, "people"),
        state_msg(2),
    ]
    result = run_target(cfg, messages, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert [r["key"] for r in result.rejects] == ["A"]
    assert result.rejects[0]["code"] == "local"
    assert sim.lead(41, "B")["fields"]["Name"] == "Bob (0422222222)"
    assert result.states == [state_msg(2)["value"]]
    assert API_KEY not in json.dumps(result.rejects)


def test_a_stream_map_that_fails_on_its_second_alias_rejects_the_record_there_only(
    sim: Simulator, tmp_path: Path
) -> None:
    """A tap stream split into two (`__source__`): the record reached the first alias's lead
    before the second alias's map raised; the second alias rejects it, the run goes on."""
    cfg = config(sim, tmp_path)
    cfg["stream_maps"] = {
        "people": {},
        "callers": {
            "__source__": "people",
            "id": "'C-' + id",
            "name": "name + ' (' + phone + ')'",
        },
    }
    cfg["allow_duplicates"] = True  # both aliases dial the same phone
    messages = [
        schema_message(),
        record_msg({"id": "A", "name": None, "phone": "0411111111"}, "people"),  # None + str
        record_msg({"id": "B", "name": "Bob", "phone": "0422222222"}, "people"),
        state_msg(2),
    ]
    result = run_target(cfg, messages, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert [(r["stream"], r["key"], r["code"]) for r in result.rejects] == [
        ("callers", "A", "local")
    ]
    assert sim.lead(41, "A")["fields"]["FirstPhone"] == "0411111111"
    assert sim.lead(41, "B")["fields"]["Name"] == "Bob"
    assert sim.lead(41, "C-B")["fields"]["Name"] == "Bob (0422222222)"
    assert sim.lead(41, "C-A") is None
    assert result.states == [state_msg(2)["value"]]


def test_a_cut_emoji_or_nan_in_a_rejected_record_is_written_as_valid_json(
    sim: Simulator, tmp_path: Path
) -> None:
    """A lone surrogate (an emoji cut in half by the source) cannot be UTF-8, NaN is not JSON:
    the reject line escapes them, the run goes on (it used to stop, on every run after)."""
    line = json.dumps(
        {
            "type": "RECORD",
            "stream": "people",
            "record": {"id": "A", "name": "cut \ud83d", "phone": "x"},
        }
    )
    nan = (
        '{"type": "RECORD", "stream": "people", "record": {"id": "B", "score": NaN, "phone": "y"}}'
    )
    stdin = "\n".join([json.dumps(schema_message()), line, nan, json.dumps(state_msg(2))]) + "\n"
    for dry_run in (False, True):
        cfg = {
            **config(sim, tmp_path),
            "dry_run": dry_run,
            "dry_run_file": str(tmp_path / "d.jsonl"),
        }
        result = run_target(cfg, stdin, tmp_path)
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        assert result.states == [state_msg(2)["value"]]
    names = {r["key"]: r for r in result.rejects}
    assert set(names) == {"A", "B"}


def test_older_taps_schemas_and_blank_dates_are_read_as_they_mean(
    sim: Simulator, tmp_path: Path
) -> None:
    """Draft 4's boolean exclusiveMaximum (singer-io / pipelinewise tap-postgres on numeric
    columns), key_properties as one string, and a blank date from a CSV tap."""
    schema = {
        "type": "SCHEMA",
        "stream": "people",
        "key_properties": "id",
        "schema": {
            "type": "object",
            "properties": {
                **SCHEMA["properties"],
                "amount": {
                    "type": ["null", "number"],
                    "exclusiveMaximum": True,
                    "maximum": 1000,
                    "exclusiveMinimum": False,
                    "minimum": 0,
                },
                "balance": {"type": ["null", "number"], "multipleOf": 0.01},  # numeric(10,2)
            },
        },
    }
    balances = [560.05, 0.07, 1.15, 12345.67]  # binary floats are no multiples of 0.01
    messages = [
        schema,
        record_msg({"id": "A", "phone": "0411111111", "amount": 1.5, "callback": ""}, "people"),
        record_msg({"id": "B", "phone": "0422222222", "amount": 1000}, "people"),  # exclusive
        *[
            record_msg({"id": f"M{i}", "phone": f"043333333{i}", "balance": b}, "people")
            for i, b in enumerate(balances)
        ],
        {"type": "STATE", "value": {"bookmark": 1.5, "n": 2}},
    ]
    result = run_target(config(sim, tmp_path), messages, tmp_path)
    assert result.returncode == 0, result.stderr
    assert sim.lead(41, "A") is not None
    assert [(r["key"], r["code"]) for r in result.rejects] == [("B", "local")]
    assert "`amount`" in result.rejects[0]["message"]
    assert all(sim.lead(41, f"M{i}") is not None for i in range(len(balances)))
    assert result.states == [{"bookmark": 1.5, "n": 2}]  # the tap's numbers, as it wrote them


def test_a_stream_map_that_fails_first_still_lets_the_other_alias_deliver(
    sim: Simulator, tmp_path: Path
) -> None:
    cfg = config(sim, tmp_path)
    cfg["stream_maps"] = {
        "people": {"name": "name + ' (' + phone + ')'"},  # fails on a null name
        "callers": {"__source__": "people", "id": "'D-' + id"},
    }
    cfg["allow_duplicates"] = True
    messages = [
        schema_message(),
        record_msg({"id": "Z", "name": None, "phone": "0411111111"}, "people"),
        state_msg(1),
    ]
    for _ in range(2):  # the second run: the same again, nothing swallowed as unchanged
        result = run_target(cfg, messages, tmp_path)
        assert result.returncode == 0, result.stderr
        assert sim.lead(41, "D-Z") is not None and sim.lead(41, "Z") is None
        assert result.states == [state_msg(1)["value"]]
    rejects = [(r["stream"], r["key"], r["code"]) for r in result.rejects]
    assert rejects == [("people", "Z", "local")] * 2
