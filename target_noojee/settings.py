"""Per-stream lead settings, resolved from the target config (pure: no I/O, no SDK).

A stream's lead settings are the top-level lead settings overlaid with
``config["streams"][stream_name]``: the stream wins key by key, and ``mapping`` is replaced
whole, never merged. Rules where the issue is silent:

- A setting whose value is ``null`` counts as not set, at either level (so a stream cannot
  "unset" a top-level value with ``null``; it can only override it).
- ``streams.<name>`` may hold lead settings only (``LEAD_SETTINGS``); any other key is a typo
  and a configuration error, rather than an override that silently does nothing.
- Ids are positive integers; a string of digits is accepted (environment variables).
- ``phone_region`` is matched case-insensitively and stored upper-case (``au`` -> ``AU``).
- ``phone_fields`` may be a list or a single field name; every one must be a mapped lead field.
  When not configured: the mapped lead fields whose name contains "phone" (any case).
- ``fallback_disposition`` is stripped; empty, or ``<No Change>`` (which is what failed), is
  an error.
- ``lead_schema`` must be a JSON Schema object, checked against its ``$schema`` meta-schema
  (Draft 2020-12 when absent; an unknown ``$schema`` is an error, not a silent fallback).

Every error is a ``ConfigError`` naming the setting as the operator would write it
(``campaign_id`` or ``streams.contacts.mapping``) and the stream; it never carries the api_key.
"""

from __future__ import annotations

import math
import numbers
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, cast

import jsonschema
import phonenumbers
from jsonschema.validators import validator_for

from target_noojee.codes import CODES, EXTERNAL_ID_FIELD, NO_CHANGE, Kind

LEAD_SETTINGS = (
    "template_id",
    "campaign_id",
    "allocation_id",
    "operation",
    "mapping",
    "phone_fields",
    "phone_region",
    "timezone",
    "allow_duplicates",
    "fallback_disposition",
    "lead_schema",
    "contact_hours_timezones",
    "close_disposition",
    "close_field",
    "mirror",
    "max_close_ratio",
    "reopen_disposition",
    "redeliver_after_s",
    "max_redeliveries",
)
# A rejected lead may be sent again for these codes (the lead's own fault, which can pass).
REDELIVERABLE_CODES = frozenset(c.code for c in CODES.values() if c.kind is Kind.PERMANENT)
DEFAULT_MAX_CLOSE_RATIO = 0.1
DEFAULT_MAX_REDELIVERIES = 5
OPERATIONS = ("update", "insert", "upsert")


class ConfigError(Exception):
    """A setting is wrong: ``str(e)`` is one operator-facing line naming the setting.

    ``setting`` is the setting's name as the operator writes it, e.g. ``campaign_id`` or
    ``streams.contacts.mapping``. The message never holds the api_key or another secret value.
    """

    setting: str

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(message)
        self.setting = setting
        self.message = message


