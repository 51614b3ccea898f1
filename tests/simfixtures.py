"""Helpers for tests that talk to noojee-sim over loopback HTTP."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import requests

from target_noojee.simulator import DEFAULT_FIXTURE, Simulator

API_KEY = "test-key"
PREFIX = "/servicemanager/rest/CampaignAPI/"
IDS = {"fTemplateId": "41", "fCampaignId": "41", "fAllocationId": "38"}


def two_template_fixture() -> dict[str, Any]:
    """The default fixture plus template/campaign/allocation 50/50/60 and a few preloaded leads."""
    fx = copy.deepcopy(DEFAULT_FIXTURE)
    fx["templates"].append(
        {"id": 50, "name": "Mobiles", "fields": ["Name", "Mobile"], "phone_fields": ["Mobile"]}
    )
    fx["campaigns"].append({"id": 50, "name": "Mobile campaign", "template_id": 50})
    fx["allocations"].append({"id": 60, "name": "Mobile allocation", "campaign_id": 50})
    fx["leads"] = [
        {
            "campaign_id": 41,
            "external_id": "DIALED",
            "fields": {"Name": "Dee", "FirstPhone": "0411000001", "City": "Hobart"},
            "disposition": "No Sale",
            "allocation_id": 38,
        },
        {
            "campaign_id": 41,
            "external_id": "FRESH",
            "fields": {"Name": "Fay", "FirstPhone": "0411000002"},
            "allocation_id": 38,
        },
        {
            "campaign_id": 41,
            "external_id": "EDITED",
            "fields": {"Name": "Ed", "FirstPhone": "0411000003"},
            "disposition": "Call Back",
            "editing": True,
        },
    ]
    return fx


@contextlib.contextmanager
def running_sim(**kwargs: Any) -> Iterator[Simulator]:
    """A started Simulator (service_ms 0 unless given), stopped afterwards."""
    kwargs.setdefault("api_key", API_KEY)
    kwargs.setdefault("service_ms", 0)
    sim = Simulator(**kwargs).start()
    try:
        yield sim
    finally:
        sim.stop()


class Api:
    """A keep-alive client of one simulator, reading like the API's own table."""

    def __init__(self, sim: Simulator, api_key: str = API_KEY) -> None:
        self.sim = sim
        self.api_key = api_key
        self.session = requests.Session()

    def close(self) -> None:
        """Close the pooled connections."""
        self.session.close()

    def params(self, **overrides: Any) -> dict[str, str]:
        """apiKey plus the default ids; an override of None removes the parameter."""
        params = {"apiKey": self.api_key, **IDS}
        for key, value in overrides.items():
            if value is None:
                params.pop(key, None)
            else:
                params[key] = str(value)
        return params

    def insert(self, lead: Any, timeout: float = 10, **params: Any) -> requests.Response:
        """POST insertLeadFast."""
        return self.session.post(
            self.sim.url + PREFIX + "insertLeadFast",
            params=self.params(**params),
            json=lead,
            timeout=timeout,
        )

    def update(self, lead: Any, timeout: float = 10, **params: Any) -> requests.Response:
        """POST updateLeadFast."""
        return self.session.post(
            self.sim.url + PREFIX + "updateLeadFast",
            params=self.params(**params),
            json=lead,
            timeout=timeout,
        )

    def get(self, method: str, **params: Any) -> requests.Response:
        """GET a list endpoint; pass apiKey=None to leave the key out."""
        query = {"apiKey": self.api_key, **{k: str(v) for k, v in params.items()}}
        query = {k: v for k, v in query.items() if v != "None"}
        return self.session.get(self.sim.url + PREFIX + method, params=query, timeout=10)


def code_of(response: requests.Response) -> int:
    """The Noojee code of a reply."""
    return int(response.json()["code"])
