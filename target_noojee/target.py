"""target-noojee: settings schema, the Target subclass, STATE watermark wiring, exit handling."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Mapping
from types import FrameType
from typing import IO, Any

import click
from jsonschema import ValidationError
from singer_sdk import Target
from singer_sdk import typing as th
from singer_sdk.exceptions import ConfigValidationError, RecordsWithoutSchemaException
from singer_sdk.singerlib.exceptions import InvalidInputLine

from target_noojee.cli_config import (
    EXIT_CONFIG,
    EXIT_FAILED,
    check_config_args,
    text_streams_escape_what_utf8_cannot_hold,
)
from target_noojee.delivery import DeliveryStopped, Interrupted
from target_noojee.input import InputError, NumberedReader, Terminated, read_batch_file
from target_noojee.pipeline import DEFAULTS, Pipeline
from target_noojee.settings import ConfigError, number_from_text
from target_noojee.sinks import NoojeeSink

LOGGER = logging.getLogger("target_noojee")

EXIT_INPUT = 3  # the input is not valid Singer
SAME_STOP_REQUEST_S = 2.0  # a second signal this soon after the first is the same request

# SDK built-ins this target cannot honour: set to anything but their default, the run stops.
INERT_BUILTINS = {
    "load_method": (
        "append-only",
        "this target updates and inserts leads one by one: choose that with `operation` "
        "(update, insert, upsert)",
    ),
    "batch_size_rows": (
        None,
        "leads are sent one call each as records arrive, paced to the PBX: "
        "`max_concurrency` / `concurrency` set how many are in flight",
    ),
}

_ID = th.IntegerType(minimum=1)


def _seconds(name: str, minimum: int, description: str) -> th.Property:
    """A duration setting in seconds, with its default from DEFAULTS."""
    return th.Property(
        name, th.NumberType(minimum=minimum), default=DEFAULTS[name], description=description
    )


def _lead_properties() -> list[th.Property]:
    """The lead settings: valid at the top level and inside `streams.<name>`."""
    return [
        th.Property("template_id", _ID, description="Campaign template id, sent as fTemplateId."),
        th.Property("campaign_id", _ID, description="Campaign id, sent as fCampaignId."),
        th.Property("allocation_id", _ID, description="Allocation id, sent as fAllocationId."),
        th.Property(
            "operation",
            th.StringType,
            allowed_values=["update", "insert", "upsert"],
            description="update (default), insert, or upsert (update; insert when not found).",
        ),
        th.Property(
            "mapping",
            th.ObjectType(additional_properties=th.StringType),
            description="Lead field -> path of the source field; dotted paths reach into "
            "nested objects (address.city). Lead fields not in the mapping are not sent.",
        ),
        th.Property(
            "phone_fields",
            th.ArrayType(th.StringType),
            description="Lead fields holding phone numbers (default: mapped fields whose name "
            "contains 'phone').",
        ),
        th.Property(
            "phone_region",
            th.StringType,
            description="Region for phone numbers without a country code (default AU).",
        ),
        th.Property(
            "timezone",
            th.StringType,
            description="IANA zone of the PBX's contact hours for njCallBackDate "
            "(default Australia/Melbourne).",
        ),
        th.Property(
            "allow_duplicates",
            th.BooleanType,
            description="Insert: send allowDuplicates=true (skip the duplicate-phone check).",
        ),
        th.Property(
            "fallback_disposition",
            th.StringType,
            description="Disposition sent on a second try after a 107 (<No Change> on a "
            "never-dialed lead); unset: such records are rejected.",
        ),
        th.Property(
            "lead_schema",
            th.ObjectType(additional_properties=True),
            description="JSON Schema every mapped lead must satisfy (on top of built-in checks).",
        ),
        th.Property(
            "close_disposition",
            th.StringType,
            description="Disposition that closes a lead (e.g. Do Not Call); closing is off "
            "while unset.",
        ),
        th.Property(
            "close_field",
            th.StringType,
            description="Path of a source field whose true value (true/yes/y/1) closes the lead.",
        ),
        th.Property(
            "mirror",
            th.BooleanType,
            description="A complete full-table version closes the stream's leads it did not "
            "contain (default false).",
        ),
        th.Property(
            "max_close_ratio",
            th.NumberType(minimum=0, maximum=1),
            description="A run closing more than this share of a stream's open leads (and "
            "more than 10) closes none and fails (default 0.1).",
        ),
        th.Property(
            "reopen_disposition",
            th.StringType,
            description="Disposition sent when a closed lead comes back open in the source "
            "without a mapped njDisposition.",
        ),
        th.Property(
            "redeliver_after_s",
            th.ObjectType(additional_properties=th.NumberType),
            description="Response code -> seconds: a lead rejected with that code is sent "
            "again once this long has passed (default: never).",
        ),
        th.Property(
            "max_redeliveries",
            th.IntegerType(minimum=0),
            description="Failed re-deliveries after which a lead stays rejected until its "
            "record changes (default 5).",
        ),
        th.Property(
            "contact_hours_timezones",
            th.ObjectType(additional_properties=th.StringType),
            description="Contact-hours profile name -> IANA zone: a lead whose njContactHours "
            "names one has its njCallBackDate in that zone (others use timezone).",
        ),
    ]


def _config_schema() -> dict[str, Any]:
    lead = _lead_properties()
    return th.PropertiesList(
        th.Property(
            "base_url",
            th.StringType,
            required=True,
            description="PBX root, e.g. https://pbx.example.com.au",
        ),
        th.Property(
            "api_key",
            th.StringType,
            required=True,
            secret=True,
            description="Noojee API key (a secret: never logged).",
        ),
        *lead,
        th.Property(
            "streams",
            th.ObjectType(additional_properties=th.ObjectType(*_lead_properties())),
            description="Stream name -> overrides of any lead setting above.",
        ),
        th.Property(
            "reject_file",
            th.StringType,
            default=DEFAULTS["reject_file"],
            description="JSON Lines file for records that can never be delivered.",
        ),
        th.Property(
            "ledger_path",
            th.StringType,
            description="SQLite file remembering what each lead last was on the PBX (default: "
            "$MELTANO_PROJECT_ROOT/.meltano/target-noojee/ledger.sqlite under Meltano, else "
            "noojee-ledger.sqlite).",
        ),
        th.Property(
            "ledger_url",
            th.StringType,
            secret=True,
            description="SQLAlchemy URL of the ledger (and of the rejects), e.g. "
            "postgresql://user:password@host/db (a secret: it may hold a password); "
            "default: the SQLite file ledger_path.",
        ),
        th.Property(
            "full_resend",
            th.BooleanType,
            default=False,
            description="Ignore the ledger for this run: send every lead even if unchanged.",
        ),
        th.Property(
            "max_reject_ratio",
            th.NumberType(minimum=0, maximum=1),
            description="Fail the run (after forwarding STATE for what was settled) when more "
            "than this share of its records is rejected; unset: no limit.",
        ),
        th.Property(
            "max_concurrency",
            th.IntegerType(minimum=1, maximum=256),
            default=DEFAULTS["max_concurrency"],
            description="Upper bound on lead calls in flight; the pace adapts below it. A PBX "
            "of C slots at S ms a call, L ms away, needs about C x (S + L) / S calls in flight.",
        ),
        th.Property(
            "concurrency",
            th.IntegerType(minimum=1, maximum=256),
            description="Pin a fixed number of calls in flight instead of adapting.",
        ),
        _seconds(
            "request_timeout_s",
            1,
            "Seconds to wait for a reply (longer than the PBX's 60 s queue limit).",
        ),
        _seconds(
            "max_retry_time_s",
            0,
            "How long one record may keep failing transiently before the run fails.",
        ),
        _seconds(
            "overload_pause_s",
            0,
            "Minimum pause before retrying a call answered 109 (a manual import "
            "on the PBX may be running).",
        ),
        _seconds(
            "shutdown_grace_s",
            0,
            "On SIGTERM/SIGINT: seconds to wait for calls in flight.",
        ),
        _seconds(
            "lock_wait_s",
            0,
            "How long to wait for another run sending the same stream and campaign to this "
            "PBX before stopping.",
        ),
        _seconds(
            "progress_interval_s",
            1,
            "Seconds between progress lines while sending.",
        ),
        th.Property(
            "preflight_timeout_s",
            th.NumberType(minimum=0),
            description="Before the first lead: seconds to keep retrying a PBX that does not "
            "answer (maintenance) before the run fails (default 60, or max_retry_time_s if "
            "shorter).",
        ),
        th.Property(
            "report_file",
            th.StringType,
            description="JSON file, or object-storage URL (s3://, gs://, az:// with its "
            "fsspec backend, e.g. s3fs, installed), receiving the run report (counts per "
            "stream, outcome and response code) at the end of the run; unset: none.",
        ),
        th.Property(
            "ca_bundle",
            th.StringType,
            description="PEM file of the CAs to trust for an https:// PBX (wins over "
            "REQUESTS_CA_BUNDLE; default: the system's CAs).",
        ),
        th.Property(
            "tls_verify",
            th.BooleanType,
            default=True,
            description="Check the PBX's TLS certificate; false logs a warning at start.",
        ),
        # SDK built-ins declared here so that --about says what they do in this target.
        th.Property(
            "load_method",
            th.StringType,
            default=INERT_BUILTINS["load_method"][0],
            allowed_values=["append-only", "upsert", "overwrite"],
            description="SDK setting this target does not use: leave append-only; choose "
            "update, insert or upsert with `operation` (any other value stops the run).",
        ),
        th.Property(
            "batch_size_rows",
            th.IntegerType(minimum=1),
            description="SDK setting this target does not use: each lead is one call, paced "
            "by max_concurrency (any value stops the run).",
        ),
        th.Property(
            "dry_run",
            th.BooleanType,
            default=False,
            description="Map and validate everything, send nothing.",
        ),
        th.Property(
            "dry_run_file",
            th.StringType,
            default=DEFAULTS["dry_run_file"],
            description="Dry run: JSON Lines file receiving each lead that would be sent.",
        ),
    ).to_dict()


class StoppedBySignal(Exception):
    """The run was stopped by a signal with records left unsent."""

    def __init__(self, signum: int, unsent: int) -> None:
        super().__init__(
            f"stopped by signal {signum} with {unsent} record(s) unsent; no STATE covers them"
        )
        self.signum = signum


# Failures that are not about one record's data: they stop the run as before.
_NOT_THE_RECORDS_FAULT = (
    ConfigError,
    InputError,
    InvalidInputLine,
    RecordsWithoutSchemaException,
    DeliveryStopped,
    Interrupted,
    Terminated,
    StoppedBySignal,
)


class TargetNoojee(Target):
    """Loads records into Noojee Contact leads, paced to the PBX, STATE only when settled."""

    name = "target-noojee"
    config_jsonschema = _config_schema()
    default_sink_class = NoojeeSink
    message_reader_class = NumberedReader

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._stop_signal: int | None = None
        self._map_failures: dict[str, Exception] = {}  # alias -> its map's error, this record
        self._stop_at = 0.0
        self.pipeline: Pipeline
        super().__init__(*args, **kwargs)
        refuse_inert_builtins(self.config)
        self.pipeline = Pipeline(self.config)
        if isinstance(self.message_reader, NumberedReader):
            self.message_reader.should_stop = self._stop_requested

    # --- config ------------------------------------------------------------------------------

    def _validate_config(self, *, raise_errors: bool = True) -> list[str]:
        """Validate without echoing values (the API key must never reach a log)."""
        self._type_numbers_given_as_text()
        try:
            return super()._validate_config(raise_errors=raise_errors)
        except ConfigValidationError as exc:
            raise ConfigError("config", _config_errors_line(dict(self.config))) from exc

    def _type_numbers_given_as_text(self) -> None:
        """Number settings given as text are read as numbers (`number_from_text`)."""
        for name, schema in self.config_jsonschema["properties"].items():
            if name in self._config:
                self._config[name] = number_from_text(name, schema, self._config[name])

    # --- messages --------------------------------------------------------------------------

    def _process_record_message(self, message_dict: dict) -> None:
        seq = self.pipeline.open_record()
        record = message_dict.get("record")
        version = message_dict.get("version")
        self.pipeline.incoming(
            # Read here: with add_record_metadata false the SDK drops _sdc_* before the sink.
            deleted=isinstance(record, dict) and bool(record.get("_sdc_deleted_at")),
            version=version if isinstance(version, int) and not isinstance(version, bool) else None,
        )
        stream = message_dict["stream"]
        self._map_failures = {}
        self._guard_stream_maps(stream)
        try:
            super()._process_record_message(message_dict)
            aliases = self._aliases(stream)
            # Streams whose stream map filtered the record out still hold its row (mirror).
            self.pipeline.filtered([a for a in aliases if a not in self._map_failures], record)
            for alias, exc in self._map_failures.items():
                # Its id may be the failed map's to compute: not trusted (README).
                self.pipeline.reject_unread(alias, record, _one_line(exc), id_known=False)
        except _NOT_THE_RECORDS_FAULT:
            raise
        except Exception as exc:  # the SDK failed on this record (a parser ...)
            if self.pipeline.failed_inside():
                raise  # our own code failed on the record: a bug, not the data
            self.pipeline.reject_unread(stream, record, _one_line(exc))
        finally:
            self.pipeline.close_record(seq)

    def _guard_stream_maps(self, stream: str) -> None:
        """A stream map that raises on a record fails that record in its own output stream
        only: the SDK's loop goes on to the stream's other maps (`__source__` splits)."""
        for stream_map in self.mapper.stream_maps.get(stream, []):
            if getattr(stream_map, "_noojee_guarded", False):
                continue
            transform, alias = stream_map.transform, stream_map.stream_alias

            def guarded(record: dict, transform: Any = transform, alias: str = alias) -> Any:
                try:
                    return transform(record)
                except Exception as exc:  # the data's fault: rejected in this stream
                    self._map_failures[alias] = exc
                    return None

            stream_map.transform = guarded  # type: ignore[method-assign]
            stream_map._noojee_guarded = True  # type: ignore[attr-defined]

    def _process_batch_message(self, message_dict: dict) -> None:
        """A BATCH message: each record of its files goes the way of a RECORD message (stream
        maps, validation, the STATE watermark); a file that cannot be read stops the run."""
        self._assert_line_requires(message_dict, requires={"stream", "encoding", "manifest"})
        stream = message_dict["stream"]
        for path in message_dict["manifest"]:
            for record in read_batch_file(message_dict["encoding"], path):
                self._process_record_message({"type": "RECORD", "stream": stream, "record": record})

    def _process_activate_version_message(self, message_dict: dict) -> None:
        """A full-table version begins or, after its records, is complete (README mirror)."""
        stream = message_dict["stream"]
        self.pipeline.activate_version(self._aliases(stream), int(message_dict["version"]))

    def _aliases(self, stream: str) -> list[str]:
        """The streams a tap stream becomes through stream maps (itself without any)."""
        return [m.stream_alias for m in self.mapper.stream_maps.get(stream, [])] or [stream]

    def _process_state_message(self, message_dict: dict) -> None:
        self._assert_line_requires(message_dict, requires={"value"})
        self.pipeline.add_state(message_dict["value"])

    def _write_state_message(self, state: dict) -> None:
        """The SDK's own STATE writes are disabled: the watermark writes STATE."""

    def listen(self, file_input: IO[str] | None = None) -> None:  # type: ignore[misc]
        """Read and deliver everything; on a signal, stop cleanly; on a failure, stop at once."""
        try:
            super().listen(file_input)
        except (Terminated, Interrupted):
            signum = self._stop_signal or signal.SIGTERM
            unsent = self.pipeline.shutdown(stopped_by=lambda n: str(StoppedBySignal(signum, n)))
            if unsent:
                raise StoppedBySignal(signum, unsent) from None
            LOGGER.info(
                "stopped by signal %s; every record received was settled", self._stop_signal
            )
        except BaseException as exc:
            self.pipeline.shutdown(error=exc)  # settle what is already on the wire, then stop
            raise

    def process_endofpipe(self) -> None:
        """End of input: let the SDK clean up its sinks, then wait for every lead to settle."""
        super().process_endofpipe()
        self.pipeline.finish()

    # --- termination -------------------------------------------------------------------------

    def _stop_requested(self) -> bool:
        return self._stop_signal is not None

    def _handle_termination(self, signum: int, frame: FrameType | None) -> None:
        """First signal: stop intake and shut down cleanly. A later one: exit at once.

        Ctrl+C under `meltano run` sends SIGINT to the process group and Meltano then sends
        SIGTERM: a second signal within SAME_STOP_REQUEST_S of the first is that same request.
        """
        if not hasattr(self, "pipeline"):  # still starting: nothing read, nothing sent
            self._stop_signal, self._stop_at = signum, time.monotonic()
            LOGGER.warning("signal %d during start-up: no input will be read", signum)
            return  # the reader stops at its first line (raising here is not safe)
        if self._stop_signal is not None:
            if time.monotonic() - self._stop_at < SAME_STOP_REQUEST_S:
                return

            # Never cut a STATE line in half: wait (briefly) for the watermark's lock.
            self.pipeline.watermark.lock.acquire(timeout=2)
            LOGGER.error("second signal: exiting now; unsettled records get no STATE")
            os._exit(128 + signum)
        self._stop_signal = signum
        self._stop_at = time.monotonic()
        LOGGER.warning(
            "signal %d: no more input is read; finishing calls in flight (a signal again "
            "after %g s exits at once)",
            signum,
            SAME_STOP_REQUEST_S,
        )
        self.pipeline.delivery.interrupt()
        if isinstance(self.message_reader, NumberedReader) and self.message_reader.waiting:
            raise Terminated
        # Otherwise the reader or the delivery window notices the request at its next step.


