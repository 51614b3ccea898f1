"""Preflight and noojee-list against noojee-sim over loopback: ids, key, reachability."""

from __future__ import annotations

import copy
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from target_noojee.client import NoojeeClient
from target_noojee.delivery import DeliveryStopped, Interrupted
from target_noojee.preflight import Preflight, PreflightError, pbx_host, preflight
from target_noojee.settings import ConfigError, resolve_stream_settings
from target_noojee.simulator import DEFAULT_FIXTURE, Simulator
from target_noojee.target import TargetNoojee

from conftest import (
    API_KEY,
    base_config,
    lead,
    pbx_config,
    record_msg,
    run_target,
    schema_msg,
)

WRONG_KEY = "wrong-key-0c1d2e3f4a5b"


def fixture() -> dict[str, Any]:
    """Templates 41 and 50; template 41 holds campaigns 41 and 42; 43 has no allocation."""
    fx = copy.deepcopy(DEFAULT_FIXTURE)
    fx["templates"].append(
        {"id": 50, "name": "Mobiles", "fields": ["Name", "Mobile"], "phone_fields": ["Mobile"]}
    )
    fx["campaigns"] += [
        {"id": 42, "name": "Renewals", "template_id": 41},
        {"id": 43, "name": "Empty", "template_id": 41},
        {"id": 50, "name": "Mobile campaign", "template_id": 50},
    ]
    fx["allocations"] += [
        {"id": 61, "name": "Renewals allocation", "campaign_id": 42},
        {"id": 62, "name": "Renewals overflow", "campaign_id": 42},
        {"id": 70, "name": "Mobile allocation", "campaign_id": 50},
    ]
    return fx


@pytest.fixture
def pbx() -> Iterator[Simulator]:
    with Simulator(api_key=API_KEY, slots=4, service_ms=0, fixture=fixture()) as simulator:
        yield simulator


def lanes(config: dict[str, Any], *streams: str) -> list[tuple[str, Any]]:
    return [(s, resolve_stream_settings(config, s)) for s in streams or ("contacts",)]


def check(config: dict[str, Any], *streams: str, max_wait_s: float = 5.0) -> None:
    client = NoojeeClient(config["base_url"], config["api_key"], timeout_s=5)
    try:
        preflight(client, config, lanes(config, *streams), max_wait_s=max_wait_s)
    finally:
        client.close()


def assert_safe(message: str, sim: Simulator) -> None:
    assert API_KEY not in message and WRONG_KEY not in message
    assert sim.url not in message and "http://" not in message and "apiKey" not in message


def test_right_ids_pass_and_each_is_checked_once(pbx: Simulator) -> None:
    config = pbx_config(pbx, streams={"renewals": {"campaign_id": 42, "allocation_id": 62}})
    client = NoojeeClient(pbx.url, API_KEY, timeout_s=5)
    check_once = Preflight(client, config, max_wait_s=5)
    check_once.check(lanes(config, "contacts", "renewals"))
    calls = pbx.list_calls
    assert calls == 4  # templates, campaigns of 41, allocations of 41 and of 42
    check_once.check(lanes(config, "contacts", "renewals", "other"))  # same ids: no call
    assert pbx.list_calls == calls
    mobile = pbx_config(pbx, template_id=50, campaign_id=50, allocation_id=70)
    check_once.check(lanes(mobile))
    assert pbx.list_calls == calls + 2  # the template list is cached
    client.close()


def test_wrong_template_names_the_setting_and_lists_the_valid_ones(pbx: Simulator) -> None:
    with pytest.raises(ConfigError) as caught:
        check(pbx_config(pbx, template_id=99))
    assert caught.value.setting == "template_id"
    message = str(caught.value)
    assert message.startswith("setting `template_id` is 99, not a campaign template on the PBX")
    assert message.endswith("valid: 41 (Default lead template), 50 (Mobiles)")
    assert_safe(message, pbx)


def test_wrong_campaign_lists_the_campaigns_of_its_template(pbx: Simulator) -> None:
    with pytest.raises(ConfigError) as caught:
        check(pbx_config(pbx, campaign_id=50))  # exists, but in template 50
    assert caught.value.setting == "campaign_id"
    assert str(caught.value) == (
        "setting `campaign_id` is 50, not a campaign of template 41 (stream 'contacts'); "
        "valid: 41 (Default campaign), 42 (Renewals), 43 (Empty)"
    )


def test_wrong_allocation_from_a_stream_override_names_the_stream(pbx: Simulator) -> None:
    config = pbx_config(pbx, streams={"renewals": {"campaign_id": 42, "allocation_id": 38}})
    check(config, "contacts")  # the top-level ids are right
    with pytest.raises(ConfigError) as caught:
        check(config, "contacts", "renewals")
    assert caught.value.setting == "streams.renewals.allocation_id"
    assert str(caught.value) == (
        "setting `streams.renewals.allocation_id` is 38, not an allocation of campaign 42 "
        "(stream 'renewals'); valid: 61 (Renewals allocation), 62 (Renewals overflow)"
    )