@dataclass(frozen=True)
class LeadSettings:
    """The lead settings of one stream, validated."""

    template_id: int
    campaign_id: int
    allocation_id: int
    operation: str  # "update" | "insert" | "upsert"
    mapping: Mapping[str, str] = field(hash=False)  # lead field -> dotted source path
    phone_fields: tuple[str, ...]
    phone_region: str = "AU"
    timezone: str = "Australia/Melbourne"
    allow_duplicates: bool = False
    fallback_disposition: str | None = None
    lead_schema: Mapping[str, Any] | None = field(default=None, hash=False)
    # njContactHours profile -> IANA zone of its njCallBackDate (others: `timezone`)
    contact_hours_timezones: Mapping[str, str] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )
    # The lifecycle of a lead (README "Closing leads"): closing is off while close_disposition
    # is unset.
    close_disposition: str | None = None
    close_field: str | None = None  # path of a source field whose true value closes the lead
    mirror: bool = False  # a complete full-table version closes the leads it did not contain
    max_close_ratio: float = DEFAULT_MAX_CLOSE_RATIO
    reopen_disposition: str | None = None
    redeliver_after_s: Mapping[int, float] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )
    max_redeliveries: int = DEFAULT_MAX_REDELIVERIES


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Resolver:
    """Looks settings up for one stream and remembers where each value came from."""

    def __init__(self, config: Mapping[str, Any], stream_name: str) -> None:
        self.stream = stream_name
        streams = config.get("streams")
        if streams is None:
            streams = {}
        if not isinstance(streams, Mapping):
            raise ConfigError("streams", "setting `streams` must be an object: stream -> settings")
        overrides = streams.get(stream_name)
        if overrides is None:
            overrides = {}
        if not isinstance(overrides, Mapping):
            raise ConfigError(
                f"streams.{stream_name}",
                f"setting `streams.{stream_name}` must be an object of lead settings",
            )
        unknown = sorted(str(k) for k in overrides if k not in LEAD_SETTINGS)
        if unknown:
            raise ConfigError(
                f"streams.{stream_name}.{unknown[0]}",
                f"setting `streams.{stream_name}.{unknown[0]}` is not a lead setting; "
                f"a stream may override: {', '.join(LEAD_SETTINGS)}",
            )
        self.config = config
        self.overrides = overrides

    def get(self, name: str) -> tuple[Any, str]:
        """The value of a setting (None when not set) and the name of where it came from."""
        value = self.overrides.get(name)
        if value is not None:
            return value, f"streams.{self.stream}.{name}"
        return self.config.get(name), name

    def fail(self, setting: str, problem: str) -> ConfigError:
        return ConfigError(setting, f"setting `{setting}` {problem} (stream '{self.stream}')")


def _resolve_id(r: _Resolver, name: str) -> int:
    value, where = r.get(name)
    if value is None:
        raise ConfigError(
            name,
            f"setting `{name}` is missing for stream '{r.stream}': "
            f"set `{name}` or `streams.{r.stream}.{name}`",
        )
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise r.fail(where, f"must be a positive integer, got {_short(value)}")
    return value


def _resolve_mapping(r: _Resolver, operation: str) -> dict[str, str]:
    value, where = r.get("mapping")
    if value is None:
        raise ConfigError(
            f"streams.{r.stream}.mapping",
            f"stream '{r.stream}' has no mapping: set `mapping` or `streams.{r.stream}.mapping`",
        )
    if not isinstance(value, Mapping):
        raise r.fail(where, "must be an object: lead field -> source field path")
    if not value:
        raise r.fail(where, "is empty: map at least njExternalLeadId and a phone field")
    mapping: dict[str, str] = {}
    for lead_field, path in value.items():
        if not isinstance(lead_field, str) or not lead_field.strip():
            raise r.fail(where, f"has an empty lead field name {_short(lead_field)}")
        if not isinstance(path, str) or not path.strip():
            raise r.fail(
                where, f"maps lead field {lead_field!r} to {_short(path)}: expected a field path"
            )
        if any(not part for part in path.split(".")):
            raise r.fail(where, f"maps lead field {lead_field!r} to a malformed path {path!r}")
        mapping[lead_field] = path
    if operation in ("update", "upsert") and EXTERNAL_ID_FIELD not in mapping:
        raise r.fail(
            where,
            f"does not map {EXTERNAL_ID_FIELD}, which operation '{operation}' needs "
            "to find the lead",
        )
    return mapping


def _resolve_phone_fields(r: _Resolver, mapping: Mapping[str, str]) -> tuple[str, ...]:
    value, where = r.get("phone_fields")
    if value is None:
        found = tuple(f for f in mapping if "phone" in f.lower())
        if not found:
            raise ConfigError(
                "phone_fields",
                f"setting `phone_fields` is not set and no mapped lead field of stream "
                f"'{r.stream}' looks like a phone (name containing 'phone'): "
                f"set `phone_fields` or `streams.{r.stream}.phone_fields`",
            )
        return found
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise r.fail(where, "must be a non-empty list of lead field names")
    fields: list[str] = []
    for name in value:
        if not isinstance(name, str) or not name:
            raise r.fail(where, f"holds {_short(name)}: expected a lead field name")
        if name not in mapping:
            raise r.fail(where, f"names {name!r}, which is not a lead field in the mapping")
        if name not in fields:
            fields.append(name)
    return tuple(fields)


