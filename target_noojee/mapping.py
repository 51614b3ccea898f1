"""Record -> lead: paths, values as strings, phones, callback dates, ``<No Change>``, lead schema.

Pure functions, no I/O. ``LeadMapper(settings).values(record)`` maps, converts and checks one
record, raising ``LocalRejection`` for a record that can never be delivered;
``render(values, endpoint)`` turns the values into the JSON body of ``updateLeadFast`` or
``insertLeadFast``.

Rules (issue 3, and where it is silent, the choices below):

Paths
  - ``mapping`` is lead field -> source path. A dot reaches into a nested object
    (``address.city``); a literal key that contains the dot wins over nesting (a record holding
    ``{"address.city": ...}`` answers ``address.city`` itself), and if that key leads nowhere the
    nested reading is tried. A numeric segment indexes a list (``phones.0.number``). A missing
    key, a path through a non-object, or an out-of-range index gives None.

Values (every value is sent as a string)
  - None, a missing field, an empty or blank string, and the literal ``<No Change>`` are all
    "missing" (None). Other strings are sent as they are, not stripped.
  - bool -> ``true`` / ``false``; int -> ``42``; float and Decimal: integral -> ``42``,
    otherwise the shortest exact decimal (``4.5``; Decimal trailing zeros dropped, never an
    exponent); NaN / infinity reject the record.
  - datetime / date / time -> ISO-8601 (``2026-11-24T12:30:00+11:00``), except njCallBackDate.
  - object / array -> compact JSON text (Decimal as a number, dates as ISO-8601 strings).
  - anything else -> ``str(value)``.

Phones (the ``phone_fields``)
  - The value (an int is turned into its digits first; a leading 0 is lost by the source) is
    parsed with ``phonenumbers`` in ``phone_region``; it must be a possible number, else
    ``unparseable phone number in <field>: <value>``.
  - Sent as the digits a dialer in ``phone_region`` dials: the out-of-country calling format
    stripped to digits (``+61 3 8321 8199`` and ``(03) 8321 8199`` -> ``0383218199``; for AU,
    ``+44 20 7946 0958`` -> ``0011442079460958``). Only possibility (length) is checked, as
    the issue says, not validity: ``0061 3 8321 8199`` is read as a national number. An extension
    (``ext 123``) is dropped: a dialer cannot dial it and appending its digits would make a
    different number.

njCallBackDate
  - Accepts a datetime (aware: converted to ``timezone``; naive: taken as local already), a date
    (00:00 local), an ISO-8601 string (offset, ``Z`` or none; date-only -> 00:00), or a string
    already in ``yyyy/MM/dd HH:mm`` (checked, taken as local). "Local" is the zone of the lead's
    contact hours: ``contact_hours_timezones[njContactHours]`` when the mapped njContactHours
    names a profile there (exactly, spaces around it aside), else ``timezone``. Sent as
    ``yyyy/MM/dd HH:mm``; seconds are truncated, not rounded. Anything else (numbers included:
    epoch seconds or milliseconds is a guess) rejects the record.

njPriority
  - An integer 0-100: an int, an integral float / Decimal, or a string of one (``"10"``,
    ``" 10 "``, ``"10.0"``). Otherwise, or out of range, the record is rejected.

Checks after mapping (before ``lead_schema``)
  - update and upsert: njExternalLeadId must have a value.
  - insert: at least one phone field must have a value. update and upsert: at least one phone
    field must be mapped (a null one is sent as ``<No Change>``). An upsert that falls back to
    insert is checked by the PBX (102), not here.
  - All problems of a record are reported together, joined by ``; ``.

lead_schema
  - When set, the rendered body of the stream's primary endpoint (``updateLeadFast`` for update
    and upsert, ``insertLeadFast`` for insert) must validate: Draft 2020-12 unless the schema's
    ``$schema`` says otherwise, with ``format`` checked. So on update a null field is validated
    as the string ``<No Change>``. A violation is one short reason naming the field path.

Rendering
  - Only mapped lead fields are sent, plus njDisposition (``render`` accepts an njDisposition in
    the values even when it is not mapped, so delivery can send ``fallback_disposition``).
  - update: a None value is ``<No Change>``; njDisposition unmapped or None is ``<No Change>``.
  - insert: None values are left out; ``<No Change>`` is never sent.

Speed: paths are split once per mapper and phone results are cached per (value, region);
phonenumbers (~25 us a number) dominates, the rest of a 10-field record costs ~7 us.

``LocalRejection.lead`` is the lead as the primary endpoint would have received it, with a field
that failed conversion holding its source value as text.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
import re
import zoneinfo
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import jsonschema
import phonenumbers
from jsonschema.exceptions import best_match
from jsonschema.validators import validator_for

from target_noojee.codes import CALLBACK_DATE_FORMAT, NO_CHANGE
from target_noojee.settings import ConfigError, LeadSettings

UPDATE_ENDPOINT = "updateLeadFast"
INSERT_ENDPOINT = "insertLeadFast"
EXTERNAL_ID = "njExternalLeadId"
DISPOSITION = "njDisposition"
CALLBACK_DATE = "njCallBackDate"
PRIORITY = "njPriority"
CONTACT_HOURS = "njContactHours"

LeadValues = dict[str, str | None]  # lead field -> string value; None = missing in the source


class LocalRejection(Exception):
    """The record can never be delivered; ``reason`` is one line for the reject file."""

    reason: str
    lead: dict[str, Any]

    def __init__(self, reason: str, lead: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.lead = {} if lead is None else lead


class _Bad(Exception):
    """One field's value cannot be converted; the message is the reason."""


