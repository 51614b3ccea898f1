"""Answers that are not the CampaignAPI's (a gateway, a WAF, a PBX upgrade) never reject leads
wholesale: one lead's odd answer rejects that lead, a way that is blocked stops the run."""

from __future__ import annotations

import copy
from pathlib import Path

from target_noojee.simulator import DEFAULT_FIXTURE, Simulator

from conftest import API_KEY, base_config, lead, record_msg, run_target, schema_msg, state_msg

BLOCKED = (
    "<html><head><title>Request Rejected</title></head><body><h1>Blocked by WAF</h1></body></html>"
)


def leads_with_states(n: int) -> list[dict]:
    messages = [schema_msg()]
    for i in range(n):
        messages.append(record_msg(lead(i)))
        messages.append(state_msg(i + 1))
    return messages


def test_a_gateway_page_for_every_call_stops_the_run_and_rejects_nothing(
    sim: Simulator, tmp_path: Path
) -> None:
    sim.set_gateway(400)  # its default page quotes the request URL, apiKey included
    result = run_target(base_config(sim, tmp_path), leads_with_states(20), tmp_path)
    assert result.returncode == 1, result.stderr
    assert result.rejects == [] and result.states == []
    line = next(x for x in result.stderr.splitlines() if "could not be used" in x)
    assert "HTTP 400" in line and "text/html" in line
    assert "Request blocked" in line  # the first words of the page that answered
    assert "Traceback" not in result.stderr


def test_a_lead_that_trips_a_waf_rule_is_rejected_alone_and_sent_again_next_run(
    sim: Simulator, tmp_path: Path
) -> None:
    sim.set_gateway(400, body=BLOCKED, match='"Lead 7"')  # lead 7's name, in its body only
    messages = leads_with_states(12)
    result = run_target(base_config(sim, tmp_path), messages, tmp_path)
    assert result.returncode == 0, result.stderr
    assert [(r["key"], r["code"]) for r in result.rejects] == [("L00007", "foreign")]
    assert "Blocked by WAF" in result.rejects[0]["message"]
    assert len(sim.leads(campaign_id=41)) == 11
    assert result.states[-1] == state_msg(12)["value"]
    sim.clear_gateway()
    again = run_target(base_config(sim, tmp_path), messages, tmp_path)
    assert again.returncode == 0, again.stderr
    assert sim.lead(41, "L00007") is not None  # not taken as unchanged: sent again


def test_a_last_lead_that_trips_a_waf_rule_is_told_apart_from_a_blocked_way(
    sim: Simulator, tmp_path: Path
) -> None:
    sim.set_gateway(400, body=BLOCKED, match='"Lead 3"')
    # One call at a time, so the foreign answer is the last one: with two in flight a
    # CampaignAPI answer to lead 2 may come after it and decide it without the question.
    config = base_config(sim, tmp_path, concurrency=1)
    result = run_target(config, leads_with_states(4), tmp_path)
    assert result.returncode == 0, result.stderr
    assert [(r["key"], r["code"]) for r in result.rejects] == [("L00003", "foreign")]
    assert sim.code_counts.get(113, 0) >= 1  # the question asked: an update without a lead
    assert result.states[-1] == state_msg(4)["value"]


def test_empty_bodies_and_json_without_a_code_are_foreign_too(
    sim: Simulator, tmp_path: Path
) -> None:
    for body, content_type in (("", "text/plain"), ('{"error": "blocked"}', "application/json")):
        sim.set_gateway(400, body=body, content_type=content_type)
        result = run_target(base_config(sim, tmp_path), leads_with_states(5), tmp_path)
        assert result.returncode == 1, result.stderr
        assert result.rejects == [] and result.states == []
        assert "not the Noojee CampaignAPI" in result.stderr
    sim.clear_gateway()


def test_a_gateway_maintenance_page_is_retried_until_the_pbx_is_back(
    sim: Simulator, tmp_path: Path
) -> None:
    sim.set_gateway(503, body="<html><body>Down for maintenance</body></html>", count=6)
    result = run_target(base_config(sim, tmp_path), leads_with_states(5), tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.rejects == []
    assert len(sim.leads(campaign_id=41)) == 5


def test_an_undocumented_code_rejects_its_lead_and_too_many_stop_the_run(
    sim: Simulator, tmp_path: Path
) -> None:
    sim.set_gateway(
        400,
        body='{"code": 150, "message": "NEW_RULE"}',
        content_type="application/json",
        match='"Lead 2"',
    )
    result = run_target(base_config(sim, tmp_path), leads_with_states(5), tmp_path)
    assert result.returncode == 0, result.stderr
    assert [(r["key"], r["code"]) for r in result.rejects] == [("L00002", 150)]
    sim.clear_gateway()
    again = run_target(base_config(sim, tmp_path), leads_with_states(5), tmp_path)
    assert again.returncode == 0, again.stderr
    assert len(again.rejects) == 1  # the first run's line; nothing new
    assert sim.lead(41, "L00002") is not None  # sent again: an undocumented code is not final

    sim.set_gateway(
        400, body='{"code": 150, "message": "NEW_RULE"}', content_type="application/json"
    )
    many = run_target(base_config(sim, tmp_path), leads_with_states(40), tmp_path)
    assert many.returncode == 1
    assert "codes the vendor does not document" in many.stderr


def test_403_names_the_key_and_the_ip_whitelist(sim: Simulator, tmp_path: Path) -> None:
    sim.set_gateway(403, body="<html>Forbidden</html>", lists=True)
    result = run_target(base_config(sim, tmp_path), leads_with_states(2), tmp_path)
    assert result.returncode == 2
    assert "api_key" in result.stderr and "whitelist" in result.stderr
    assert result.states == []


def test_an_early_build_that_reads_the_lead_id_from_the_url_gets_updates(
    tmp_path: Path,
) -> None:
    with Simulator(api_key=API_KEY, service_ms=0, id_in_query=True) as sim:
        config = base_config(sim, tmp_path, fallback_disposition="Call Back")
        first = run_target(config, leads_with_states(5), tmp_path)
        assert first.returncode == 0, first.stderr
        changed = [schema_msg(), record_msg(lead(2, name="Renamed")), state_msg(1)]
        second = run_target(config, changed, tmp_path)
        assert second.returncode == 0, second.stderr
        assert second.rejects == []
        assert sim.lead(41, "L00002")["fields"]["Name"] == "Renamed"
        assert sim.code_counts.get(113, 0) == 0


def test_contact_hours_profiles_set_the_zone_of_the_callback_date(tmp_path: Path) -> None:
    fixture = copy.deepcopy(DEFAULT_FIXTURE)
    fixture["contact_hours"] = [*fixture["contact_hours"], "Perth"]
    with Simulator(api_key=API_KEY, service_ms=0, fixture=fixture) as sim:
        config = base_config(sim, tmp_path, contact_hours_timezones={"Perth": "Australia/Perth"})
        when = "2026-11-24T01:30:00Z"
        messages = [
            schema_msg(),
            record_msg(lead(1, callback=when, hours="Perth")),
            record_msg(lead(2, callback=when)),
            record_msg(lead(3, callback=when, hours="Business Hours")),
        ]
        result = run_target(config, messages, tmp_path)
        assert result.returncode == 0, result.stderr
        assert sim.lead(41, "L00001")["callback_date"] == "2026/11/24 09:30"
        assert sim.lead(41, "L00002")["callback_date"] == "2026/11/24 12:30"
        assert sim.lead(41, "L00003")["callback_date"] == "2026/11/24 12:30"