def test_a_campaign_without_allocations_says_so(pbx: Simulator) -> None:
    with pytest.raises(ConfigError) as caught:
        check(pbx_config(pbx, campaign_id=43, allocation_id=1))
    assert caught.value.setting == "allocation_id"
    assert str(caught.value).endswith("valid: none (the campaign has no allocations)")


def test_refused_key_names_api_key_and_never_shows_it(
    pbx: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    started = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        check(pbx_config(pbx, api_key=WRONG_KEY), max_wait_s=30)
    assert time.monotonic() - started < 5  # not retried: retrying cannot fix a key
    assert caught.value.setting == "api_key"
    message = str(caught.value)
    assert "`api_key`" in message and "HTTP 401" in message
    assert f"127.0.0.1:{pbx.port}" in message
    assert_safe(message, pbx)
    assert API_KEY not in caplog.text and WRONG_KEY not in caplog.text  # urllib3 DEBUG included


def test_wrong_base_url_is_a_config_error(pbx: Simulator) -> None:
    with pytest.raises(ConfigError) as caught:
        check(pbx_config(pbx, base_url=pbx.url + "/not-the-pbx"))
    assert caught.value.setting == "base_url" and "404" in str(caught.value)
    assert_safe(str(caught.value), pbx)
    with pytest.raises(ConfigError) as caught:
        pbx_host(f"pbx.example.com.au/?apiKey={API_KEY}")
    assert caught.value.setting == "base_url" and API_KEY not in str(caught.value)
    assert (
        pbx_host("https://user:pw@pbx.example.com.au:8443/x?apiKey=k") == "pbx.example.com.au:8443"
    )


def test_an_outage_within_the_bound_is_waited_out(
    pbx: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    pbx.set_outage("refuse")
    pbx.schedule_outage("refuse", 0.0, 1.5)  # already refusing: ends the outage in 1.5 s
    started = time.monotonic()
    check(pbx_config(pbx), max_wait_s=20)
    assert 1.0 < time.monotonic() - started < 15
    assert "does not answer (connection refused or unreachable)" in caplog.text
    assert API_KEY not in caplog.text


def test_connections_reset_are_retried_too(pbx: Simulator) -> None:
    pbx.set_outage("reset")
    pbx.schedule_outage("reset", 0.0, 1.0)
    check(pbx_config(pbx), max_wait_s=20)


def test_a_permanent_outage_fails_after_the_bound(pbx: Simulator) -> None:
    pbx.set_outage("refuse")
    started = time.monotonic()
    with pytest.raises(PreflightError) as caught:
        check(pbx_config(pbx), max_wait_s=1.0)
    elapsed = time.monotonic() - started
    assert 0.9 < elapsed < 5
    message = str(caught.value)
    assert message.startswith(f"cannot reach the PBX at 127.0.0.1:{pbx.port}: connection refused")
    assert "1 s" in message
    assert_safe(message, pbx)
    assert isinstance(caught.value, DeliveryStopped) and caught.value.setting is None  # exit 1


def test_the_bound_comes_from_the_config(pbx: Simulator) -> None:
    client = NoojeeClient(pbx.url, API_KEY)
    assert Preflight(client, pbx_config(pbx)).max_wait_s == 60
    assert Preflight(client, pbx_config(pbx, preflight_timeout_s=300)).max_wait_s == 300
    assert Preflight(client, pbx_config(pbx, max_retry_time_s=1800)).max_wait_s == 60
    short = pbx_config(pbx, max_retry_time_s=0.5)  # a record would give up sooner: so does this
    assert Preflight(client, short).max_wait_s == 0.5
    pbx.set_outage("refuse")
    with pytest.raises(PreflightError) as caught:
        Preflight(client, short).check(lanes(short))
    assert "still failing after 0.5 s; max_retry_time_s sets how long" in str(caught.value)
    client.close()


def test_a_stop_request_ends_the_wait_at_once(pbx: Simulator) -> None:
    pbx.set_outage("refuse")
    config = pbx_config(pbx)
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    client = NoojeeClient(pbx.url, API_KEY, timeout_s=5)
    started = time.monotonic()
    with pytest.raises(Interrupted):
        preflight(client, config, lanes(config), max_wait_s=30, should_stop=stop.is_set)
    assert time.monotonic() - started < 3
    client.close()


# --- the target runs it (once the wiring in pipeline.py / target.py is in place) -------------

WIRED = "preflight_timeout_s" in TargetNoojee.config_jsonschema["properties"]
needs_wiring = pytest.mark.skipif(not WIRED, reason="preflight is not wired into the target yet")


@needs_wiring
def test_the_target_stops_before_sending_with_a_wrong_campaign(
    pbx: Simulator, tmp_path: Path
) -> None:
    config = base_config(pbx, tmp_path, campaign_id=99)
    result = run_target(config, [schema_msg(), record_msg(lead(1))], tmp_path)
    assert result.returncode == 2, result.stderr
    assert "setting `campaign_id` is 99" in result.stderr
    assert "valid: 41 (Default campaign), 42 (Renewals), 43 (Empty)" in result.stderr
    assert pbx.lead_calls == 0


@needs_wiring
def test_the_target_fails_with_exit_1_when_the_pbx_stays_down(
    pbx: Simulator, tmp_path: Path
) -> None:
    pbx.set_outage("refuse")
    config = base_config(pbx, tmp_path, preflight_timeout_s=1)
    result = run_target(config, [schema_msg(), record_msg(lead(1))], tmp_path)
    assert result.returncode == 1, result.stderr
    assert f"cannot reach the PBX at 127.0.0.1:{pbx.port}" in result.stderr
    assert "http://" not in result.stderr


@needs_wiring
def test_a_dry_run_makes_no_call(pbx: Simulator, tmp_path: Path) -> None:
    config = base_config(
        pbx, tmp_path, campaign_id=99, dry_run=True, dry_run_file=str(tmp_path / "d.jsonl")
    )
    result = run_target(config, [schema_msg(), record_msg(lead(1))], tmp_path)
    assert result.returncode == 0, result.stderr
    assert pbx.list_calls == 0 and pbx.lead_calls == 0


# --- noojee-list ------------------------------------------------------------------------------


def list_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TARGET_NOOJEE_")}
    proc = subprocess.run(
        [sys.executable, "-m", "target_noojee.listing", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
        check=False,
    )
    assert API_KEY not in proc.stdout + proc.stderr
    assert WRONG_KEY not in proc.stdout + proc.stderr
    return proc


def write_config(tmp_path: Path, config: dict[str, Any]) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    return str(path)


def test_list_prints_the_tree(pbx: Simulator, tmp_path: Path) -> None:
    proc = list_cli("--config", write_config(tmp_path, pbx_config(pbx)))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        f"PBX 127.0.0.1:{pbx.port}: 2 template(s)",
        "template 41  Default lead template",
        "  campaign 41  Default campaign",
        "    allocation 38  Default allocation",
        "  campaign 42  Renewals",
        "    allocation 61  Renewals allocation",
        "    allocation 62  Renewals overflow",
        "  campaign 43  Empty",
        "    (no allocations)",
        "template 50  Mobiles",
        "  campaign 50  Mobile campaign",
        "    allocation 70  Mobile allocation",
    ]
    assert proc.stderr == ""


def test_list_as_json_with_the_key_from_the_environment(pbx: Simulator) -> None:
    proc = list_cli(
        "--base-url", pbx.url, "--format", "json", env={"TARGET_NOOJEE_API_KEY": API_KEY}
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["pbx"] == f"127.0.0.1:{pbx.port}"
    assert [t["id"] for t in data["templates"]] == [41, 50]
    renewals = data["templates"][0]["campaigns"][1]
    assert renewals == {
        "id": 42,
        "name": "Renewals",
        "allocations": [
            {"id": 61, "name": "Renewals allocation"},
            {"id": 62, "name": "Renewals overflow"},
        ],
    }


def test_list_flags_override_the_config(pbx: Simulator, tmp_path: Path) -> None:
    config = write_config(tmp_path, pbx_config(pbx, base_url="http://127.0.0.1:9"))
    proc = list_cli("--config", config, "--base-url", pbx.url, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    proc = list_cli("--config", config, "--base-url", pbx.url, "--api-key", WRONG_KEY)
    assert proc.returncode == 2


def test_list_refused_key_is_one_line_and_exit_2(pbx: Simulator, tmp_path: Path) -> None:
    proc = list_cli("--config", write_config(tmp_path, pbx_config(pbx, api_key=WRONG_KEY)))
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1 and "`api_key`" in proc.stderr


def test_list_unreachable_is_one_line_and_exit_1(pbx: Simulator, tmp_path: Path) -> None:
    pbx.set_outage("refuse")
    proc = list_cli("--config", write_config(tmp_path, pbx_config(pbx)), "--wait", "0.5")
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"noojee-list: cannot reach the PBX at 127.0.0.1:{pbx.port}: connection refused or "
        "unreachable (still failing after 0.5 s; --wait sets how long to wait)"
    ]


def test_list_config_problems_exit_2(tmp_path: Path) -> None:
    missing = list_cli("--base-url", "http://127.0.0.1:9")
    assert missing.returncode == 2 and "no API key" in missing.stderr
    no_pbx = list_cli(env={"TARGET_NOOJEE_API_KEY": API_KEY})
    assert no_pbx.returncode == 2 and "no PBX" in no_pbx.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    unreadable = list_cli("--config", str(bad))
    assert unreadable.returncode == 2 and "is not JSON (line 1" in unreadable.stderr
    scheme = list_cli("--base-url", "ftp://pbx", env={"TARGET_NOOJEE_API_KEY": API_KEY})
    assert scheme.returncode == 2 and "`base_url`" in scheme.stderr