_MISSING: Any = object()


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------- paths


class _Path:
    """A dotted path split once; ``keys[i]``: the candidate keys at segment i, longest first."""

    __slots__ = ("keys", "parts")

    def __init__(self, path: str) -> None:
        parts = tuple(path.split("."))
        n = len(parts)
        self.parts = parts
        self.keys = tuple(
            tuple((j, ".".join(parts[i:j])) for j in range(n, i, -1)) for i in range(n)
        )

    def lookup(self, node: Any, i: int = 0) -> Any:
        """The value at segment ``i`` onwards under ``node``, or _MISSING."""
        if isinstance(node, Mapping):
            last = len(self.parts)
            for j, key in self.keys[i]:
                if key in node:
                    value = node[key]
                    if j == last:
                        return value
                    found = self.lookup(value, j)
                    if found is not _MISSING:
                        return found
            return _MISSING
        if isinstance(node, Sequence) and not isinstance(node, (str, bytes)):
            part = self.parts[i]
            if part.isdigit() and int(part) < len(node):
                value = node[int(part)]
                return value if i + 1 == len(self.parts) else self.lookup(value, i + 1)
        return _MISSING


@functools.lru_cache(maxsize=1024)
def _compiled(path: str) -> _Path:
    return _Path(path)


def extract(record: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted ``path`` in ``record``; None when missing (see the module rules)."""
    if "." not in path:
        return record.get(path)
    found = _compiled(path).lookup(record)
    return None if found is _MISSING else found


# ------------------------------------------------------------------------------ conversions


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    return str(value)


def _text(value: Any) -> str | None:
    """The string sent for a plain lead field (None = missing)."""
    kind = type(value)
    if kind is str:
        stripped = value.strip()
        return None if not stripped or stripped == NO_CHANGE else value
    if value is None:
        return None
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Bad(f"not a finite number: {value!r}")
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise _Bad(f"not a finite number: {value}")
        if value == value.to_integral_value():
            return str(int(value))
        return format(value.normalize(), "f")
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (Mapping, list, tuple)):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_json_default)
    if isinstance(value, str):  # a str subclass
        return _text(str(value))
    if isinstance(value, int):  # an int subclass (IntEnum ...)
        return str(int(value))
    return str(value)


def _source_text(value: Any) -> str:
    """A failed field's source value as text, for the reject file."""
    try:
        text = _text(value)
    except _Bad:
        text = None
    return repr(value) if text is None else text


_NON_DIGITS = re.compile(r"\D+")


@functools.lru_cache(maxsize=32768)
def _dialled_digits(text: str, region: str) -> str | None:
    """The digits a dialer in ``region`` dials for ``text``; None if it is not a possible number."""
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    number.extension = None
    digits = _NON_DIGITS.sub("", phonenumbers.format_out_of_country_calling_number(number, region))
    return digits or None


def _integral(value: float | Decimal) -> int | None:
    """The int a float or Decimal holds exactly, or None."""
    finite = math.isfinite(value) if isinstance(value, float) else value.is_finite()
    return int(value) if finite and value == int(value) else None


_PBX_DATE = re.compile(r"(\d{4})/(\d{2})/(\d{2}) (\d{2}):(\d{2})")
_INTEGER = re.compile(r"[+-]?\d+(?:\.0*)?")


class LeadMapper:
    """Maps the records of one stream to leads, as its ``LeadSettings`` say."""

    def __init__(self, settings: LeadSettings) -> None:
        """Precompile paths, phone region, time zone and the lead_schema validator."""
        self.settings = settings
        self.operation = settings.operation
        self.primary_endpoint = (
            INSERT_ENDPOINT if settings.operation == "insert" else UPDATE_ENDPOINT
        )
        try:
            self._zone = zoneinfo.ZoneInfo(settings.timezone)
            self._profile_zones = {
                profile: zoneinfo.ZoneInfo(zone)
                for profile, zone in settings.contact_hours_timezones.items()
            }
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError) as exc:
            raise ConfigError(
                "timezone", f"setting `timezone` is {settings.timezone!r}, not a known IANA zone"
            ) from exc
        self._region = settings.phone_region
        phones = set(settings.phone_fields)
        plan: list[tuple[str, str, _Path | None, Callable[[Any], str | None]]] = []
        for lead_field, path in settings.mapping.items():
            convert: Callable[[Any], str | None]
            if lead_field in phones:
                convert = functools.partial(self._phone, lead_field)
            elif lead_field == CALLBACK_DATE:
                convert = _text  # converted after the loop: its zone may hang on njContactHours
            elif lead_field == PRIORITY:
                convert = self._priority
            else:
                convert = _text
            plan.append((lead_field, path, _Path(path) if "." in path else None, convert))
        self._plan = tuple(plan)
        self._fields = frozenset(settings.mapping) | {DISPOSITION}
        self._phone_fields = tuple(f for f in settings.phone_fields if f in settings.mapping)
        self._needs_external_id = settings.operation in ("update", "upsert")
        self._validator: Any = None
        if settings.lead_schema is not None:
            cls = validator_for(settings.lead_schema, default=jsonschema.Draft202012Validator)
            self._validator = cls(settings.lead_schema, format_checker=cls.FORMAT_CHECKER)

    # -- converters for the system fields; each raises _Bad with the reason

    def _phone(self, lead_field: str, value: Any) -> str | None:
        try:
            text = _text(value)
        except _Bad:
            text = repr(value)
        if text is None:
            return None
        digits = _dialled_digits(text, self._region)
        if digits is None:
            raise _Bad(f"unparseable phone number in {lead_field}: {_short(text)}")
        return digits

    def _callback_date(self, value: Any, zone: zoneinfo.ZoneInfo) -> str | None:
        if isinstance(value, str):
            text = value.strip()
            if not text or text == NO_CHANGE:
                return None
            when = self._parse_date(text)
        elif isinstance(value, dt.datetime):
            when = value
        elif isinstance(value, dt.date):
            when = dt.datetime(value.year, value.month, value.day)
        else:
            raise _Bad(f"unparseable {CALLBACK_DATE}: {_short(value)}")
        if when.tzinfo is not None and when.utcoffset() is not None:
            try:
                when = when.astimezone(zone)
            except (OverflowError, ValueError) as exc:
                raise _Bad(f"unparseable {CALLBACK_DATE}: {_short(value)}") from exc
        return when.strftime(CALLBACK_DATE_FORMAT)

    @staticmethod
    def _parse_date(text: str) -> dt.datetime:
        try:
            pbx = _PBX_DATE.fullmatch(text)
            if pbx:
                year, month, day, hour, minute = map(int, pbx.groups())
                return dt.datetime(year, month, day, hour, minute)
            if text[-1] in "Zz":  # Python 3.10's fromisoformat does not read Z
                text = text[:-1] + "+00:00"
            return dt.datetime.fromisoformat(text)
        except ValueError as exc:
            raise _Bad(f"unparseable {CALLBACK_DATE}: {_short(text)}") from exc

    @staticmethod
    def _priority(value: Any) -> str | None:
        number: int | None = None
        if isinstance(value, str):
            text = value.strip()
            if not text or text == NO_CHANGE:
                return None
            if _INTEGER.fullmatch(text):
                number = int(text.split(".")[0])
        elif isinstance(value, bool):
            pass
        elif isinstance(value, int):
            number = value
        elif isinstance(value, (float, Decimal)):
            number = _integral(value)
        if number is None:
            raise _Bad(f"{PRIORITY} is not an integer: {_short(value)}")
        if not 0 <= number <= 100:
            raise _Bad(f"{PRIORITY} out of range 0-100: {number}")
        return str(number)

    # -- the public surface

    def values(self, record: Mapping[str, Any]) -> LeadValues:
        """Map, convert and check one record. Raises LocalRejection with every problem found."""
        values: LeadValues = {}
        problems: list[str] | None = None
        callback: Any = None
        for lead_field, key, path, convert in self._plan:
            if path is None:
                raw = record.get(key)
            else:
                raw = path.lookup(record)
                if raw is _MISSING:
                    raw = None
            if raw is None:
                values[lead_field] = None
                continue
            if lead_field == CALLBACK_DATE:
                callback = raw
                values[lead_field] = None  # keeps the field's place; converted below
                continue
            if convert is _text and type(raw) is str:  # the common case, inlined
                stripped = raw.strip()
                values[lead_field] = raw if stripped and stripped != NO_CHANGE else None
                continue
            try:
                values[lead_field] = convert(raw)
            except _Bad as bad:
                if problems is None:
                    problems = []
                problems.append(f"{lead_field}: {bad}" if convert is _text else str(bad))
                values[lead_field] = _source_text(raw)

        if callback is not None:
            zone = self._profile_zones.get((values.get(CONTACT_HOURS) or "").strip(), self._zone)
            try:
                values[CALLBACK_DATE] = self._callback_date(callback, zone)
            except _Bad as bad:
                problems = problems or []
                problems.append(str(bad))
                values[CALLBACK_DATE] = _source_text(callback)
        if self._needs_external_id and values.get(EXTERNAL_ID) is None:
            problems = problems or []
            problems.append(f"missing {EXTERNAL_ID} (operation {self.operation} needs it)")
        if not self._phone_fields:
            problems = problems or []
            problems.append("no phone field mapped (set phone_fields)")
        elif not self._needs_external_id and all(values.get(f) is None for f in self._phone_fields):
            problems = problems or []
            problems.append(f"no phone number: {', '.join(self._phone_fields)} all empty")

        if problems:
            raise LocalRejection("; ".join(problems), self.render(values, self.primary_endpoint))
        if self._validator is not None:
            body = self.render(values, self.primary_endpoint)
            if not self._validator.is_valid(body):
                raise LocalRejection(self._schema_reason(body), body)
        return values

    def _schema_reason(self, body: dict[str, str]) -> str:
        error = best_match(self._validator.iter_errors(body))
        if error is None:  # pragma: no cover - is_valid said otherwise
            return "lead_schema violation"
        where = "/".join(str(p) for p in error.absolute_path) or "lead"
        message = error.message if len(error.message) <= 160 else error.message[:157] + "..."
        return f"lead_schema violation at {where}: {message}"

    def render(self, values: LeadValues, endpoint: str) -> dict[str, str]:
        """The JSON body for ``updateLeadFast`` or ``insertLeadFast`` (see the module rules)."""
        fields = self._fields
        if endpoint == UPDATE_ENDPOINT:
            body = {f: NO_CHANGE if v is None else v for f, v in values.items() if f in fields}
            if body.get(DISPOSITION) is None:
                body[DISPOSITION] = NO_CHANGE
            return body
        if endpoint == INSERT_ENDPOINT:
            return {
                f: v for f, v in values.items() if v is not None and v != NO_CHANGE and f in fields
            }
        raise ValueError(f"unknown lead endpoint {endpoint!r}")

    def body(self, record: Mapping[str, Any]) -> dict[str, str]:
        """The body of the stream's primary endpoint for one record. Raises LocalRejection."""
        return self.render(self.values(record), self.primary_endpoint)
