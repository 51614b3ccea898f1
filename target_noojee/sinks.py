"""SDK glue: hand each record to the pipeline; a record the SDK cannot read is rejected."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import jsonschema
from singer_sdk.exceptions import InvalidRecord
from singer_sdk.helpers._typing import get_datelike_property_type
from singer_sdk.sinks import RecordSink

if TYPE_CHECKING:
    from target_noojee.target import TargetNoojee

_REASON_CHARS = 160


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def schema_reason(exc: InvalidRecord) -> str:
    """One line naming the field that does not match the stream's schema."""
    cause = exc.__cause__
    where = ""
    if isinstance(cause, jsonschema.ValidationError) and cause.absolute_path:
        where = f"field `{'.'.join(str(p) for p in cause.absolute_path)}` "
    message = exc.error_message
    if len(message) > _REASON_CHARS:
        message = message[: _REASON_CHARS - 3] + "..."
    return f"{where}does not match the stream's schema: {message}"


class NoojeeSink(RecordSink):
    """One stream's records -> the shared pipeline. Nothing is batched here."""

    def __init__(
        self,
        target: TargetNoojee,
        stream_name: str,
        schema: dict,
        key_properties: list[str] | None,
    ) -> None:
        super().__init__(
            target=target, stream_name=stream_name, schema=schema, key_properties=key_properties
        )
        self._pipeline = target.pipeline
        # Resolved at SCHEMA time, so a stream without a mapping stops the run before any record.
        self._lane = self._pipeline.lane(stream_name, key_properties)
        self._invalid: str | None = None

    def _validate_and_parse(self, record: dict) -> dict:
        """Validate and parse dates; a failure marks the record for rejection with its reason."""
        self._invalid = None
        if self._validator is not None:
            try:
                self._validator.validate(record)
            except InvalidRecord as exc:
                self._invalid = schema_reason(exc)
                return record
        self._blank_dates_are_missing(record)
        try:
            self._parse_timestamps_in_record(
                record=record, schema=self.schema, treatment=self.datetime_error_treatment
            )
        except Exception:  # the SDK raises ValueError, TypeError ... from its parsers
            self._invalid = self._unparseable_date(record)
        return record

    def _blank_dates_are_missing(self, record: dict) -> None:
        """A blank date or time (CSV and spreadsheet taps send "") is missing, as any blank
        value is (README), not a date the SDK fails to parse."""
        properties = self.schema.get("properties", {})
        for key, value in record.items():
            blank = isinstance(value, str) and not value.strip()
            if blank and get_datelike_property_type(properties.get(key, {})):
                record[key] = None

    def _unparseable_date(self, record: dict) -> str:
        """Name the date-like field the SDK could not parse (each is parsed again, alone)."""
        properties = self.schema.get("properties", {})
        for key, value in record.items():
            if isinstance(value, (dt.datetime, dt.date, dt.time)):
                continue  # parsed already by the pass that failed (it works in place)
            try:
                self._parse_timestamps_in_record(
                    record={key: value}, schema=self.schema, treatment=self.datetime_error_treatment
                )
            except Exception:
                kind = get_datelike_property_type(properties.get(key, {})) or "date"
                return f"field `{key}` is not a valid {kind}: {_short(value)}"
        return "a date or time field could not be parsed"

    def _singer_validate_message(self, record: dict) -> None:
        """A record without its key properties is rejected, not fatal."""
        missing = [k for k in self._key_properties if k not in record]
        if missing and self._invalid is None:
            self._invalid = f"missing key properties {missing}"

    def process_record(self, record: dict, context: dict) -> None:
        """Map and deliver (or reject) one record."""
        invalid, self._invalid = self._invalid, None
        self._pipeline.accept(self._lane, record, invalid)
