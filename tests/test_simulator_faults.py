"""noojee-sim's faults: 103 rate, lost replies, outages, manual import, leads being edited."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import requests

from target_noojee.simulator import Simulator

from simfixtures import API_KEY, Api, code_of, running_sim
from tlsfixtures import make_self_signed_cert, trust_cert

LEAD = {"njExternalLeadId": "F1", "FirstPhone": "0412000001"}


def wait_until_up(api: Api, timeout: float = 3.0) -> requests.Response:
    """Retry a list call until the simulator answers again."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return api.get("getCampaignTemplateList")
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_fault_rate_answers_103_with_http_500() -> None:
    with running_sim(fault_rate=1.0) as sim:
        api = Api(sim)
        r = api.insert(LEAD)
        assert r.status_code == 500 and r.json() == {"code": 103, "message": "EXCEPTION"}
        assert sim.leads(41) == [] and sim.code_counts == {103: 1}
        assert api.get("getCampaignTemplateList").status_code == 200  # list calls never fault
        sim.set_fault_rate(0.0)
        assert code_of(api.insert(LEAD)) == 0
        api.close()


def test_seeded_faults_repeat() -> None:
    def run() -> list[int]:
        with running_sim(fault_rate=0.5, seed=7) as sim:
            api = Api(sim)
            leads = [{"njExternalLeadId": f"S{i}", "FirstPhone": f"04{i:08d}"} for i in range(20)]
            got = [code_of(api.insert(lead)) for lead in leads]
            api.close()
            return got

    first = run()
    assert first == run() and set(first) == {0, 103}


def test_dropped_reply_after_commit() -> None:
    with running_sim(drop_rate=1.0) as sim:
        api = Api(sim)
        with pytest.raises(requests.ConnectionError):
            api.insert(LEAD)
        held = sim.lead(41, "F1")
        assert held is not None and held["writes"] == 1
        assert sim.dropped == 1 and sim.code_counts == {0: 1}
        sim.set_drop_rate(0.0)
        assert code_of(api.insert(LEAD)) == 112  # the retry finds the lead committed
        api.close()


@pytest.mark.parametrize("mode", ["refuse", "reset"])
def test_outage_then_back_on_the_same_port(mode: str) -> None:
    with running_sim() as sim:
        api = Api(sim)
        port = sim.port
        assert code_of(api.insert(LEAD)) == 0  # a pooled keep-alive connection exists now
        sim.set_outage(mode)
        with pytest.raises(requests.ConnectionError):
            api.insert({**LEAD, "njExternalLeadId": "F2"})
        fresh = Api(sim)
        with pytest.raises(requests.ConnectionError):
            fresh.get("getCampaignTemplateList")
        sim.set_outage(None)
        assert sim.port == port
        assert wait_until_up(fresh).status_code == 200
        assert code_of(api.insert({**LEAD, "njExternalLeadId": "F3", "FirstPhone": "0499"})) == 0
        assert sim.lead(41, "F2") is None
        api.close()
        fresh.close()


def test_refused_connection_is_a_connection_refused() -> None:
    with running_sim() as sim:
        sim.set_outage("refuse")
        with pytest.raises(requests.ConnectionError) as info:
            requests.get(sim.url + "/__admin/state", params={"apiKey": API_KEY}, timeout=2)
        assert "refused" in str(info.value).lower()


def test_scheduled_outage_ends_by_itself() -> None:
    with running_sim() as sim:
        api = Api(sim)
        sim.schedule_outage("refuse", start_in_s=0.0, duration_s=0.4)
        time.sleep(0.15)
        with pytest.raises(requests.ConnectionError):
            api.get("getCampaignTemplateList")
        assert wait_until_up(api).status_code == 200
        api.close()


def test_admin_outage_with_duration() -> None:
    with running_sim() as sim:
        api = Api(sim)
        r = api.session.post(
            sim.url + "/__admin/control",
            params={"apiKey": API_KEY},
            json={"outage": "refuse", "outage_duration_s": 0.4},
        )
        assert r.status_code == 200  # the reply is sent before the outage starts
        time.sleep(0.15)
        with pytest.raises(requests.ConnectionError):
            api.get("getCampaignTemplateList")
        assert wait_until_up(api).status_code == 200
        r = api.session.post(
            sim.url + "/__admin/control", params={"apiKey": API_KEY}, json={"outage": "reset"}
        )
        assert r.status_code == 200
        with pytest.raises(requests.ConnectionError):
            api.get("getCampaignTemplateList")
        sim.set_outage(None)
        assert wait_until_up(api).status_code == 200
        api.close()


def test_manual_import_fails_lead_calls_with_109(sim_with_lead: Simulator) -> None:
    sim = sim_with_lead
    api = Api(sim)
    sim.set_import(True)
    r = api.insert(LEAD)
    assert r.status_code == 400 and r.json()["code"] == 109
    update = {"njExternalLeadId": "DIALED", "FirstPhone": "0400000009", "njDisposition": "Sale"}
    assert code_of(api.update(update)) == 109
    assert api.get("getCampaignTemplateList").status_code == 200
    sim.set_import(False)
    assert code_of(api.insert(LEAD)) == 0
    assert code_of(api.update(update)) == 0

    r = api.session.post(
        sim.url + "/__admin/control",
        params={"apiKey": API_KEY},
        json={"import": True, "import_duration_s": 0.3},
    )
    assert r.status_code == 200
    assert code_of(api.update(update)) == 109
    time.sleep(0.45)
    assert code_of(api.update(update)) == 0
    api.close()


