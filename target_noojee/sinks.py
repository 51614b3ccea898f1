"""SDK glue: hand each record to the pipeline; schema failures become local rejects, not crashes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from singer_sdk.exceptions import InvalidRecord
from singer_sdk.sinks import RecordSink

if TYPE_CHECKING:
    from target_noojee.target import TargetNoojee


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
        """Validate against the stream's schema; a failure marks the record for rejection."""
        self._invalid = None
        if self._validator is not None:
            try:
                self._validator.validate(record)
            except InvalidRecord as exc:
                self._invalid = f"does not match the stream's schema: {exc.error_message}"
                return record
        self._parse_timestamps_in_record(
            record=record, schema=self.schema, treatment=self.datetime_error_treatment
        )
        return record

    def _singer_validate_message(self, record: dict) -> None:
        """A record without its key properties is rejected, not fatal."""
        missing = [k for k in self._key_properties if k not in record]
        if missing and self._invalid is None:
            self._invalid = f"missing key properties {missing}"

    def process_record(self, record: dict, context: dict) -> None:
        """Map and deliver (or reject) one record."""
        invalid, self._invalid = self._invalid, None
        self._pipeline.accept(self._lane, record, invalid)