def _one_line(exc: Exception) -> str:
    """What went wrong with a record, in one line of at most 160 characters."""
    text = " ".join(str(exc).split()) or "no details"
    if len(text) > 120:
        text = text[:117] + "..."
    return f"the record could not be read ({type(exc).__name__}: {text})"


def refuse_inert_builtins(config: Mapping[str, Any]) -> None:
    """An SDK built-in that would do nothing here stops the run rather than pass unnoticed."""
    for name, (default, instead) in INERT_BUILTINS.items():
        value = config.get(name)
        if value is not None and str(getattr(value, "value", value)) != str(default):
            raise ConfigError(
                name, f"setting `{name}` is {value!r}, which target-noojee does not use: {instead}"
            )


def _config_errors_line(config: dict[str, Any]) -> str:
    """One line naming each invalid setting, without its value."""
    from jsonschema import Draft7Validator

    schema = dict(TargetNoojee.config_jsonschema)
    TargetNoojee.append_builtin_config(schema)
    problems = []
    for error in Draft7Validator(schema).iter_errors(config):
        problems.append(_describe(error))
    return "invalid config: " + "; ".join(problems or ["does not match the settings schema"])


def _describe(error: ValidationError) -> str:
    path = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    if error.validator == "required":
        return error.message.replace("is a required property", "is required")
    expected = error.validator_value
    if error.validator == "type":
        return f"setting `{path}` must be of type {expected}"
    if error.validator == "enum":
        return f"setting `{path}` must be one of {expected}"
    return f"setting `{path}` fails `{error.validator}: {expected}`"


def run(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status. Known failures are one line on stderr."""
    try:
        check_config_args(sys.argv[1:] if argv is None else argv)
        TargetNoojee.cli.main(args=argv, standalone_mode=False)
    except click.ClickException as exc:  # a bad option or argument: click's own line
        LOGGER.error("%s", exc.format_message())
        return EXIT_CONFIG
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except ConfigError as exc:
        LOGGER.error("%s", exc)
        return EXIT_CONFIG
    except (InputError, RecordsWithoutSchemaException) as exc:
        LOGGER.error("%s", exc)
        return EXIT_INPUT
    except DeliveryStopped as exc:
        LOGGER.error("run failed: %s", exc)
        return EXIT_CONFIG if exc.setting else EXIT_FAILED
    except StoppedBySignal as exc:
        LOGGER.error("%s", exc)
        return 128 + exc.signum
    return 0


def cli() -> None:
    """Console entry point."""
    text_streams_escape_what_utf8_cannot_hold()
    sys.exit(run())
