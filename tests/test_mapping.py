"""Unit tests for record -> lead mapping (target_noojee.mapping), with plain values."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from decimal import Decimal
from typing import Any

import pytest

from target_noojee.codes import NO_CHANGE
from target_noojee.mapping import (
    INSERT_ENDPOINT,
    UPDATE_ENDPOINT,
    LeadMapper,
    LocalRejection,
    extract,
)
from target_noojee.settings import LeadSettings

UTC = dt.timezone.utc
MAPPING = {
    "njExternalLeadId": "id",
    "Name": "name",
    "City": "address.city",
    "FirstPhone": "phone",
    "SecondPhone": "mobile",
    "njCallBackDate": "callback",
    "njPriority": "priority",
}


def mapper(
    mapping: dict[str, str] | None = None,
    operation: str = "update",
    phone_fields: tuple[str, ...] = ("FirstPhone", "SecondPhone"),
    **kwargs: Any,
) -> LeadMapper:
    settings = LeadSettings(
        template_id=41,
        campaign_id=7,
        allocation_id=3,
        operation=operation,
        mapping=MAPPING if mapping is None else mapping,
        phone_fields=phone_fields,
        **kwargs,
    )
    return LeadMapper(settings)


def record(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"id": "A-1", "phone": "0383218199"}
    base.update(fields)
    return base


def value_of(field: str, raw: Any, **kwargs: Any) -> str | None:
    """The converted value of one mapped field."""
    m = mapper({"njExternalLeadId": "id", "FirstPhone": "phone", field: "src"}, **kwargs)
    return m.values(record(src=raw))[field]


def rejection(m: LeadMapper, rec: dict[str, Any]) -> LocalRejection:
    with pytest.raises(LocalRejection) as info:
        m.values(rec)
    assert "\n" not in info.value.reason
    return info.value


# --------------------------------------------------------------------------------- extract


def test_extract_paths() -> None:
    rec = {"a": 1, "address": {"city": "Melbourne", "geo": {"lat": -37.8}}, "n": None}
    assert extract(rec, "a") == 1
    assert extract(rec, "address.city") == "Melbourne"
    assert extract(rec, "address.geo.lat") == -37.8
    assert extract(rec, "address") == {"city": "Melbourne", "geo": {"lat": -37.8}}
    assert extract(rec, "missing") is None
    assert extract(rec, "address.missing") is None
    assert extract(rec, "a.b") is None  # through a non-object
    assert extract(rec, "n.b") is None


def test_extract_literal_dotted_key_wins() -> None:
    rec = {"address.city": "literal", "address": {"city": "nested"}}
    assert extract(rec, "address.city") == "literal"
    deep = {"a": {"b.c": "literal", "b": {"c": "nested"}}}
    assert extract(deep, "a.b.c") == "literal"
    # a literal key that leads nowhere falls back to the nested reading
    rec2 = {"a.b": {"x": 1}, "a": {"b": {"c": 2}}}
    assert extract(rec2, "a.b.c") == 2
    # a literal key holding null still wins
    assert extract({"a.b": None, "a": {"b": 1}}, "a.b") is None


def test_extract_list_index() -> None:
    rec = {"phones": [{"number": "03 1"}, {"number": "04 2"}]}
    assert extract(rec, "phones.1.number") == "04 2"
    assert extract(rec, "phones.2.number") is None
    assert extract(rec, "phones.x") is None
    assert extract({"s": "abc"}, "s.0") is None


def test_mapper_uses_dotted_paths_and_ignores_unmapped_fields() -> None:
    m = mapper()
    rec = record(name="Ann", address={"city": "Geelong"}, extra="never sent", mobile=None)
    body = m.body(rec)
    assert body["City"] == "Geelong"
    assert "extra" not in body
    assert set(body) == set(MAPPING) | {"njDisposition"}


# ------------------------------------------------------------------------------ conversions


@pytest.mark.parametrize(
    ("raw", "sent"),
    [
        (42, "42"),
        (-3, "-3"),
        (42.0, "42"),
        (4.5, "4.5"),
        (0.1, "0.1"),
        (True, "true"),
        (False, "false"),
        (Decimal("42"), "42"),
        (Decimal("42.000"), "42"),
        (Decimal("4.50"), "4.5"),
        (Decimal("1E+2"), "100"),
        (Decimal("1.5E-7"), "0.00000015"),
        ("Ann", "Ann"),
        (" Ann ", " Ann "),  # strings are sent as they are
        (dt.date(2026, 11, 24), "2026-11-24"),
        (dt.datetime(2026, 11, 24, 12, 30), "2026-11-24T12:30:00"),
        (dt.datetime(2026, 11, 24, 1, 30, tzinfo=UTC), "2026-11-24T01:30:00+00:00"),
        ({"a": 1, "b": [1, "x"]}, '{"a":1,"b":[1,"x"]}'),
        ([1, 2], "[1,2]"),
        ({"price": Decimal("4.5"), "d": dt.date(2026, 1, 2)}, '{"price":4.5,"d":"2026-01-02"}'),
        ({"name": "Zoë"}, '{"name":"Zoë"}'),
    ],
)
def test_values_are_strings(raw: Any, sent: str) -> None:
    assert value_of("Notes", raw) == sent


@pytest.mark.parametrize("raw", [None, "", "   ", "<No Change>", " <No Change> "])
def test_missing_values(raw: Any) -> None:
    assert value_of("Notes", raw) is None


@pytest.mark.parametrize("raw", [float("nan"), float("inf"), Decimal("NaN")])
def test_non_finite_numbers_reject(raw: Any) -> None:
    m = mapper({"njExternalLeadId": "id", "FirstPhone": "phone", "Score": "s"})
    err = rejection(m, record(s=raw))
    assert err.reason.startswith("Score: not a finite number")


# ----------------------------------------------------------------------------------- phones


@pytest.mark.parametrize(
    ("raw", "sent"),
    [
        ("+61 3 8321 8199", "0383218199"),
        ("(03) 8321 8199", "0383218199"),
        ("0383218199", "0383218199"),
        ("03-8321-8199", "0383218199"),
        ("+61383218199", "0383218199"),
        ("0412 345 678", "0412345678"),
        ("+61 412 345 678", "0412345678"),
        ("1300 123 456", "1300123456"),
        ("13 11 14", "131114"),
        ("+44 20 7946 0958", "0011442079460958"),
        ("+1 650 253 0000", "001116502530000"),
        ("03 8321 8199 ext 123", "0383218199"),  # the extension is dropped
        (383218199, "0383218199"),  # an int lost its leading 0
        (61383218199, "0383218199"),
    ],
)
def test_phones_are_the_digits_an_au_dialer_dials(raw: Any, sent: str) -> None:
    assert value_of("FirstPhone", raw) == sent


def test_phone_region_other_than_au() -> None:
    assert value_of("FirstPhone", "+61 3 8321 8199", phone_region="GB") == "0061383218199"
    assert value_of("FirstPhone", "020 7946 0958", phone_region="GB") == "02079460958"


@pytest.mark.parametrize("raw", ["abc", "123", "+999 1234", True, "0383218199999999"])
def test_unparseable_phone_rejects(raw: Any) -> None:
    err = rejection(mapper(), record(phone=raw))
    assert err.reason.startswith("unparseable phone number in FirstPhone: ")


def test_unparseable_phone_message_and_lead() -> None:
    err = rejection(mapper(), record(phone="not a phone", name="Ann"))
    assert err.reason == "unparseable phone number in FirstPhone: 'not a phone'"
    assert err.lead["FirstPhone"] == "not a phone"  # the source value, for the reject file
    assert err.lead["Name"] == "Ann"
    assert err.lead["njExternalLeadId"] == "A-1"


def test_second_phone_checked_too() -> None:
    err = rejection(mapper(), record(mobile="xyz"))
    assert "SecondPhone" in err.reason


# --------------------------------------------------------------------------- njCallBackDate


@pytest.mark.parametrize(
    ("raw", "sent"),
    [
        ("2026-11-24T01:30:00Z", "2026/11/24 12:30"),  # AEDT, +11
        ("2026-11-24T01:30:00z", "2026/11/24 12:30"),
        ("2026-11-24T01:30:00+00:00", "2026/11/24 12:30"),
        ("2026-11-24T12:30:00+11:00", "2026/11/24 12:30"),
        ("2026-11-24T09:30:00+08:00", "2026/11/24 12:30"),
        ("2026-07-01T02:00:00Z", "2026/07/01 12:00"),  # AEST, +10
        ("2026-11-23T20:30:00-05:00", "2026/11/24 12:30"),  # date changes
        ("2026-11-24T12:30:00", "2026/11/24 12:30"),  # naive: local already
        ("2026-11-24 12:30", "2026/11/24 12:30"),
        ("2026-11-24T12:30:59.999", "2026/11/24 12:30"),  # truncated, not rounded
        ("2026-11-24", "2026/11/24 00:00"),
        ("2026/11/24 12:30", "2026/11/24 12:30"),  # already in the PBX's format
        (" 2026/11/24 12:30 ", "2026/11/24 12:30"),
        (dt.datetime(2026, 11, 24, 1, 30, tzinfo=UTC), "2026/11/24 12:30"),
        (dt.datetime(2026, 11, 24, 12, 30), "2026/11/24 12:30"),  # naive datetime
        (dt.datetime(2026, 11, 24, 12, 30, 45), "2026/11/24 12:30"),
        (dt.date(2026, 11, 24), "2026/11/24 00:00"),
    ],
)
def test_callback_dates_in_melbourne(raw: Any, sent: str) -> None:
    assert value_of("njCallBackDate", raw) == sent


@pytest.mark.parametrize(
    ("utc", "sent"),
    [
        # DST ends 2026-04-05 03:00 AEDT -> 02:00 AEST: 02:30 happens twice
        ("2026-04-04T15:30:00Z", "2026/04/05 02:30"),
        ("2026-04-04T16:30:00Z", "2026/04/05 02:30"),
        ("2026-04-04T17:30:00Z", "2026/04/05 03:30"),
        # DST starts 2026-10-04 02:00 AEST -> 03:00 AEDT: 02:xx never happens
        ("2026-10-03T15:59:00Z", "2026/10/04 01:59"),
        ("2026-10-03T16:00:00Z", "2026/10/04 03:00"),
    ],
)
def test_callback_dates_across_dst(utc: str, sent: str) -> None:
    assert value_of("njCallBackDate", utc) == sent


def test_callback_date_other_zones() -> None:
    perth = zoneinfo.ZoneInfo("Australia/Perth")
    assert value_of("njCallBackDate", "2026-11-24T01:30:00Z", timezone="Australia/Perth") == (
        "2026/11/24 09:30"
    )
    aware = dt.datetime(2026, 11, 24, 9, 30, tzinfo=perth)
    assert value_of("njCallBackDate", aware) == "2026/11/24 12:30"


@pytest.mark.parametrize("raw", ["", "  ", "<No Change>"])
def test_callback_date_missing(raw: str) -> None:
    assert value_of("njCallBackDate", raw) is None


@pytest.mark.parametrize(
    "raw",
    [
        "tomorrow",
        "2026/13/24 12:30",
        "2026/11/31 12:30",
        "24/11/2026 12:30",
        "2026-11-24T25:00:00",
        "2026-11-24T12:30:00+25:00",
        1795000000,
        17.5,
        {"date": "2026-11-24"},
        True,
        "0001-01-01T00:00:00+14:00",
    ],
)
def test_unparseable_callback_date_rejects(raw: Any) -> None:
    m = mapper()
    err = rejection(m, record(callback=raw))
    assert err.reason.startswith("unparseable njCallBackDate: ")


# ------------------------------------------------------------------------------- njPriority


@pytest.mark.parametrize(
    ("raw", "sent"),
    [
        (0, "0"),
        (10, "10"),
        (100, "100"),
        (5.0, "5"),
        (Decimal("7"), "7"),
        (Decimal("7.00"), "7"),
        ("10", "10"),
        (" 7 ", "7"),
        ("10.0", "10"),
        ("+5", "5"),
    ],
)
def test_priority(raw: Any, sent: str) -> None:
    assert value_of("njPriority", raw) == sent


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (101, "njPriority out of range 0-100: 101"),
        (-1, "njPriority out of range 0-100: -1"),
        ("150", "njPriority out of range 0-100: 150"),
        (4.5, "njPriority is not an integer: 4.5"),
        ("high", "njPriority is not an integer: 'high'"),
        ("1e2", "njPriority is not an integer: '1e2'"),
        (True, "njPriority is not an integer: True"),
        (float("nan"), "njPriority is not an integer: nan"),
        (Decimal("Infinity"), "njPriority is not an integer: Decimal('Infinity')"),
    ],
)
def test_bad_priority_rejects(raw: Any, reason: str) -> None:
    assert rejection(mapper(), record(priority=raw)).reason == reason


# --------------------------------------------------------------------------- built-in checks


@pytest.mark.parametrize("operation", ["update", "upsert"])
@pytest.mark.parametrize("missing", [None, "", "  "])
def test_external_id_required_for_update_and_upsert(operation: str, missing: Any) -> None:
    err = rejection(mapper(operation=operation), record(id=missing))
    assert err.reason == f"missing njExternalLeadId (operation {operation} needs it)"


def test_external_id_not_required_for_insert() -> None:
    m = mapper(operation="insert")
    assert m.body(record(id=None)) == {"FirstPhone": "0383218199"}


def test_insert_needs_a_phone_value() -> None:
    err = rejection(mapper(operation="insert"), record(phone=None, name="Ann"))
    assert err.reason == "no phone number: FirstPhone, SecondPhone all empty"
    assert err.lead == {"njExternalLeadId": "A-1", "Name": "Ann"}
    assert mapper(operation="insert").values(record(phone=None, mobile="0412345678"))


@pytest.mark.parametrize("operation", ["update", "upsert"])
def test_update_sends_null_phones_as_no_change(operation: str) -> None:
    body = mapper(operation=operation).body(record(phone=None))
    assert body["FirstPhone"] == NO_CHANGE
    assert body["SecondPhone"] == NO_CHANGE


def test_update_needs_a_mapped_phone_field() -> None:
    m = mapper({"njExternalLeadId": "id", "Name": "name"}, phone_fields=())
    assert rejection(m, record()).reason == "no phone field mapped (set phone_fields)"


def test_every_problem_is_reported() -> None:
    err = rejection(mapper(), record(id=None, phone="x", priority=500))
    assert err.reason == (
        "unparseable phone number in FirstPhone: 'x'; "
        "njPriority out of range 0-100: 500; "
        "missing njExternalLeadId (operation update needs it)"
    )
    assert err.lead["njPriority"] == "500"
    assert err.lead["njExternalLeadId"] == NO_CHANGE  # what update would have sent


def test_record_is_not_modified() -> None:
    rec = record(address={"city": "Geelong"}, callback="2026-11-24T01:30:00Z")
    copy = {k: (dict(v) if isinstance(v, dict) else v) for k, v in rec.items()}
    mapper().body(rec)
    assert rec == copy


# ----------------------------------------------------------------------------------- render


def test_render_update() -> None:
    m = mapper()
    values = m.values(record(name="Ann"))
    assert m.render(values, UPDATE_ENDPOINT) == {
        "njExternalLeadId": "A-1",
        "Name": "Ann",
        "City": NO_CHANGE,
        "FirstPhone": "0383218199",
        "SecondPhone": NO_CHANGE,
        "njCallBackDate": NO_CHANGE,
        "njPriority": NO_CHANGE,
        "njDisposition": NO_CHANGE,
    }


def test_render_insert() -> None:
    m = mapper(operation="insert")
    values = m.values(record(name="Ann"))
    assert m.render(values, INSERT_ENDPOINT) == {
        "njExternalLeadId": "A-1",
        "Name": "Ann",
        "FirstPhone": "0383218199",
    }


def test_render_same_values_for_both_endpoints_as_upsert_does() -> None:
    m = mapper(operation="upsert")
    values = m.values(record(priority=3))
    update = m.render(values, UPDATE_ENDPOINT)
    insert = m.render(values, INSERT_ENDPOINT)
    assert update["City"] == NO_CHANGE
    assert NO_CHANGE not in insert.values()
    assert insert == {"njExternalLeadId": "A-1", "FirstPhone": "0383218199", "njPriority": "3"}


def test_mapped_disposition() -> None:
    m = mapper({**MAPPING, "njDisposition": "dispo"})
    assert m.body(record(dispo="Callback"))["njDisposition"] == "Callback"
    assert m.body(record(dispo=None))["njDisposition"] == NO_CHANGE
    values = m.values(record(dispo=None))
    assert "njDisposition" not in m.render(values, INSERT_ENDPOINT)
    values = m.values(record(dispo="Sale"))
    assert m.render(values, INSERT_ENDPOINT)["njDisposition"] == "Sale"


def test_render_with_fallback_disposition_when_unmapped() -> None:
    m = mapper()
    values = m.values(record())
    retry = m.render({**values, "njDisposition": "New"}, UPDATE_ENDPOINT)
    assert retry["njDisposition"] == "New"


def test_render_sends_only_mapped_fields() -> None:
    m = mapper()
    values = {**m.values(record()), "Sneaky": "x"}
    assert "Sneaky" not in m.render(values, UPDATE_ENDPOINT)
    assert "Sneaky" not in m.render(values, INSERT_ENDPOINT)


def test_insert_never_carries_no_change() -> None:
    m = mapper(operation="insert")
    values = {**m.values(record()), "Name": NO_CHANGE}
    assert NO_CHANGE not in m.render(values, INSERT_ENDPOINT).values()


def test_render_unknown_endpoint() -> None:
    m = mapper()
    with pytest.raises(ValueError, match="updateLead"):
        m.render(m.values(record()), "updateLead")


def test_primary_endpoint() -> None:
    assert mapper(operation="update").primary_endpoint == UPDATE_ENDPOINT
    assert mapper(operation="upsert").primary_endpoint == UPDATE_ENDPOINT
    assert mapper(operation="insert").primary_endpoint == INSERT_ENDPOINT


# ------------------------------------------------------------------------------ lead_schema


def test_lead_schema_passes_and_fails() -> None:
    schema = {
        "type": "object",
        "properties": {"State": {"enum": ["VIC", "NSW", "<No Change>"]}},
    }
    m = mapper({**MAPPING, "State": "state"}, lead_schema=schema)
    assert m.body(record(state="VIC"))["State"] == "VIC"
    assert m.body(record(state=None))["State"] == NO_CHANGE
    err = rejection(m, record(state="Victoria", notes="x" * 5000))
    assert err.reason.startswith("lead_schema violation at State: 'Victoria' is not one of")
    assert len(err.reason) < 250
    assert err.lead["State"] == "Victoria"


def test_lead_schema_required_on_insert() -> None:
    schema = {"required": ["Name"]}
    m = mapper(operation="insert", lead_schema=schema)
    assert m.body(record(name="Ann"))["Name"] == "Ann"
    err = rejection(m, record(name=None))
    assert err.reason == "lead_schema violation at lead: 'Name' is a required property"


def test_lead_schema_pattern_names_the_field() -> None:
    schema = {"properties": {"FirstPhone": {"pattern": "^04"}}}
    m = mapper(operation="insert", lead_schema=schema)
    err = rejection(m, record(phone="(03) 8321 8199"))
    assert err.reason == "lead_schema violation at FirstPhone: '0383218199' does not match '^04'"


def test_lead_schema_format_is_checked() -> None:
    schema = {"properties": {"Email": {"format": "email"}}}
    m = mapper({**MAPPING, "Email": "email"}, operation="insert", lead_schema=schema)
    assert m.body(record(email="ann@example.com"))["Email"] == "ann@example.com"
    assert "Email" in rejection(m, record(email="not-an-email")).reason


def test_lead_schema_declared_draft() -> None:
    draft4 = {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "properties": {"Name": {"maxLength": 3}},
    }
    m = mapper(operation="insert", lead_schema=draft4)
    assert "Name" in rejection(m, record(name="Annabel")).reason


# ---------------------------------------------------------------------- contact-hours zones

PERTH_MAPPING = {**MAPPING, "njContactHours": "hours"}


@pytest.mark.parametrize(
    ("hours", "raw", "sent"),
    [
        ("Perth", "2026-11-24T01:30:00Z", "2026/11/24 09:30"),  # AWST, no daylight saving
        (" Perth ", "2026-11-24T01:30:00Z", "2026/11/24 09:30"),
        ("Perth", "2026-11-24T12:00:00+11:00", "2026/11/24 09:00"),
        ("Perth", "2026/11/24 09:30", "2026/11/24 09:30"),  # local to the profile already
        ("Default", "2026-11-24T01:30:00Z", "2026/11/24 12:30"),  # another profile: timezone
        (None, "2026-11-24T01:30:00Z", "2026/11/24 12:30"),
        ("perth", "2026-11-24T01:30:00Z", "2026/11/24 12:30"),  # profile names are exact
    ],
)
def test_callback_date_is_in_the_zone_of_the_leads_contact_hours(
    hours: str | None, raw: str, sent: str
) -> None:
    m = mapper(PERTH_MAPPING, contact_hours_timezones={"Perth": "Australia/Perth"})
    assert m.values(record(callback=raw, hours=hours))["njCallBackDate"] == sent


def test_callback_date_without_contact_hours_mapped_uses_timezone() -> None:
    m = mapper(MAPPING, contact_hours_timezones={"Perth": "Australia/Perth"})
    assert m.values(record(callback="2026-11-24T01:30:00Z"))["njCallBackDate"] == (
        "2026/11/24 12:30"
    )


def test_unparseable_callback_date_still_rejects_with_contact_hours() -> None:
    m = mapper(PERTH_MAPPING, contact_hours_timezones={"Perth": "Australia/Perth"})
    reason = rejection(m, record(callback="next tuesday", hours="Perth")).reason
    assert "njCallBackDate" in reason