def _resolve_region(r: _Resolver) -> str:
    value, where = r.get("phone_region")
    if value is None:
        return "AU"
    region = value.strip().upper() if isinstance(value, str) else None
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise r.fail(where, f"is {_short(value)}, not a known region code such as 'AU'")
    return region


def known_zone(value: Any) -> bool:
    """Whether `value` names an IANA time zone this machine knows."""
    if not isinstance(value, str) or not value.strip():
        return False
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


def _resolve_timezone(r: _Resolver) -> str:
    value, where = r.get("timezone")
    if value is None:
        return "Australia/Melbourne"
    if known_zone(value):
        return str(value)
    raise r.fail(where, f"is {_short(value)}, not a known IANA zone such as 'Australia/Melbourne'")


def _resolve_contact_hours_zones(r: _Resolver) -> Mapping[str, str]:
    value, where = r.get("contact_hours_timezones")
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, Mapping):
        raise r.fail(where, "must be an object: contact-hours profile name -> IANA zone")
    zones: dict[str, str] = {}
    for profile, zone in value.items():
        if not isinstance(profile, str) or not profile.strip():
            raise r.fail(where, f"has an empty profile name {_short(profile)}")
        if not known_zone(zone):
            raise r.fail(
                where,
                f"maps profile {profile!r} to {_short(zone)}, not a known IANA zone such as "
                "'Australia/Perth'",
            )
        zones[profile.strip()] = str(zone)
    return MappingProxyType(zones)


def _resolve_lead_schema(r: _Resolver) -> Mapping[str, Any] | None:
    value, where = r.get("lead_schema")
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise r.fail(where, "must be a JSON Schema object")
    if "$schema" in value and validator_for(value, default=cast(Any, None)) is None:
        raise r.fail(where, f"declares an unknown $schema {_short(value['$schema'])}")
    try:
        cls = validator_for(value, default=jsonschema.Draft202012Validator)
        cls.check_schema(dict(value))
    except jsonschema.SchemaError as exc:
        at = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        message = exc.message if len(exc.message) <= 120 else exc.message[:117] + "..."
        raise r.fail(where, f"is not a valid JSON Schema at {at}: {message}") from None
    return value


def _resolve_disposition(r: _Resolver, name: str) -> str | None:
    value, where = r.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise r.fail(where, "must be a disposition name defined on the PBX, not empty")
    if value.strip() == NO_CHANGE:
        raise r.fail(where, f"cannot be {NO_CHANGE!r}: it must set a disposition")
    return value.strip()


def _resolve_lifecycle(r: _Resolver) -> dict[str, Any]:
    """close_disposition, close_field, mirror, max_close_ratio, reopen_disposition, re-delivery."""
    close = _resolve_disposition(r, "close_disposition")
    close_field, where = r.get("close_field")
    if close_field is not None:
        if not isinstance(close_field, str) or any(not p for p in close_field.split(".")):
            raise r.fail(where, f"is {_short(close_field)}: expected a source field path")
        if close is None:
            raise r.fail(where, "needs `close_disposition`: the disposition that closes a lead")
    mirror, where = r.get("mirror")
    if mirror is not None and not isinstance(mirror, bool):
        raise r.fail(where, f"must be true or false, got {_short(mirror)}")
    if mirror and close is None:
        raise r.fail(where, "needs `close_disposition`: the disposition that closes a lead")
    ratio, where = r.get("max_close_ratio")
    if ratio is None:
        ratio = DEFAULT_MAX_CLOSE_RATIO
    fraction = number_value(ratio)
    if fraction is None or not 0 <= fraction <= 1:
        raise r.fail(where, f"must be a number from 0 to 1, got {_short(ratio)}")
    redeliver, where = r.get("redeliver_after_s")
    after: dict[int, float] = {}
    if redeliver is not None:
        if not isinstance(redeliver, Mapping):
            raise r.fail(where, "must be an object: response code -> seconds")
        for code, seconds in redeliver.items():
            number = int(code) if str(code).strip().isdigit() else None
            if number is None or number not in REDELIVERABLE_CODES:
                raise r.fail(
                    where,
                    f"names {_short(code)}; a lead can be re-delivered after the codes "
                    f"{', '.join(map(str, sorted(REDELIVERABLE_CODES)))}",
                )
            wait = number_value(seconds)
            if wait is None or wait < 0:
                raise r.fail(where, f"gives code {number} {_short(seconds)}: expected seconds")
            after[number] = wait
    most, where = r.get("max_redeliveries")
    if most is None:
        most = DEFAULT_MAX_REDELIVERIES
    count = number_value(most)
    if count is None or count < 0 or count != int(count):
        raise r.fail(where, f"must be a whole number >= 0, got {_short(most)}")
    return {
        "close_disposition": close,
        "close_field": close_field,
        "mirror": bool(mirror),
        "max_close_ratio": fraction,
        "reopen_disposition": _resolve_disposition(r, "reopen_disposition"),
        "redeliver_after_s": MappingProxyType(after),
        "max_redeliveries": int(count),
    }


