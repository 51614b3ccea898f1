"""The simulated PBX's lead store and the rules of insertLeadFast / updateLeadFast (no I/O).

Validation order (the first failing check decides the code; nothing is written unless all pass):

0. The body must be a JSON object, else 103 EXCEPTION (the PBX's JSON reader throws before the
   call is looked at); recorded as a problem.
1. Ids, in query order: 116 (fTemplateId missing, not an integer or unknown), 117 (fCampaignId
   missing/unknown or not a campaign of that template), 115 (fAllocationId missing/unknown or not
   an allocation of that campaign).
2. insertLeadFast: 108 any value is ``<No Change>`` -> 112 njExternalLeadId already in the campaign
   -> 102 no phone field of the template present with a non-blank value -> 104 a phone is on the
   DNC list -> 105 another lead of the campaign holds one of its phones (skipped with
   ``allowDuplicates=true``) -> 106 unknown njDisposition -> 111 unknown njContactHours -> 114
   njCallBackDate not exactly ``yyyy/MM/dd HH:mm`` (a real date and time).
3. updateLeadFast: 113 njExternalLeadId missing or blank -> 101 no such lead in the campaign ->
   110 the lead is being edited by a person -> 102 no phone-field key present at all (a
   ``<No Change>`` phone counts as present) -> 104 a supplied phone value is on the DNC list ->
   105 a phone the lead does not already hold belongs to another lead of the campaign (skipped with
   ``allowDuplicates=true``) -> 106 unknown njDisposition -> 107 njDisposition missing or
   ``<No Change>`` on a lead never dispositioned -> 111 -> 114 as on insert.

Documented choices where the vendor is silent:

* A present system field must be valid: an empty njDisposition is 106, an empty njContactHours is
  111, an empty njCallBackDate is 114. ``<No Change>`` keeps the current value of any field on
  update; a field not sent on update is also left as it is.
* njPriority that is not an integer in 0..100 is not rejected (no code exists for it): the call
  succeeds, the priority keeps its current value (10 on insert) and a problem is recorded.
* Things the real PBX would choke on are recorded as problems but the call is processed as the
  PBX would: a field that is neither in the template nor a system field is ignored (not stored);
  an unknown ``nj*`` system field is ignored; a non-string value is stored as its JSON text
  (``null`` as ``""``).
* Phone numbers (DNC and duplicates) are compared on their digits only; a value without digits
  never matches. An insert without njExternalLeadId is stored under an anonymous key and reported
  with ``external_id`` None.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from target_noojee import codes
from target_noojee.simulator.fixture import Fixture, InitialLead, Template

EXTERNAL_ID = "njExternalLeadId"
DISPOSITION = "njDisposition"
CALLBACK_DATE = "njCallBackDate"
PRIORITY = "njPriority"
CONTACT_HOURS = "njContactHours"
SYSTEM_FIELDS = frozenset({EXTERNAL_ID, DISPOSITION, CALLBACK_DATE, PRIORITY, CONTACT_HOURS})
DEFAULT_PRIORITY = 10

_NON_DIGITS = re.compile(r"[^0-9]")
_INTEGER = re.compile(r"^[0-9]+$")
_PRIORITY = re.compile(r"^-?[0-9]+$")
_CALLBACK = re.compile(r"^[0-9]{4}/[0-9]{2}/[0-9]{2} [0-9]{2}:[0-9]{2}$")

LeadKey = tuple[int, str]


def phone_digits(value: str) -> str:
    """The digits of a phone number, the only part the simulator compares."""
    return _NON_DIGITS.sub("", value)


def valid_callback_date(value: str) -> bool:
    """True when value is exactly ``yyyy/MM/dd HH:mm`` and names a real date and time."""
    if not _CALLBACK.match(value):
        return False
    try:
        datetime.strptime(value, codes.CALLBACK_DATE_FORMAT)
    except ValueError:
        return False
    return True


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    return json.dumps(value, separators=(",", ":"))


def _parse_id(value: str | None) -> int | None:
    if value is None or not _INTEGER.match(value):
        return None
    return int(value)


def _flag(value: str | None) -> bool:
    return value is not None and value.strip().lower() == "true"


@dataclass
class Lead:
    """One lead held by the PBX."""

    campaign_id: int
    external_id: str | None
    allocation_id: int | None
    fields: dict[str, str]
    disposition: str | None = None
    callback_date: str | None = None
    priority: int = DEFAULT_PRIORITY
    contact_hours: str | None = None
    writes: int = 0
    created: float = 0.0
    updated: float = 0.0
    history: list[str] = field(default_factory=list)  # dispositions set by calls, in order

    def as_dict(self, editing: bool = False) -> dict[str, Any]:
        """A JSON-ready copy for inspection by tests and the admin route."""
        return {
            "campaign_id": self.campaign_id,
            "external_id": self.external_id,
            "allocation_id": self.allocation_id,
            "fields": dict(self.fields),
            "disposition": self.disposition,
            "callback_date": self.callback_date,
            "priority": self.priority,
            "contact_hours": self.contact_hours,
            "writes": self.writes,
            "dispositions": list(self.history),
            "editing": editing,
            "created": self.created,
            "updated": self.updated,
        }


@dataclass(frozen=True)
class Outcome:
    """The code a lead call gets, and what the real PBX would have choked on."""

    code: int
    problems: tuple[str, ...] = ()


@dataclass
class _Call:
    """One lead call being validated: its values as strings, and the problems found so far."""

    method: str
    template: Template
    campaign_id: int
    allocation_id: int
    raw: dict[str, str]
    values: dict[str, str]
    problems: list[str] = field(default_factory=list)

    def outcome(self, code: int) -> Outcome:
        return Outcome(code, tuple(self.problems))


class LeadStore:
    """Thread-safe lead store of one simulated PBX; each call is checked and applied atomically."""

    def __init__(self, fixture: Fixture, clock: Callable[[], float] = time.time) -> None:
        self.fixture = fixture
        self._clock = clock
        self._lock = threading.Lock()
        self._leads: dict[LeadKey, Lead] = {}
        self._phones: dict[tuple[int, str], set[LeadKey]] = {}
        self._editing: set[LeadKey] = set()
        self._dnc: set[str] = {d for d in map(phone_digits, fixture.dnc) if d}
        self._anonymous = itertools.count(1)
        for lead in fixture.leads:
            self._preload(lead)

    # -- inspection -------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._leads)

    def leads(self, campaign_id: int | None = None) -> list[dict[str, Any]]:
        """All leads (of one campaign, or of all), in insertion order."""
        with self._lock:
            return [
                lead.as_dict(key in self._editing)
                for key, lead in self._leads.items()
                if campaign_id is None or key[0] == campaign_id
            ]

    def lead(self, campaign_id: int, external_id: str) -> dict[str, Any] | None:
        """One lead, or None."""
        key = (campaign_id, external_id)
        with self._lock:
            lead = self._leads.get(key)
            return None if lead is None else lead.as_dict(key in self._editing)

    # -- control ----------------------------------------------------------------------------

    def set_editing(self, campaign_id: int, external_id: str, on: bool) -> None:
        """Mark a lead as open in a person's editor (updates then answer 110)."""
        with self._lock:
            if on:
                self._editing.add((campaign_id, external_id))
            else:
                self._editing.discard((campaign_id, external_id))

    def add_dnc(self, number: str) -> None:
        """Put a number on the Do Not Call list."""
        digits = phone_digits(number)
        if digits:
            with self._lock:
                self._dnc.add(digits)

    def remove_dnc(self, number: str) -> None:
        """Take a number off the Do Not Call list."""
        with self._lock:
            self._dnc.discard(phone_digits(number))

    # -- the two lead calls -----------------------------------------------------------------

    def insert(self, query: Mapping[str, str], body: Any) -> Outcome:
        """insertLeadFast."""
        call = self._begin("insertLeadFast", query, body)
        if isinstance(call, Outcome):
            return call
        with self._lock:
            return self._insert(call, _flag(query.get("allowDuplicates")))

    def update(self, query: Mapping[str, str], body: Any) -> Outcome:
        """updateLeadFast."""
        call = self._begin("updateLeadFast", query, body)
        if isinstance(call, Outcome):
            return call
        with self._lock:
            return self._update(call, _flag(query.get("allowDuplicates")))

    # -- rules ------------------------------------------------------------------------------

    def _begin(self, method: str, query: Mapping[str, str], body: Any) -> _Call | Outcome:
        """Check the body's shape and the ids; turn the body into string values."""
        if not isinstance(body, dict):
            kind = type(body).__name__ if body is not None else "no JSON"
            return Outcome(codes.EXCEPTION, (f"{method}: body is not a JSON object ({kind})",))
        fx = self.fixture
        template_id = _parse_id(query.get("fTemplateId"))
        template = fx.templates.get(template_id) if template_id is not None else None
        if template is None:
            return Outcome(codes.TEMPLATE_ID_REQUIRED)
        campaign_id = _parse_id(query.get("fCampaignId"))
        campaign = fx.campaigns.get(campaign_id) if campaign_id is not None else None
        if campaign is None or campaign.template_id != template.id:
            return Outcome(codes.CAMPAIGN_ID_REQUIRED)
        allocation_id = _parse_id(query.get("fAllocationId"))
        allocation = fx.allocations.get(allocation_id) if allocation_id is not None else None
        if allocation is None or allocation.campaign_id != campaign.id:
            return Outcome(codes.ALLOCATION_ID_REQUIRED)

        ext = body.get(EXTERNAL_ID)
        where = f"{method} campaign {campaign.id} lead {ext if isinstance(ext, str) else '?'}"
        problems: list[str] = []
        raw: dict[str, str] = {}
        values: dict[str, str] = {}
        known = set(template.fields)
        for name, value in body.items():
            if not isinstance(value, str):
                problems.append(
                    f"{where}: field {name!r} has a non-string value ({type(value).__name__})"
                )
                value = _as_text(value)
            raw[name] = value
            if name in SYSTEM_FIELDS or name in known:
                values[name] = value
            elif name.startswith("nj"):
                problems.append(f"{where}: unknown system field {name!r} (ignored)")
            else:
                problems.append(f"{where}: field {name!r} is not in template {template.id}")
        return _Call(method, template, campaign.id, allocation.id, raw, values, problems)

    def _insert(self, call: _Call, allow_duplicates: bool) -> Outcome:
        values, template = call.values, call.template
        if any(v == codes.NO_CHANGE for v in call.raw.values()):
            return call.outcome(codes.IMPORT_BUT_NO_CHANGE)
        external_id = values.get(EXTERNAL_ID) or None
        if external_id is not None and (call.campaign_id, external_id) in self._leads:
            return call.outcome(codes.DUPLICATE_EXTERNAL_ID)
        phones = [
            values[f] for f in template.phone_fields if f in values and values[f].strip() != ""
        ]
        if not phones:
            return call.outcome(codes.NO_PHONE_FIELDS)
        digits = {d for d in map(phone_digits, phones) if d}
        if digits & self._dnc:
            return call.outcome(codes.DNC)
        if not allow_duplicates and any((call.campaign_id, d) in self._phones for d in digits):
            return call.outcome(codes.DUPLICATE)
        disposition = values.get(DISPOSITION)
        if disposition is not None and disposition not in self.fixture.dispositions:
            return call.outcome(codes.INVALID_DISPOSITION)
        code = self._check_hours_and_date(values)
        if code:
            return call.outcome(code)
        priority = self._priority(call, DEFAULT_PRIORITY)

        now = self._clock()
        key_id = external_id if external_id is not None else f"\0anonymous-{next(self._anonymous)}"
        lead = Lead(
            campaign_id=call.campaign_id,
            external_id=external_id,
            allocation_id=call.allocation_id,
            fields={f: values[f] for f in template.fields if f in values},
            disposition=disposition,
            callback_date=values.get(CALLBACK_DATE),
            priority=priority,
            contact_hours=values.get(CONTACT_HOURS),
            writes=1,
            created=now,
            updated=now,
            history=[disposition] if disposition is not None else [],
        )
        key = (call.campaign_id, key_id)
        self._leads[key] = lead
        self._index(key, lead, template)
        return call.outcome(codes.OK)

    def _update(self, call: _Call, allow_duplicates: bool) -> Outcome:
        values, template = call.values, call.template
        external_id = values.get(EXTERNAL_ID)
        if external_id is None or external_id.strip() == "":
            return call.outcome(codes.NO_EXTERNAL_ID)
        key = (call.campaign_id, external_id)
        lead = self._leads.get(key)
        if lead is None:
            return call.outcome(codes.COULDNT_FIND_THE_LEAD)
        if key in self._editing:
            return call.outcome(codes.CONFLICT)
        if not any(f in values for f in template.phone_fields):
            return call.outcome(codes.NO_PHONE_FIELDS)
        new_phones = [
            values[f] for f in template.phone_fields if f in values and values[f] != codes.NO_CHANGE
        ]
        digits = {d for d in map(phone_digits, new_phones) if d}
        if digits & self._dnc:
            return call.outcome(codes.DNC)
        if not allow_duplicates:
            held = self._phone_digits(lead, template)
            for d in digits - held:
                if self._phones.get((call.campaign_id, d), set()) - {key}:
                    return call.outcome(codes.DUPLICATE)
        disposition = values.get(DISPOSITION)
        kept = disposition is None or disposition == codes.NO_CHANGE
        if kept:
            if lead.disposition is None:
                return call.outcome(codes.NO_CHANGE_ON_UNSET_DISPOSITION)
            disposition = lead.disposition
        elif disposition not in self.fixture.dispositions:
            return call.outcome(codes.INVALID_DISPOSITION)
        code = self._check_hours_and_date(values)
        if code:
            return call.outcome(code)
        priority = self._priority(call, lead.priority)

        self._unindex(key, lead, template)
        for f in template.fields:
            value = values.get(f)
            if value is not None and value != codes.NO_CHANGE:
                lead.fields[f] = value
        lead.disposition = disposition
        if not kept and disposition is not None:
            lead.history.append(disposition)
        lead.priority = priority
        callback = values.get(CALLBACK_DATE)
        if callback is not None and callback != codes.NO_CHANGE:
            lead.callback_date = callback
        hours = values.get(CONTACT_HOURS)
        if hours is not None and hours != codes.NO_CHANGE:
            lead.contact_hours = hours
        lead.writes += 1
        lead.updated = self._clock()
        self._index(key, lead, template)
        return call.outcome(codes.OK)

    def _check_hours_and_date(self, values: Mapping[str, str]) -> int:
        hours = values.get(CONTACT_HOURS)
        if (
            hours is not None
            and hours != codes.NO_CHANGE
            and hours not in self.fixture.contact_hours
        ):
            return codes.INVALID_TIMEZONE
        callback = values.get(CALLBACK_DATE)
        if (
            callback is not None
            and callback != codes.NO_CHANGE
            and not valid_callback_date(callback)
        ):
            return codes.INVALID_CALLBACK_DATE
        return codes.OK

    @staticmethod
    def _priority(call: _Call, current: int) -> int:
        value = call.values.get(PRIORITY)
        if value is None or value == codes.NO_CHANGE:
            return current
        if _PRIORITY.match(value) and 0 <= int(value) <= 100:
            return int(value)
        call.problems.append(
            f"{call.method} campaign {call.campaign_id}: njPriority {value!r} is not an integer "
            f"in 0..100 (kept {current})"
        )
        return current

    # -- phone index ------------------------------------------------------------------------

    @staticmethod
    def _phone_digits(lead: Lead, template: Template) -> set[str]:
        values: Iterable[str] = (lead.fields.get(f, "") for f in template.phone_fields)
        return {d for d in map(phone_digits, values) if d}

    def _index(self, key: LeadKey, lead: Lead, template: Template) -> None:
        for d in self._phone_digits(lead, template):
            self._phones.setdefault((key[0], d), set()).add(key)

    def _unindex(self, key: LeadKey, lead: Lead, template: Template) -> None:
        for d in self._phone_digits(lead, template):
            holders = self._phones.get((key[0], d))
            if holders is not None:
                holders.discard(key)
                if not holders:
                    del self._phones[(key[0], d)]

    def _preload(self, initial: InitialLead) -> None:
        campaign = self.fixture.campaigns[initial.campaign_id]
        template = self.fixture.templates[campaign.template_id]
        now = self._clock()
        lead = Lead(
            campaign_id=initial.campaign_id,
            external_id=initial.external_id,
            allocation_id=initial.allocation_id,
            fields={f: v for f, v in initial.fields.items() if f in template.fields},
            disposition=initial.disposition,
            created=now,
            updated=now,
        )
        key = (initial.campaign_id, initial.external_id)
        self._leads[key] = lead
        self._index(key, lead, template)
        if initial.editing:
            self._editing.add(key)
