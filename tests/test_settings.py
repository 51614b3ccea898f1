"""Unit tests for per-stream lead settings (target_noojee.settings), with plain values."""

from __future__ import annotations

from typing import Any

import pytest

from target_noojee.settings import (
    LEAD_SETTINGS,
    ConfigError,
    LeadSettings,
    resolve_stream_settings,
)

SECRET = "s3cr3t-api-key-value"
MAPPING = {"njExternalLeadId": "id", "Name": "name", "FirstPhone": "phone"}


def config(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "base_url": "https://pbx.example.com.au",
        "api_key": SECRET,
        "template_id": 41,
        "campaign_id": 7,
        "allocation_id": 3,
        "mapping": dict(MAPPING),
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def config_error(cfg: dict[str, Any], stream: str = "contacts") -> ConfigError:
    with pytest.raises(ConfigError) as info:
        resolve_stream_settings(cfg, stream)
    err = info.value
    assert SECRET not in str(err)
    assert "\n" not in str(err)
    return err


def test_defaults() -> None:
    s = resolve_stream_settings(config(), "contacts")
    assert s == LeadSettings(
        template_id=41,
        campaign_id=7,
        allocation_id=3,
        operation="update",
        mapping=MAPPING,
        phone_fields=("FirstPhone",),
    )
    assert s.phone_region == "AU"
    assert s.timezone == "Australia/Melbourne"
    assert s.allow_duplicates is False
    assert s.fallback_disposition is None
    assert s.lead_schema is None


def test_lead_settings_are_frozen_and_hashable() -> None:
    s = resolve_stream_settings(config(), "contacts")
    with pytest.raises(AttributeError):
        s.operation = "insert"  # type: ignore[misc]
    with pytest.raises(TypeError):
        s.mapping["x"] = "y"  # type: ignore[index]
    hash(s)


def test_lead_settings_names() -> None:
    assert set(LEAD_SETTINGS) == set(LeadSettings.__dataclass_fields__)


def test_stream_overrides_key_by_key() -> None:
    cfg = config(
        operation="insert",
        allow_duplicates=True,
        streams={"contacts": {"campaign_id": 99, "operation": "upsert"}},
    )
    s = resolve_stream_settings(cfg, "contacts")
    assert (s.template_id, s.campaign_id, s.allocation_id) == (41, 99, 3)
    assert s.operation == "upsert"
    assert s.allow_duplicates is True  # not overridden: top-level value
    other = resolve_stream_settings(cfg, "others")
    assert other.campaign_id == 7
    assert other.operation == "insert"


def test_stream_mapping_replaces_whole_mapping() -> None:
    stream_mapping = {"njExternalLeadId": "account.no", "MobilePhone": "mobile"}
    cfg = config(streams={"contacts": {"mapping": stream_mapping}})
    s = resolve_stream_settings(cfg, "contacts")
    assert dict(s.mapping) == stream_mapping
    assert s.phone_fields == ("MobilePhone",)


def test_ids_only_in_streams() -> None:
    cfg = config(
        template_id=None,
        campaign_id=None,
        allocation_id=None,
        streams={"contacts": {"template_id": 1, "campaign_id": 2, "allocation_id": 3}},
    )
    s = resolve_stream_settings(cfg, "contacts")
    assert (s.template_id, s.campaign_id, s.allocation_id) == (1, 2, 3)
    err = config_error(cfg, "others")
    assert err.setting == "template_id"
    assert "'others'" in str(err)
    assert "streams.others.template_id" in str(err)


def test_null_counts_as_not_set() -> None:
    cfg = config(streams={"contacts": {"campaign_id": None, "mapping": None}})
    s = resolve_stream_settings(cfg, "contacts")
    assert s.campaign_id == 7
    assert dict(s.mapping) == MAPPING


def test_digit_string_ids_accepted() -> None:
    assert resolve_stream_settings(config(campaign_id=" 12 "), "contacts").campaign_id == 12


@pytest.mark.parametrize("bad", [0, -4, True, 1.5, "x12", [1]])
def test_bad_id(bad: Any) -> None:
    err = config_error(config(allocation_id=bad))
    assert err.setting == "allocation_id"
    assert "`allocation_id`" in str(err)


def test_bad_id_in_stream_names_the_stream_setting() -> None:
    err = config_error(config(streams={"contacts": {"template_id": "abc"}}))
    assert err.setting == "streams.contacts.template_id"
    assert "streams.contacts.template_id" in str(err)


def test_no_mapping_at_all() -> None:
    err = config_error(config(mapping=None), "orders")
    assert str(err) == "stream 'orders' has no mapping: set `mapping` or `streams.orders.mapping`"
    assert err.setting == "streams.orders.mapping"


@pytest.mark.parametrize(
    "mapping",
    [
        "njExternalLeadId=id",
        {},
        {"njExternalLeadId": "id", "FirstPhone": ""},
        {"njExternalLeadId": "id", "FirstPhone": 5},
        {"njExternalLeadId": "id", "FirstPhone": "a..b"},
        {"njExternalLeadId": "id", "": "phone"},
    ],
)
def test_malformed_mapping(mapping: Any) -> None:
    err = config_error(config(mapping=mapping))
    assert err.setting == "mapping"


def test_malformed_stream_mapping_names_stream_setting() -> None:
    err = config_error(config(streams={"contacts": {"mapping": {"FirstPhone": "p"}}}))
    assert err.setting == "streams.contacts.mapping"
    assert "njExternalLeadId" in str(err)


@pytest.mark.parametrize("operation", ["update", "upsert"])
def test_update_and_upsert_need_external_id(operation: str) -> None:
    err = config_error(config(operation=operation, mapping={"FirstPhone": "phone"}))
    assert err.setting == "mapping"
    assert "njExternalLeadId" in str(err)
    assert operation in str(err)


def test_insert_without_external_id_is_fine() -> None:
    s = resolve_stream_settings(
        config(operation="insert", mapping={"FirstPhone": "phone"}), "contacts"
    )
    assert s.operation == "insert"


@pytest.mark.parametrize("operation", ["delete", "UPDATE", 1])
def test_bad_operation(operation: Any) -> None:
    err = config_error(config(operation=operation))
    assert err.setting == "operation"
    assert "update, insert, upsert" in str(err)


def test_phone_fields_default_from_names() -> None:
    mapping = {"njExternalLeadId": "id", "HomePHONE": "h", "mobilephone": "m", "Name": "n"}
    s = resolve_stream_settings(config(mapping=mapping), "contacts")
    assert s.phone_fields == ("HomePHONE", "mobilephone")


def test_phone_fields_default_finds_none() -> None:
    err = config_error(config(mapping={"njExternalLeadId": "id", "Mobile": "m"}))
    assert err.setting == "phone_fields"
    assert "streams.contacts.phone_fields" in str(err)


def test_phone_fields_configured() -> None:
    mapping = {"njExternalLeadId": "id", "Mobile": "m", "Landline": "l", "FirstPhone": "p"}
    s = resolve_stream_settings(
        config(mapping=mapping, phone_fields=["Mobile", "Landline"]), "contacts"
    )
    assert s.phone_fields == ("Mobile", "Landline")
    single = resolve_stream_settings(config(mapping=mapping, phone_fields="Mobile"), "contacts")
    assert single.phone_fields == ("Mobile",)


@pytest.mark.parametrize("phone_fields", [["SecondPhone"], [], [3]])
def test_phone_field_not_mapped(phone_fields: Any) -> None:
    err = config_error(config(phone_fields=phone_fields))
    assert err.setting == "phone_fields"


def test_phone_field_not_in_stream_mapping() -> None:
    cfg = config(
        phone_fields=["FirstPhone"],
        streams={"contacts": {"mapping": {"njExternalLeadId": "id", "Mobile": "m"}}},
    )
    err = config_error(cfg)
    assert err.setting == "phone_fields"
    assert "'FirstPhone'" in str(err)
    assert "'contacts'" in str(err)


def test_phone_region() -> None:
    assert resolve_stream_settings(config(phone_region="nz"), "contacts").phone_region == "NZ"
    err = config_error(config(phone_region="XX"))
    assert err.setting == "phone_region"
    err = config_error(config(streams={"contacts": {"phone_region": "Australia"}}))
    assert err.setting == "streams.contacts.phone_region"


def test_timezone() -> None:
    cfg = config(timezone="Australia/Perth")
    assert resolve_stream_settings(cfg, "contacts").timezone == "Australia/Perth"
    for bad in ["Mars/Olympus", "", "../etc/passwd", 10]:
        err = config_error(config(timezone=bad))
        assert err.setting == "timezone"
        assert "IANA" in str(err)


def test_allow_duplicates_must_be_bool() -> None:
    assert resolve_stream_settings(config(allow_duplicates=True), "c").allow_duplicates is True
    err = config_error(config(allow_duplicates="yes"))
    assert err.setting == "allow_duplicates"


def test_fallback_disposition() -> None:
    s = resolve_stream_settings(config(fallback_disposition=" New "), "contacts")
    assert s.fallback_disposition == "New"
    for bad in ["", "   ", "<No Change>", 5]:
        err = config_error(config(fallback_disposition=bad))
        assert err.setting == "fallback_disposition"


def test_lead_schema() -> None:
    schema = {"type": "object", "required": ["City"]}
    assert resolve_stream_settings(config(lead_schema=schema), "contacts").lead_schema == schema
    err = config_error(config(lead_schema={"type": "lead"}))
    assert err.setting == "lead_schema"
    assert "not a valid JSON Schema" in str(err)
    err = config_error(config(streams={"contacts": {"lead_schema": {"properties": {"a": 3}}}}))
    assert err.setting == "streams.contacts.lead_schema"
    assert "properties/a" in str(err)
    err = config_error(config(lead_schema=[1]))
    assert err.setting == "lead_schema"


def test_lead_schema_uses_declared_draft() -> None:
    draft4 = {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "minimum": 0,
        "exclusiveMinimum": True,
    }
    resolve_stream_settings(config(lead_schema=draft4), "contacts")
    err = config_error(config(lead_schema={"exclusiveMinimum": True}))  # 2020-12: a number
    assert err.setting == "lead_schema"
    err = config_error(config(lead_schema={"$schema": "https://example.com/mine"}))
    assert err.setting == "lead_schema"
    assert "unknown $schema" in str(err)


def test_unknown_stream_override() -> None:
    err = config_error(config(streams={"contacts": {"mappings": {}}}))
    assert err.setting == "streams.contacts.mappings"
    assert "template_id" in str(err)


def test_streams_shapes() -> None:
    assert config_error(config(streams=["contacts"])).setting == "streams"
    assert config_error(config(streams={"contacts": "x"})).setting == "streams.contacts"


def test_no_secret_in_any_message() -> None:
    # every failure above goes through config_error(), which checks the api_key; here the
    # secret also sits in the places a careless message would echo
    cfg = config(mapping={SECRET: "id"}, operation="update")
    err = config_error(cfg)
    assert err.setting == "mapping"


def test_contact_hours_timezones_are_checked_and_replaced_whole_per_stream() -> None:
    top = {"Perth": "Australia/Perth", "Brisbane": "Australia/Brisbane"}
    s = resolve_stream_settings(config(contact_hours_timezones=top), "contacts")
    assert dict(s.contact_hours_timezones) == top
    cfg = config(
        contact_hours_timezones=top,
        streams={"wa": {"contact_hours_timezones": {"Darwin": "Australia/Darwin"}}},
    )
    assert dict(resolve_stream_settings(cfg, "wa").contact_hours_timezones) == {
        "Darwin": "Australia/Darwin"
    }
    assert resolve_stream_settings(config(), "contacts").contact_hours_timezones == {}


@pytest.mark.parametrize(
    "bad", [{"Perth": "Australia/Pert"}, {"Perth": ""}, {"": "Australia/Perth"}, ["Perth"]]
)
def test_unknown_contact_hours_zone_names_the_setting(bad: Any) -> None:
    err = config_error(config(contact_hours_timezones=bad))
    assert err.setting == "contact_hours_timezones"
    assert "contact_hours_timezones" in str(err)
