"""What the simulated PBX is configured with: templates, campaigns, allocations and lookup lists.

A fixture is a JSON object::

    {
      "templates":   [{"id": 41, "name": "...", "fields": ["Name", ...], "phone_fields": [...]}],
      "campaigns":   [{"id": 41, "name": "...", "template_id": 41}],
      "allocations": [{"id": 38, "name": "...", "campaign_id": 41}],
      "dispositions": ["Sale", ...],
      "contact_hours": ["Default", ...],
      "dnc": ["0390000000", ...],
      "leads": [{"campaign_id": 41, "external_id": "A1", "fields": {...},
                 "disposition": "Sale", "allocation_id": 38, "editing": false}]
    }

`leads` is optional: leads the PBX already holds when the simulator starts (a lead with a
disposition has been dialed). `DEFAULT_FIXTURE` is the built-in default of issue 2.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_FIXTURE: dict[str, Any] = {
    "templates": [
        {
            "id": 41,
            "name": "Default lead template",
            "fields": [
                "Name",
                "StreetAddress",
                "City",
                "State",
                "PostCode",
                "FirstPhone",
                "SecondPhone",
                "Email",
            ],
            "phone_fields": ["FirstPhone", "SecondPhone"],
        }
    ],
    "campaigns": [{"id": 41, "name": "Default campaign", "template_id": 41}],
    "allocations": [{"id": 38, "name": "Default allocation", "campaign_id": 41}],
    "dispositions": [
        "Sale",
        "No Sale",
        "Call Back",
        "No Answer",
        "Busy",
        "Answering Machine",
        "Wrong Number",
        "Do Not Call",
    ],
    "contact_hours": ["Default", "Business Hours", "After Hours"],
    "dnc": ["0390000000"],
    "leads": [],
}


@dataclass(frozen=True)
class Template:
    """A campaign template: the lead fields it defines and which of them hold phone numbers."""

    id: int
    name: str
    fields: tuple[str, ...]
    phone_fields: tuple[str, ...]


@dataclass(frozen=True)
class Campaign:
    """A campaign, built on one template."""

    id: int
    name: str
    template_id: int


@dataclass(frozen=True)
class Allocation:
    """An allocation (a batch of leads) inside one campaign."""

    id: int
    name: str
    campaign_id: int


@dataclass(frozen=True)
class InitialLead:
    """A lead the PBX already holds at start-up."""

    campaign_id: int
    external_id: str
    fields: Mapping[str, str]
    disposition: str | None = None
    allocation_id: int | None = None
    editing: bool = False


@dataclass(frozen=True)
class Fixture:
    """The PBX's configuration, validated."""

    templates: Mapping[int, Template]
    campaigns: Mapping[int, Campaign]
    allocations: Mapping[int, Allocation]
    dispositions: frozenset[str]
    contact_hours: frozenset[str]
    dnc: tuple[str, ...]
    leads: tuple[InitialLead, ...] = field(default=())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fixture:
        """Build and check a fixture from its JSON form; ValueError on an inconsistent one."""
        try:
            templates = {
                int(t["id"]): Template(
                    id=int(t["id"]),
                    name=str(t.get("name", f"Template {t['id']}")),
                    fields=tuple(str(f) for f in t["fields"]),
                    phone_fields=tuple(str(f) for f in t["phone_fields"]),
                )
                for t in data.get("templates", [])
            }
            campaigns = {
                int(c["id"]): Campaign(
                    id=int(c["id"]),
                    name=str(c.get("name", f"Campaign {c['id']}")),
                    template_id=int(c["template_id"]),
                )
                for c in data.get("campaigns", [])
            }
            allocations = {
                int(a["id"]): Allocation(
                    id=int(a["id"]),
                    name=str(a.get("name", f"Allocation {a['id']}")),
                    campaign_id=int(a["campaign_id"]),
                )
                for a in data.get("allocations", [])
            }
            leads = tuple(
                InitialLead(
                    campaign_id=int(lead["campaign_id"]),
                    external_id=str(lead["external_id"]),
                    fields={str(k): str(v) for k, v in dict(lead.get("fields", {})).items()},
                    disposition=(
                        None if lead.get("disposition") is None else str(lead["disposition"])
                    ),
                    allocation_id=(
                        None if lead.get("allocation_id") is None else int(lead["allocation_id"])
                    ),
                    editing=bool(lead.get("editing", False)),
                )
                for lead in data.get("leads", [])
            )
            fixture = cls(
                templates=templates,
                campaigns=campaigns,
                allocations=allocations,
                dispositions=frozenset(str(d) for d in data.get("dispositions", [])),
                contact_hours=frozenset(str(h) for h in data.get("contact_hours", [])),
                dnc=tuple(str(n) for n in data.get("dnc", [])),
                leads=leads,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed simulator fixture: {exc!r}") from exc
        fixture._check()
        return fixture

    @classmethod
    def default(cls) -> Fixture:
        """The built-in default fixture (template 41, campaign 41, allocation 38)."""
        return cls.from_dict(copy.deepcopy(DEFAULT_FIXTURE))

    @classmethod
    def load(cls, path: str | Path) -> Fixture:
        """Read a fixture from a JSON file."""
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        if not isinstance(data, dict):
            raise ValueError(f"fixture {path}: the top level must be a JSON object")
        return cls.from_dict(data)

    def _check(self) -> None:
        for t in self.templates.values():
            missing = set(t.phone_fields) - set(t.fields)
            if missing:
                raise ValueError(f"template {t.id}: phone fields not among its fields: {missing}")
        for c in self.campaigns.values():
            if c.template_id not in self.templates:
                raise ValueError(f"campaign {c.id}: unknown template {c.template_id}")
        for a in self.allocations.values():
            if a.campaign_id not in self.campaigns:
                raise ValueError(f"allocation {a.id}: unknown campaign {a.campaign_id}")
        for lead in self.leads:
            if lead.campaign_id not in self.campaigns:
                raise ValueError(f"lead {lead.external_id}: unknown campaign {lead.campaign_id}")
            if lead.disposition is not None and lead.disposition not in self.dispositions:
                raise ValueError(
                    f"lead {lead.external_id}: unknown disposition {lead.disposition!r}"
                )


def coerce_fixture(value: Fixture | Mapping[str, Any] | str | Path | None) -> Fixture:
    """Accept a Fixture, its JSON form as a dict, a path to a JSON file, or None (the default)."""
    if value is None:
        return Fixture.default()
    if isinstance(value, Fixture):
        return value
    if isinstance(value, (str, Path)):
        return Fixture.load(value)
    return Fixture.from_dict(value)