def test_lead_being_edited_answers_110(sim_with_lead: Simulator) -> None:
    sim = sim_with_lead
    api = Api(sim)
    update = {"njExternalLeadId": "DIALED", "FirstPhone": "0400000009", "njDisposition": "Sale"}
    sim.set_editing(41, "DIALED", True)
    assert code_of(api.update(update)) == 110
    r = api.session.post(
        sim.url + "/__admin/control",
        params={"apiKey": API_KEY},
        json={"editing": {"campaign_id": 41, "external_id": "DIALED", "on": False}},
    )
    assert r.status_code == 200
    assert code_of(api.update(update)) == 0
    api.close()


@pytest.fixture
def sim_with_lead() -> object:
    fixture = {
        "templates": [
            {
                "id": 41,
                "name": "T",
                "fields": ["Name", "FirstPhone"],
                "phone_fields": ["FirstPhone"],
            }
        ],
        "campaigns": [{"id": 41, "template_id": 41}],
        "allocations": [{"id": 38, "campaign_id": 41}],
        "dispositions": ["Sale"],
        "contact_hours": ["Default"],
        "dnc": [],
        "leads": [
            {
                "campaign_id": 41,
                "external_id": "DIALED",
                "fields": {"FirstPhone": "0400000001"},
                "disposition": "Sale",
            }
        ],
    }
    with running_sim(fixture=fixture) as sim:
        yield sim


def test_stop_leaves_no_thread_or_socket_behind() -> None:
    import threading

    before = set(threading.enumerate())
    outcomes: list[object] = []

    def in_flight(api: Api) -> None:
        try:
            outcomes.append(code_of(api.insert(LEAD)))
        except requests.ConnectionError as exc:
            outcomes.append(exc)

    with running_sim(slots=1, service_ms=5000) as sim:
        api = Api(sim)
        assert api.get("getCampaignTemplateList").status_code == 200
        sim.schedule_outage("reset", 30, 30)
        caller = threading.Thread(target=in_flight, args=(Api(sim),))
        caller.start()
        while sim.in_service == 0:
            time.sleep(0.01)
        url = sim.url
        t0 = time.monotonic()
    assert time.monotonic() - t0 < 1.5  # stop cut the 5 s service short
    caller.join()
    assert len(outcomes) == 1 and sim.leads() == []
    before.add(caller)
    # the pooled connection was closed by the server; nothing answers on the port any more
    with pytest.raises(requests.ConnectionError):
        requests.get(url, timeout=1)
    deadline = time.monotonic() + 2
    while set(threading.enumerate()) - before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert set(threading.enumerate()) - before == set()
    api.close()


# -- the same over TLS ------------------------------------------------------------------------


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    return make_self_signed_cert(tmp_path)


@pytest.mark.parametrize("mode", ["refuse", "reset"])
def test_outage_over_tls_then_back(tls_files: tuple[Path, Path], mode: str) -> None:
    cert, key = tls_files
    with running_sim(tls_cert=cert, tls_key=key) as sim:
        api = Api(sim)
        trust_cert(api.session, cert)
        assert code_of(api.insert(LEAD)) == 0
        sim.set_outage(mode)
        with pytest.raises(requests.ConnectionError):
            api.insert({**LEAD, "njExternalLeadId": "F2"})
        sim.set_outage(None)
        assert wait_until_up(api).status_code == 200  # re-opened and wrapped again
        assert code_of(api.insert({**LEAD, "njExternalLeadId": "F3", "FirstPhone": "0499"})) == 0
        assert sim.url.startswith("https://")
        api.close()


def test_failed_handshakes_print_nothing(
    tls_files: tuple[Path, Path], capfd: pytest.CaptureFixture[str]
) -> None:
    cert, key = tls_files
    with running_sim(tls_cert=cert, tls_key=key) as sim:
        plain = sim.url.replace("https://", "http://")
        with pytest.raises(requests.ConnectionError):
            requests.get(plain + "/__admin/state", params={"apiKey": API_KEY}, timeout=5)
        untrusting = requests.Session()
        untrusting.trust_env = False
        with pytest.raises(requests.exceptions.SSLError):
            untrusting.get(sim.url + "/__admin/state", params={"apiKey": API_KEY}, timeout=5)
        with socket.create_connection(("127.0.0.1", sim.port), timeout=5) as raw:
            raw.sendall(b"\x16\x03\x01\x00\x05hello")  # a broken ClientHello
            raw.recv(1024)
        api = Api(sim)
        trust_cert(api.session, cert)
        assert api.get("getCampaignTemplateList").status_code == 200
        api.close()
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_a_silent_tls_client_blocks_no_one(tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    with running_sim(tls_cert=cert, tls_key=key) as sim:
        silent = socket.create_connection(("127.0.0.1", sim.port), timeout=5)  # never says hello
        api = Api(sim)
        trust_cert(api.session, cert)
        t0 = time.monotonic()
        assert api.get("getCampaignTemplateList").status_code == 200
        assert time.monotonic() - t0 < 2
        api.close()
        t0 = time.monotonic()
    assert time.monotonic() - t0 < 1.5  # stop cut the silent client's handshake short
    silent.close()
