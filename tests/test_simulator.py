"""noojee-sim answers every row of the code table, the list endpoints and the admin route."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from target_noojee import codes
from target_noojee.simulator import Simulator

from simfixtures import API_KEY, PREFIX, Api, code_of, running_sim, two_template_fixture
from tlsfixtures import make_self_signed_cert, trust_cert

PHONE = "0412345678"


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with running_sim(fixture=two_template_fixture()) as s:
        yield s


@pytest.fixture
def api(sim: Simulator) -> Iterator[Api]:
    client = Api(sim)
    yield client
    client.close()


def assert_code(response: requests.Response, code: int) -> None:
    """The reply carries `code`, the table's name as message and the table's HTTP status."""
    row = codes.CODES[code]
    assert response.json() == {"code": code, "message": row.name}
    assert response.status_code == row.http_status


def lead(external_id: str = "A1", **fields: str) -> dict[str, str]:
    body = {"njExternalLeadId": external_id, "Name": "Alice", "FirstPhone": PHONE}
    body.update(fields)
    return body


# -- authentication and routes ----------------------------------------------------------------


@pytest.mark.parametrize("key", [None, "", "wrong"])
def test_missing_or_wrong_api_key_is_401(sim: Simulator, key: str | None) -> None:
    api = Api(sim, api_key=key or "")
    params = {} if key is None else {"apiKey": key}
    r = api.session.post(sim.url + PREFIX + "insertLeadFast", params={**params}, json=lead())
    assert r.status_code == 401
    r = api.session.get(sim.url + PREFIX + "getCampaignTemplateList", params=params)
    assert r.status_code == 401
    r = api.session.get(sim.url + "/__admin/state", params=params)
    assert r.status_code == 401
    assert sim.code_counts[401] == 3
    assert sim.leads() == sim.leads(41) and len(sim.leads(41)) == 3  # only the preloaded ones


def test_unknown_route_is_404_and_wrong_verb_405(sim: Simulator, api: Api) -> None:
    assert api.session.get(sim.url + PREFIX + "nope", params=api.params()).status_code == 404
    assert api.session.get(sim.url + "/other", params=api.params()).status_code == 404
    r = api.session.get(sim.url + PREFIX + "insertLeadFast", params=api.params())
    assert r.status_code == 405


# -- list endpoints ---------------------------------------------------------------------------


def test_list_endpoints(api: Api) -> None:
    r = api.get("getCampaignTemplateList")
    assert r.status_code == 200
    assert r.json()["code"] == 0 and r.json()["message"] == "OK"
    assert [e["id"] for e in r.json()["entities"]] == [41, 50]
    assert all(isinstance(e["name"], str) for e in r.json()["entities"])
    assert [e["id"] for e in api.get("getCampaignList", fTemplateId=41).json()["entities"]] == [41]
    assert [e["id"] for e in api.get("getCampaignList", fTemplateId=50).json()["entities"]] == [50]
    assert [e["id"] for e in api.get("getAllocationList", fCampaignId=41).json()["entities"]] == [
        38
    ]
    assert_code(api.get("getCampaignList", fTemplateId=99), 116)
    assert_code(api.get("getCampaignList"), 116)
    assert_code(api.get("getAllocationList", fCampaignId=99), 117)


def test_default_fixture_is_issue_2s() -> None:
    with running_sim() as s:
        api = Api(s)
        assert api.get("getCampaignTemplateList").json()["entities"][0]["id"] == 41
        fx = s.fixture
        assert fx.templates[41].fields == (
            "Name",
            "StreetAddress",
            "City",
            "State",
            "PostCode",
            "FirstPhone",
            "SecondPhone",
            "Email",
        )
        assert fx.templates[41].phone_fields == ("FirstPhone", "SecondPhone")
        assert fx.campaigns[41].template_id == 41 and fx.allocations[38].campaign_id == 41
        assert {"Sale", "No Sale", "Call Back"} <= fx.dispositions
        assert "Default" in fx.contact_hours and "0390000000" in fx.dnc
        assert_code(api.insert(lead()), 0)
        api.close()


# -- code 0 -----------------------------------------------------------------------------------


def test_insert_then_update_ok(sim: Simulator, api: Api) -> None:
    body = lead(
        njDisposition="Call Back",
        njCallBackDate="2030/01/31 09:30",
        njPriority="5",
        njContactHours="Default",
        SecondPhone="(03) 9555 1234",
    )
    assert_code(api.insert(body), 0)
    held = sim.lead(41, "A1")
    assert held is not None
    assert held["fields"] == {"Name": "Alice", "FirstPhone": PHONE, "SecondPhone": "(03) 9555 1234"}
    assert held["disposition"] == "Call Back" and held["writes"] == 1
    assert held["callback_date"] == "2030/01/31 09:30" and held["priority"] == 5
    assert held["allocation_id"] == 38 and held["contact_hours"] == "Default"

    assert_code(api.update(lead(Name="Alicia", City="Geelong", njDisposition="Sale")), 0)
    held = sim.lead(41, "A1")
    assert held is not None
    assert held["fields"]["Name"] == "Alicia" and held["fields"]["City"] == "Geelong"
    assert held["fields"]["SecondPhone"] == "(03) 9555 1234"  # not sent: kept
    assert held["disposition"] == "Sale" and held["writes"] == 2
    assert held["callback_date"] == "2030/01/31 09:30" and held["priority"] == 5
    assert sim.code_counts == {0: 2} and sim.lead_calls == 2 and sim.problems == []


# -- 101 .. 117 -------------------------------------------------------------------------------


def test_101_update_of_an_unknown_lead(api: Api) -> None:
    assert_code(api.update(lead("NOPE", njDisposition="Sale")), 101)


def test_101_lead_is_looked_up_in_the_call_campaign(api: Api) -> None:
    body = {"njExternalLeadId": "DIALED", "Mobile": PHONE, "njDisposition": "Sale"}
    assert_code(api.update(body, fTemplateId=50, fCampaignId=50, fAllocationId=60), 101)


@pytest.mark.parametrize(
    "body",
    [
        {"njExternalLeadId": "A1", "Name": "No phone"},
        {"njExternalLeadId": "A1", "FirstPhone": "", "SecondPhone": "  "},
        {"njExternalLeadId": "A1", "firstphone": PHONE},  # field names are case-sensitive
    ],
)
def test_102_insert_without_a_phone(api: Api, body: dict[str, str]) -> None:
    assert_code(api.insert(body), 102)


def test_102_update_without_any_phone_key(api: Api) -> None:
    assert_code(api.update({"njExternalLeadId": "DIALED", "njDisposition": "Sale"}), 102)
    # a <No Change> phone counts as present
    body = {"njExternalLeadId": "DIALED", "FirstPhone": codes.NO_CHANGE, "njDisposition": "Sale"}
    assert_code(api.update(body), 0)


def test_103_for_a_body_that_is_not_a_json_object(sim: Simulator, api: Api) -> None:
    r = api.session.post(
        sim.url + PREFIX + "insertLeadFast",
        params=api.params(),
        data=b"not json",
        headers={"Content-Type": "application/json"},
    )
    assert_code(r, 103)
    assert_code(api.insert(["a", "list"]), 103)
    assert len(sim.problems) == 2


@pytest.mark.parametrize("phone", ["0390000000", "03 9000 0000", "(03) 9000-0000"])
def test_104_insert_of_a_dnc_number(api: Api, phone: str) -> None:
    assert_code(api.insert(lead(SecondPhone=phone)), 104)


def test_104_update_to_a_dnc_number_and_dnc_changes(sim: Simulator, api: Api) -> None:
    body = {"njExternalLeadId": "DIALED", "FirstPhone": "0390000000", "njDisposition": "Sale"}
    assert_code(api.update(body), 104)
    sim.add_dnc("0400 111 222")
    assert_code(api.insert(lead(FirstPhone="0400111222")), 104)
    sim.remove_dnc("0400111222")
    assert_code(api.insert(lead(FirstPhone="0400111222")), 0)


def test_105_duplicate_phone_unless_allow_duplicates(sim: Simulator, api: Api) -> None:
    assert_code(api.insert(lead("A1")), 0)
    assert_code(api.insert(lead("A2", FirstPhone="0422222222", SecondPhone="0412 345 678")), 105)
    assert_code(api.insert(lead("A2"), allowDuplicates="false"), 105)
    assert_code(api.insert(lead("A2"), allowDuplicates="true"), 0)
    # another campaign may hold the same number
    other = {"njExternalLeadId": "A1", "Mobile": PHONE}
    assert_code(api.insert(other, fTemplateId=50, fCampaignId=50, fAllocationId=60), 0)
    assert len(sim.leads(41)) == 5 and len(sim.leads(50)) == 1


def test_105_update_to_a_phone_another_lead_holds(api: Api) -> None:
    body = {"njExternalLeadId": "DIALED", "FirstPhone": "0411000002", "njDisposition": "Sale"}
    assert_code(api.update(body), 105)
    # re-sending the lead's own phone is not a duplicate
    body["FirstPhone"] = "0411 000 001"
    assert_code(api.update(body), 0)


@pytest.mark.parametrize("disposition", ["Unknown", "", "sale"])
def test_106_unknown_disposition(api: Api, disposition: str) -> None:
    assert_code(api.insert(lead(njDisposition=disposition)), 106)
    body = {"njExternalLeadId": "DIALED", "FirstPhone": codes.NO_CHANGE}
    assert_code(api.update({**body, "njDisposition": disposition}), 106)


def test_107_no_change_disposition_on_a_never_dialed_lead(sim: Simulator, api: Api) -> None:
    body = {"njExternalLeadId": "FRESH", "FirstPhone": codes.NO_CHANGE}
    assert_code(api.update({**body, "njDisposition": codes.NO_CHANGE}), 107)
    assert_code(api.update(body), 107)  # no disposition at all is the same
    assert_code(api.update({**body, "njDisposition": "Sale"}), 0)
    assert_code(api.update({**body, "njDisposition": codes.NO_CHANGE}), 0)
    fresh = sim.lead(41, "FRESH")
    assert fresh is not None and fresh["disposition"] == "Sale" and fresh["writes"] == 2


def test_108_insert_with_no_change(sim: Simulator, api: Api) -> None:
    assert_code(api.insert(lead(City=codes.NO_CHANGE)), 108)
    assert_code(api.insert(lead(njDisposition=codes.NO_CHANGE)), 108)
    assert sim.lead(41, "A1") is None


def test_110_lead_being_edited(sim: Simulator, api: Api) -> None:
    body = {"njExternalLeadId": "EDITED", "FirstPhone": PHONE, "njDisposition": "Sale"}
    assert_code(api.update(body), 110)
    sim.set_editing(41, "EDITED", False)
    assert_code(api.update(body), 0)
    sim.set_editing(41, "EDITED", True)
    assert_code(api.update(body), 110)
    edited = sim.lead(41, "EDITED")
    assert edited is not None and edited["editing"] and edited["writes"] == 1


@pytest.mark.parametrize("hours", ["Nowhere", "", "default"])
def test_111_unknown_contact_hours(api: Api, hours: str) -> None:
    assert_code(api.insert(lead(njContactHours=hours)), 111)
    body = {"njExternalLeadId": "DIALED", "FirstPhone": PHONE, "njContactHours": hours}
    assert_code(api.update(body), 111)


def test_112_duplicate_external_id(api: Api) -> None:
    assert_code(api.insert(lead("A1")), 0)
    assert_code(api.insert(lead("A1", FirstPhone="0499999999")), 112)
    assert_code(api.insert(lead("DIALED", FirstPhone="0499999999")), 112)


@pytest.mark.parametrize("external_id", [None, "", "   "])
def test_113_update_without_external_id(api: Api, external_id: str | None) -> None:
    body: dict[str, Any] = {"FirstPhone": PHONE, "njDisposition": "Sale"}
    if external_id is not None:
        body["njExternalLeadId"] = external_id
    assert_code(api.update(body), 113)


@pytest.mark.parametrize(
    "date",
    [
        "2030-01-31 09:30",
        "2030/1/31 09:30",
        "2030/01/31 9:30",
        "2030/01/31",
        "2030/01/31 09:30:00",
        "2030/02/30 09:30",
        "2030/01/31 24:00",
        "31/01/2030 09:30",
        "",
    ],
)
def test_114_bad_callback_date(api: Api, date: str) -> None:
    assert_code(api.insert(lead(njCallBackDate=date)), 114)
    body = {"njExternalLeadId": "DIALED", "FirstPhone": PHONE, "njCallBackDate": date}
    assert_code(api.update(body), 114)


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"fTemplateId": None}, 116),
        ({"fTemplateId": "99"}, 116),
        ({"fTemplateId": "abc"}, 116),
        ({"fCampaignId": None}, 117),
        ({"fCampaignId": "99"}, 117),
        ({"fCampaignId": "50"}, 117),  # a campaign of another template
        ({"fAllocationId": None}, 115),
        ({"fAllocationId": "99"}, 115),
        ({"fAllocationId": "60"}, 115),  # an allocation of another campaign
        ({"fTemplateId": None, "fCampaignId": None, "fAllocationId": None}, 116),
        ({"fCampaignId": None, "fAllocationId": None}, 117),
    ],
)
def test_115_116_117_bad_ids(api: Api, params: dict[str, Any], code: int) -> None:
    assert_code(api.insert(lead(), **params), code)
    assert_code(api.update(lead("DIALED"), **params), code)


def test_ids_are_checked_before_the_body(api: Api) -> None:
    assert_code(api.insert({"Name": "no phone"}, fAllocationId=None), 115)
    assert_code(api.update({"Name": "no id"}, fTemplateId=None), 116)


# -- <No Change> and partial updates ----------------------------------------------------------


def test_no_change_keeps_every_field(sim: Simulator, api: Api) -> None:
    first = lead(
        City="Hobart",
        njDisposition="Call Back",
        njCallBackDate="2030/01/31 09:30",
        njPriority="20",
        njContactHours="Default",
    )
    assert_code(api.insert(first), 0)
    nc = codes.NO_CHANGE
    update = {key: nc for key in first if key != "njExternalLeadId"}
    update["njExternalLeadId"] = "A1"
    update["Email"] = "a@example.com"
    assert_code(api.update(update), 0)
    held = sim.lead(41, "A1")
    assert held is not None
    assert held["fields"] == {
        "Name": "Alice",
        "FirstPhone": PHONE,
        "City": "Hobart",
        "Email": "a@example.com",
    }
    assert held["disposition"] == "Call Back" and held["callback_date"] == "2030/01/31 09:30"
    assert held["priority"] == 20 and held["contact_hours"] == "Default"
    assert held["writes"] == 2


def test_update_can_blank_a_field(sim: Simulator, api: Api) -> None:
    body = {"njExternalLeadId": "DIALED", "FirstPhone": codes.NO_CHANGE, "City": ""}
    assert_code(api.update(body), 0)
    dialed = sim.lead(41, "DIALED")
    assert dialed is not None and dialed["fields"]["City"] == ""
    assert dialed["disposition"] == "No Sale"


# -- problems ---------------------------------------------------------------------------------


def test_problems_are_recorded_but_the_call_is_processed(sim: Simulator, api: Api) -> None:
    body: dict[str, Any] = lead(Colour="blue", njMystery="x")
    body["PostCode"] = 3000
    body["Email"] = None
    body["njPriority"] = "500"
    assert_code(api.insert(body), 0)
    held = sim.lead(41, "A1")
    assert held is not None
    assert held["fields"]["PostCode"] == "3000" and held["fields"]["Email"] == ""
    assert "Colour" not in held["fields"] and held["priority"] == 10
    problems = "\n".join(sim.problems)
    assert len(sim.problems) == 5
    for word in ("'Colour'", "'njMystery'", "'PostCode'", "'Email'", "njPriority"):
        assert word in problems
    sim.reset_stats()
    assert sim.problems == [] and sim.code_counts == {} and sim.lead_calls == 0


@pytest.mark.parametrize("priority", ["0", "100", "55"])
def test_priority_in_range_is_kept(sim: Simulator, api: Api, priority: str) -> None:
    assert_code(api.insert(lead(njPriority=priority)), 0)
    held = sim.lead(41, "A1")
    assert held is not None and held["priority"] == int(priority) and sim.problems == []


# -- admin route ------------------------------------------------------------------------------


def test_admin_state_and_control(sim: Simulator, api: Api) -> None:
    assert_code(api.insert(lead()), 0)
    state = api.session.get(sim.url + "/__admin/state", params={"apiKey": API_KEY}).json()
    assert state["code_counts"] == {"0": 1} and state["lead_calls"] == 1
    assert {d["external_id"] for d in state["leads"]} == {"A1", "DIALED", "FRESH", "EDITED"}
    assert state["peak_in_service"] == 1 and state["mean_queue_length"] == 0.0
    small = api.session.get(sim.url + "/__admin/state", params={"apiKey": API_KEY, "leads": "0"})
    assert "leads" not in small.json() and small.json()["lead_count"] == 4

    control = sim.url + "/__admin/control"
    r = api.session.post(control, params={"apiKey": "wrong"}, json={"slots": 8})
    assert r.status_code == 401
    r = api.session.post(
        control,
        params={"apiKey": API_KEY},
        json={
            "slots": 8,
            "service_ms": 1,
            "fault_rate": 0,
            "drop_rate": 0,
            "dnc_add": "0499 000 111",
            "editing": {"campaign_id": 41, "external_id": "A1", "on": True},
            "reset_stats": True,
        },
    )
    assert r.status_code == 200 and r.json() == {"code": 0, "message": "OK"}
    state = api.session.get(sim.url + "/__admin/state", params={"apiKey": API_KEY}).json()
    assert state["slots"] == 8 and state["service_ms"] == 1 and state["code_counts"] == {}
    assert_code(api.insert(lead("A2", FirstPhone="0499000111")), 104)
    assert_code(api.update(lead("A1", njDisposition="Sale")), 110)
    r = api.session.post(control, params={"apiKey": API_KEY}, json={"dnc_remove": ["0499000111"]})
    assert r.status_code == 200
    assert_code(api.insert(lead("A2", FirstPhone="0499000111")), 0)

    r = api.session.post(control, params={"apiKey": API_KEY}, json={"bogus": 1})
    assert r.status_code == 400
    r = api.session.post(control, params={"apiKey": API_KEY}, json={"outage": "sideways"})
    assert r.status_code == 400


def test_fixture_from_a_json_file(tmp_path: Any) -> None:
    import json

    path = tmp_path / "fixture.json"
    path.write_text(json.dumps(two_template_fixture()))
    with running_sim(fixture=str(path)) as s:
        assert s.lead(41, "DIALED") is not None
        assert [lead["external_id"] for lead in s.leads(50)] == []


def test_bad_fixture_is_rejected() -> None:
    bad = two_template_fixture()
    bad["campaigns"].append({"id": 7, "template_id": 999})
    with pytest.raises(ValueError, match="unknown template"):
        Simulator(api_key=API_KEY, fixture=bad)


def test_chunked_body_keeps_the_connection_in_step(sim: Simulator, api: Api) -> None:
    import json

    def chunks() -> Iterator[bytes]:
        yield json.dumps(lead("CH1"))[:10].encode()
        yield json.dumps(lead("CH1"))[10:].encode()

    r = api.session.post(sim.url + PREFIX + "insertLeadFast", params=api.params(), data=chunks())
    assert_code(r, 0)
    assert_code(api.insert(lead("CH2", FirstPhone="0455555555")), 0)


# -- early builds: njExternalLeadId in the query string ---------------------------------------


def test_id_in_query_ignores_the_body_id() -> None:
    with running_sim(fixture=two_template_fixture(), id_in_query=True) as s:
        api = Api(s)
        update = {"FirstPhone": "0411000009", "njDisposition": "Sale"}
        assert_code(api.update({**update, "njExternalLeadId": "DIALED"}), 113)  # body only
        # a body id that differs from the query's is not used: the query's lead is updated
        r = api.update({**update, "njExternalLeadId": "FRESH"}, njExternalLeadId="DIALED")
        assert_code(r, 0)
        dialed, fresh = s.lead(41, "DIALED"), s.lead(41, "FRESH")
        assert dialed is not None and dialed["writes"] == 1 and dialed["disposition"] == "Sale"
        assert dialed["fields"]["FirstPhone"] == "0411000009"
        assert fresh is not None and fresh["writes"] == 0
        assert_code(api.update(update, njExternalLeadId="NOPE"), 101)
        assert_code(api.insert(lead("Q1")), 0)  # insertLeadFast still reads the body
        state = api.session.get(s.url + "/__admin/state", params={"apiKey": API_KEY}).json()
        assert state["id_in_query"] is True
        api.close()


def test_without_id_in_query_the_query_id_is_ignored(sim: Simulator, api: Api) -> None:
    update = {"FirstPhone": "0411000009", "njDisposition": "Sale"}
    assert_code(api.update(update, njExternalLeadId="DIALED"), 113)
    assert_code(api.update({**update, "njExternalLeadId": "FRESH"}, njExternalLeadId="DIALED"), 0)
    fresh, dialed = sim.lead(41, "FRESH"), sim.lead(41, "DIALED")
    assert fresh is not None and fresh["writes"] == 1
    assert dialed is not None and dialed["writes"] == 0


def test_id_in_query_by_admin_control(sim: Simulator, api: Api) -> None:
    control = sim.url + "/__admin/control"
    assert (
        api.session.post(control, params={"apiKey": API_KEY}, json={"id_in_query": 1}).status_code
        == 400
    )
    r = api.session.post(control, params={"apiKey": API_KEY}, json={"id_in_query": True})
    assert r.status_code == 200
    update = {"FirstPhone": "0411000009", "njDisposition": "Sale", "njExternalLeadId": "DIALED"}
    assert_code(api.update(update), 113)
    sim.set_id_in_query(False)
    assert_code(api.update(update), 0)
    assert sim.state(include_leads=False)["id_in_query"] is False


# -- TLS --------------------------------------------------------------------------------------


def test_tls_serves_https_with_the_given_cert(tmp_path: Path) -> None:
    cert, key = make_self_signed_cert(tmp_path)
    with running_sim(tls_cert=cert, tls_key=str(key)) as s:
        assert s.url == f"https://127.0.0.1:{s.port}"
        api = Api(s)
        trust_cert(api.session, cert)
        r = api.get("getCampaignTemplateList")
        assert r.status_code == 200 and r.json()["code"] == 0
        assert code_of(api.insert(lead())) == 0 and s.lead(41, "A1") is not None
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(
                s.url + PREFIX + "getCampaignTemplateList",
                params={"apiKey": API_KEY},
                verify=True,
                timeout=5,
            )
        assert api.get("getCampaignTemplateList").status_code == 200
        api.close()


def test_tls_needs_cert_and_key_together(tmp_path: Path) -> None:
    cert, key = make_self_signed_cert(tmp_path)
    with pytest.raises(ValueError, match="together"):
        Simulator(api_key=API_KEY, tls_cert=cert)
    with pytest.raises(ValueError, match="together"):
        Simulator(api_key=API_KEY, tls_key=key)
    with pytest.raises(OSError):
        Simulator(api_key=API_KEY, tls_cert=tmp_path / "missing.pem", tls_key=key)