def number_value(value: Any) -> float | None:
    """A setting's number as a float, or None: JSON numbers reach us as int, float or (the
    SDK reads config files so, and Meltano writes `1` as `1.0`) Decimal; never a bool."""
    if isinstance(value, bool) or not isinstance(value, numbers.Number):
        return None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):  # a complex number
        return None


def number_from_text(name: str, schema: Mapping[str, Any], value: Any) -> Any:
    """A number setting given as text, read as a number (`"0.05"` -> 0.05); anything else as
    it is. Meltano passes number settings so (they are declared `kind: string`: its `decimal`
    kind fails on an environment variable), and so does the SDK under `--config ENV`."""
    declared = schema.get("type", [])
    types = [declared] if isinstance(declared, str) else list(declared)
    if not isinstance(value, str) or "number" not in types or "string" in types:
        return value
    try:
        number = float(value.strip())
    except ValueError:
        raise ConfigError(name, f"setting `{name}` must be a number") from None  # not the text
    if not math.isfinite(number):
        raise ConfigError(name, f"setting `{name}` must be a finite number")
    return number


def resolve_stream_settings(config: Mapping[str, Any], stream_name: str) -> LeadSettings:
    """The validated lead settings of a stream: top-level settings overlaid with its overrides.

    Raises ConfigError naming the setting (and the stream) when one is missing or wrong.
    """
    r = _Resolver(config, stream_name)
    template_id = _resolve_id(r, "template_id")
    campaign_id = _resolve_id(r, "campaign_id")
    allocation_id = _resolve_id(r, "allocation_id")

    operation, where = r.get("operation")
    if operation is None:
        operation = "update"
    if operation not in OPERATIONS:
        raise r.fail(where, f"is {_short(operation)}; expected one of {', '.join(OPERATIONS)}")

    mapping = _resolve_mapping(r, operation)
    phone_fields = _resolve_phone_fields(r, mapping)
    phone_region = _resolve_region(r)
    timezone = _resolve_timezone(r)

    allow_duplicates, where = r.get("allow_duplicates")
    if allow_duplicates is None:
        allow_duplicates = False
    if not isinstance(allow_duplicates, bool):
        raise r.fail(where, f"must be true or false, got {_short(allow_duplicates)}")

    fallback, where = r.get("fallback_disposition")
    if fallback is not None:
        if not isinstance(fallback, str) or not fallback.strip():
            raise r.fail(where, "must be a disposition name defined on the PBX, not empty")
        fallback = fallback.strip()
        if fallback == NO_CHANGE:
            raise r.fail(where, f"cannot be {NO_CHANGE!r}: it is what a 107 refuses")

    lead_schema = _resolve_lead_schema(r)
    return LeadSettings(
        template_id=template_id,
        campaign_id=campaign_id,
        allocation_id=allocation_id,
        operation=operation,
        mapping=MappingProxyType(mapping),
        phone_fields=phone_fields,
        phone_region=phone_region,
        timezone=timezone,
        allow_duplicates=allow_duplicates,
        fallback_disposition=fallback,
        lead_schema=lead_schema,
        contact_hours_timezones=_resolve_contact_hours_zones(r),
        **_resolve_lifecycle(r),
    )
