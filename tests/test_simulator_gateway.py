"""noojee-sim's foreign answers: a gateway, WAF or proxy answering instead of the PBX."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from target_noojee.simulator import Simulator

from simfixtures import API_KEY, Api, code_of, running_sim

LEAD = {"njExternalLeadId": "G1", "FirstPhone": "0412000001"}
OTHER = {"njExternalLeadId": "G2", "FirstPhone": "0412000002"}


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with running_sim() as s:
        yield s


@pytest.fixture
def api(sim: Simulator) -> Iterator[Api]:
    client = Api(sim)
    yield client
    client.close()


def control(api: Api, body: dict[str, Any]) -> requests.Response:
    """POST /__admin/control."""
    return api.session.post(api.sim.url + "/__admin/control", params={"apiKey": API_KEY}, json=body)


def admin_state(api: Api) -> dict[str, Any]:
    """GET /__admin/state without the leads."""
    url = api.sim.url + "/__admin/state"
    result: dict[str, Any] = api.session.get(url, params={"apiKey": API_KEY, "leads": "0"}).json()
    return result


def test_default_page_is_html_and_echoes_the_api_key(sim: Simulator, api: Api) -> None:
    sim.set_gateway(400)
    r = api.update(LEAD)
    assert r.status_code == 400 and r.headers["Content-Type"] == "text/html"
    page = r.text
    assert page.startswith("<html>") and "<title>400 Bad Request</title>" in page
    assert f"apiKey={API_KEY}" in page
    assert "/servicemanager/rest/CampaignAPI/updateLeadFast?" in page and "fTemplateId=41" in page
    assert api.get("getCampaignTemplateList").status_code == 200  # lists pass by default
    # the store, the counts and the capacity never saw the call
    assert sim.leads() == [] and sim.code_counts == {} and sim.lead_calls == 0
    assert sim.peak_in_service == 0 and sim.gateway_answers == 1
    sim.clear_gateway()
    assert code_of(api.insert(LEAD)) == 0 and sim.code_counts == {0: 1}


@pytest.mark.parametrize(
    ("status", "content_type", "body"),
    [
        (400, "", ""),
        (400, "text/html", ""),
        (403, "application/json", '{"error":"blocked"}'),
        (502, "text/plain; charset=utf-8", "Bad Gateway \u2013 upstream down"),
    ],
)
def test_status_content_type_and_exact_body(
    sim: Simulator, api: Api, status: int, content_type: str, body: str
) -> None:
    sim.set_gateway(status, body=body, content_type=content_type)
    r = api.insert(LEAD)
    assert r.status_code == status and r.content == body.encode()
    assert r.headers.get("Content-Type") == (content_type or None)
    assert api.insert(OTHER).content == body.encode()  # the keep-alive connection stays in step
    assert sim.leads() == [] and sim.code_counts == {} and sim.gateway_answers == 2


def test_match_picks_calls_by_their_raw_body(sim: Simulator, api: Api) -> None:
    sim.set_gateway(403, body="no", content_type="text/plain", match='"G2"')
    assert code_of(api.insert(LEAD)) == 0
    r = api.insert(OTHER)
    assert r.status_code == 403 and r.text == "no"
    assert sim.lead(41, "G2") is None and sim.code_counts == {0: 1} and sim.gateway_answers == 1


def test_count_limits_the_answers_then_clears(sim: Simulator, api: Api) -> None:
    sim.set_gateway(503, body="busy", content_type="text/plain", count=2)
    assert [api.insert(LEAD).status_code for _ in range(2)] == [503, 503]
    assert admin_state(api)["gateway"] is None
    assert code_of(api.insert(LEAD)) == 0
    assert sim.gateway_answers == 2 and sim.code_counts == {0: 1}


def test_lists_too(sim: Simulator, api: Api) -> None:
    sim.set_gateway(400, lists=True)
    r = api.get("getCampaignList", fTemplateId=41)
    assert r.status_code == 400 and f"apiKey={API_KEY}" in r.text
    assert "getCampaignList?" in r.text and "fTemplateId=41" in r.text
    assert api.insert(LEAD).status_code == 400
    assert sim.list_calls == 0 and sim.lead_calls == 0 and sim.gateway_answers == 2
    sim.set_gateway(400, match="G1", lists=True)  # list calls have no body to match
    assert api.get("getCampaignTemplateList").status_code == 200


def test_gateway_answers_before_the_api_key_is_checked(sim: Simulator) -> None:
    sim.set_gateway(400)
    wrong = Api(sim, api_key="not-the-key")
    r = wrong.insert(LEAD)
    assert r.status_code == 400 and "apiKey=not-the-key" in r.text
    assert sim.code_counts == {}  # no 401 counted
    wrong.close()


def test_gateway_by_admin_control(sim: Simulator, api: Api) -> None:
    r = control(
        api,
        {
            "gateway": {
                "status": 403,
                "body": '{"error":"blocked"}',
                "content_type": "application/json",
                "count": 3,
            }
        },
    )
    assert r.status_code == 200
    r = api.update(LEAD)
    assert r.status_code == 403 and r.json() == {"error": "blocked"}
    state = admin_state(api)
    assert state["gateway_answers"] == 1 and state["code_counts"] == {}
    assert state["gateway"] == {
        "status": 403,
        "body": '{"error":"blocked"}',
        "content_type": "application/json",
        "match": None,
        "count": 2,
        "lists": False,
    }
    assert control(api, {"gateway": None}).status_code == 200  # the admin route is never blocked
    assert admin_state(api)["gateway"] is None
    assert code_of(api.insert(LEAD)) == 0
    assert control(api, {"reset_stats": True}).status_code == 200
    assert admin_state(api)["gateway_answers"] == 0


@pytest.mark.parametrize(
    "gateway",
    [
        {"body": "x"},
        {"status": "400"},
        {"status": 99},
        {"status": 400, "count": 0},
        {"status": 400, "lists": "yes"},
        {"status": 400, "content_type": "text/html\r\nX-Evil: 1"},
        {"status": 400, "colour": "red"},
        {"status": 204},
        "blocked",
    ],
)
def test_bad_gateway_control_is_400_and_changes_nothing(api: Api, gateway: Any) -> None:
    r = control(api, {"slots": 9, "gateway": gateway})
    assert r.status_code == 400
    state = admin_state(api)
    assert state["gateway"] is None and state["slots"] == 4


def test_set_gateway_checks_its_arguments(sim: Simulator) -> None:
    with pytest.raises(ValueError):
        sim.set_gateway(600)
    with pytest.raises(ValueError):
        sim.set_gateway(400, count=0)
    with pytest.raises(TypeError):
        sim.set_gateway(400, body=b"bytes")  # type: ignore[arg-type]
