"""The lead ledger: skip unchanged leads, upsert in one call, survive kills, reject budget."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from target_noojee.ledger import SCHEMA_VERSION, Ledger, fingerprint, pbx_identity
from target_noojee.simulator import Simulator

from conftest import API_KEY, base_config, lead, record_msg, run_target, schema_msg, state_msg


def test_ledger_round_trip_and_key(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    ledger = Ledger(path, pbx_identity("https://PBX.example.com.au/"))
    ledger.record(41, "A1", "f1", "delivered", 0)
    ledger.record(41, "A1", "f2", "rejected", 104)
    ledger.record(42, "A1", "f3", "delivered")
    ledger.close()
    again = Ledger(path, "https://pbx.example.com.au")
    entry = again.get(41, "A1")
    assert entry is not None and (entry.fingerprint, entry.outcome, entry.code) == (
        "f2",
        "rejected",
        "104",
    )
    assert again.get(42, "A1").fingerprint == "f3"  # type: ignore[union-attr]
    assert Ledger(path, "https://other-pbx").get(41, "A1") is None
    assert again.count() == 2  # one row per lead


def test_fingerprint_ignores_field_order() -> None:
    assert fingerprint({"a": "1", "b": None}) == fingerprint({"b": None, "a": "1"})
    assert fingerprint({"a": "1"}) != fingerprint({"a": "2"})


def test_ledger_never_holds_the_key(sim: Simulator, tmp_path: Path) -> None:
    run_target(base_config(sim, tmp_path), [schema_msg(), record_msg(lead(1))], tmp_path)
    raw = (tmp_path / "ledger.sqlite").read_bytes()
    assert API_KEY.encode() not in raw
    rows = sqlite3.connect(tmp_path / "ledger.sqlite").execute("SELECT * FROM leads").fetchall()
    assert len(rows) == 1 and rows[0][0] == sim.url


def test_unchanged_second_run_makes_no_call_and_one_change_one_call(
    sim: Simulator, tmp_path: Path
) -> None:
    config = base_config(sim, tmp_path)
    batch = [schema_msg()] + [record_msg(lead(i, disposition="Call Back")) for i in range(30)]
    batch.append(state_msg(30))
    first = run_target(config, batch, tmp_path)
    assert first.returncode == 0
    assert sim.lead_calls == 30  # upsert of unknown leads: one insert each, no 101 first
    sim.reset_stats()
    second = run_target(config, batch, tmp_path)
    assert second.returncode == 0 and second.states == [{"bookmarks": {"contacts": {"n": 30}}}]
    assert sim.lead_calls == 0
    assert "unchanged=30" in second.stderr
    changed = list(batch)
    changed[5] = record_msg(lead(4, name="Moved house", disposition="Call Back"))
    third = run_target(config, changed, tmp_path)
    assert third.returncode == 0
    assert sim.lead_calls == 1 and sim.code_counts == {0: 1}  # known lead: one update
    held = {x["external_id"]: x for x in sim.leads(campaign_id=41)}
    assert held["L00004"]["fields"]["Name"] == "Moved house"
    assert held["L00004"]["writes"] == 2 and held["L00003"]["writes"] == 1


def test_full_resend_ignores_the_ledger(sim: Simulator, tmp_path: Path) -> None:
    config = base_config(sim, tmp_path)
    batch = [schema_msg()] + [record_msg(lead(i, disposition="Sale")) for i in range(5)]
    run_target(config, batch, tmp_path)
    sim.reset_stats()
    result = run_target({**config, "full_resend": True}, batch, tmp_path)
    assert result.returncode == 0 and sim.lead_calls == 5 and sim.code_counts == {0: 5}


def test_unchanged_rejected_lead_is_not_resent(sim: Simulator, tmp_path: Path) -> None:
    config = base_config(sim, tmp_path)
    batch = [schema_msg(), record_msg(lead(1, phone="0390000000"))]
    first = run_target(config, batch, tmp_path)
    assert [r["code"] for r in first.rejects] == [104]
    sim.reset_stats()
    second = run_target(config, batch, tmp_path)
    assert sim.lead_calls == 0 and len(second.rejects) == 1  # no second reject line either


def test_a_later_record_is_not_skipped_behind_an_earlier_one(
    sim: Simulator, tmp_path: Path
) -> None:
    config = base_config(sim, tmp_path)
    run_target(config, [schema_msg(), record_msg(lead(1, name="A"))], tmp_path)
    # B then A again within one run: A equals the ledger, but B is on its way, so A must follow.
    batch = [schema_msg(), record_msg(lead(1, name="B")), record_msg(lead(1, name="A"))]
    assert run_target(config, batch, tmp_path).returncode == 0
    assert sim.lead(41, "L00001")["fields"]["Name"] == "A"


def test_lost_update_replies_are_retried_harmlessly(tmp_path: Path) -> None:
    with Simulator(api_key=API_KEY, slots=4, service_ms=0) as sim:
        config = base_config(sim, tmp_path, fallback_disposition="Call Back")
        batch = [schema_msg()] + [record_msg(lead(i)) for i in range(20)]
        run_target(config, batch, tmp_path)
        sim.set_drop_rate(0.4)
        changed = [schema_msg()] + [record_msg(lead(i, name="v2")) for i in range(20)]
        # Retried until they land: at 40% loss one lead in a hundred loses six replies in a row,
        # whose jittered back-off alone can pass the default budget of this suite's config.
        patient = {**config, "operation": "update", "max_retry_time_s": 300}
        result = run_target(patient, changed, tmp_path)
        assert result.returncode == 0 and result.rejects == []
        assert {x["fields"]["Name"] for x in sim.leads(campaign_id=41)} == {"v2"}
        assert len(sim.leads(campaign_id=41)) == 20


def test_reject_budget_fails_the_run_after_forwarding_settled_state(
    sim: Simulator, tmp_path: Path
) -> None:
    batch = [schema_msg()]
    for i in range(20):
        batch.append(record_msg(lead(i, phone="nope" if i % 2 else f"04{i:08d}")))
        batch.append(state_msg(i + 1))
    result = run_target(base_config(sim, tmp_path, max_reject_ratio=0.2), batch, tmp_path)
    assert result.returncode == 1
    assert "max_reject_ratio" in result.stderr and "Traceback" not in result.stderr
    assert result.states[-1] == {"bookmarks": {"contacts": {"n": 20}}}
    assert len(result.rejects) == 10
    ok = run_target(base_config(sim, tmp_path, max_reject_ratio=0.6), batch, tmp_path)
    assert ok.returncode == 0


def test_reject_file_lines_carry_the_fingerprint(sim: Simulator, tmp_path: Path) -> None:
    result = run_target(
        base_config(sim, tmp_path),
        [schema_msg(), record_msg(lead(1, phone="0390000000"))],
        tmp_path,
    )
    (entry,) = result.rejects
    assert entry["fingerprint"] and entry["endpoint"] == "insertLeadFast"
    assert json.dumps(entry).count(API_KEY) == 0


V1_SCHEMA = """
CREATE TABLE leads (
    pbx TEXT NOT NULL, campaign_id INTEGER NOT NULL, external_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL, outcome TEXT NOT NULL, code TEXT, at REAL NOT NULL,
    PRIMARY KEY (pbx, campaign_id, external_id)
) WITHOUT ROWID
"""


def test_a_ledger_of_the_first_version_is_upgraded_in_place(sim: Simulator, tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    config = base_config(sim, tmp_path, ledger_path=str(path))
    messages = [schema_msg()] + [record_msg(lead(i)) for i in range(3)] + [state_msg(3)]
    assert run_target(config, messages, tmp_path).returncode == 0
    # Rewrite the file as the first version wrote it: its table, its columns, no version table.
    db = sqlite3.connect(path)
    rows = db.execute(
        "SELECT pbx, campaign_id, external_id, fingerprint, outcome, code, at FROM leads"
    ).fetchall()
    db.executescript("DROP TABLE leads; DROP TABLE versions; DROP TABLE schema_version;")
    db.execute(V1_SCHEMA)
    db.executemany("INSERT INTO leads VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    db.commit()
    db.close()
    sim.reset_stats()
    result = run_target(config, messages, tmp_path)
    assert result.returncode == 0, result.stderr
    assert sim.lead_calls == 0  # every lead still known, unchanged
    ledger = Ledger(path, pbx_identity(sim.url))
    assert ledger.schema_version == SCHEMA_VERSION
    entry = ledger.get(41, "L00001")
    assert entry is not None and entry.on_pbx and not entry.closed
    changed = [schema_msg(), record_msg(lead(1, name="Changed")), state_msg(4)]
    assert run_target(config, changed, tmp_path).returncode == 0
    assert sim.lead_calls == 1  # upsert: a known lead is one update


def test_a_second_run_of_the_same_stream_on_one_sqlite_ledger_stops(tmp_path: Path) -> None:
    from test_kill import feed_and_collect, start_target

    with Simulator(api_key=API_KEY, slots=1, service_ms=150) as sim:
        config = base_config(sim, tmp_path, concurrency=1, fallback_disposition="Call Back")
        first = start_target(config, tmp_path)
        messages = [schema_msg()] + [record_msg(lead(i)) for i in range(15)] + [state_msg(15)]
        states = feed_and_collect(first, messages)
        while sim.lead_calls < 1:
            time.sleep(0.02)
        other = tmp_path / "other"
        other.mkdir()
        second = run_target({**config, "lock_wait_s": 0.5}, messages, other)
        assert second.returncode == 1 and "lock_wait_s" in second.stderr
        assert first.wait(timeout=60) == 0
        states.finish()
        again = run_target(config, [schema_msg(), record_msg(lead(99))], other)
        assert again.returncode == 0  # the lock is gone with the run that held it


def test_an_early_sent_inserts_table_without_fingerprints_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    Ledger(path, "pbx").close()
    db = sqlite3.connect(path)
    db.executescript(
        "DROP TABLE sent_inserts; CREATE TABLE sent_inserts (pbx TEXT NOT NULL, campaign_id "
        "BIGINT NOT NULL, external_id TEXT NOT NULL, at DOUBLE PRECISION NOT NULL, "
        "PRIMARY KEY (pbx, campaign_id, external_id));"
        "INSERT INTO sent_inserts VALUES ('pbx', 41, 'L1', 1.0);"
    )
    db.commit()
    db.close()
    ledger = Ledger(path, "pbx")
    assert ledger.inserts_unsettled(41, ["L1"], before=2.0) == {"L1": ""}  # matches no lead
    ledger.insert_sent(41, "L2", "fp")
    assert ledger.inserts_unsettled(41, ["L2"], before=time.time() + 1) == {"L2": "fp"}
    ledger.close()
