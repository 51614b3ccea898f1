"""Reading Singer messages: numbered lines, malformed input named by its line, never echoed."""

from __future__ import annotations

import contextlib
import gzip
import json
import typing as t
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping

from jsonschema.exceptions import SchemaError
from singer_sdk.exceptions import InvalidJSONSchema, RecordsWithoutSchemaException
from singer_sdk.helpers._batch import StorageTarget
from singer_sdk.io_base import SingerReader
from singer_sdk.singerlib.exceptions import InvalidInputLine


class InputError(Exception):
    """The input is not valid Singer; str() names the line number."""


class RecordBeforeSchema(InputError, RecordsWithoutSchemaException):
    """A RECORD arrived for a stream whose SCHEMA has not been seen."""


def read_batch_file(encoding: Mapping[str, t.Any], url: str) -> Iterator[t.Any]:
    """The records of one file of a BATCH message (JSONL, gzipped or not), one at a time.

    Raises InputError naming the file (and the line) when it cannot be read: its records can
    be neither delivered nor rejected, so the run stops before any STATE after it.
    """
    fmt, compression = encoding.get("format"), encoding.get("compression")
    if fmt != "jsonl" or compression not in (None, "none", "gzip"):
        raise InputError(
            f"BATCH file {url}: encoding {fmt}/{compression} is not supported (jsonl, gzip or none)"
        )
    head, tail = StorageTarget.split_url(url)
    number = 0
    try:
        with (
            StorageTarget.from_url(head).open(tail, mode="rb") as raw,
            gzip.open(raw) if compression == "gzip" else contextlib.nullcontext(raw) as lines,
        ):
            for line in lines:
                number += 1
                if line.strip():
                    yield json.loads(line)
    except (OSError, EOFError, zlib.error) as exc:  # zlib: a damaged gzip stream
        raise InputError(f"BATCH file {url} cannot be read: {exc}") from None
    except ValueError as exc:  # JSON, or UTF-8
        raise InputError(f"BATCH file {url}, line {number}: not a JSON record ({exc})") from None


class Terminated(Exception):
    """A stop was requested (SIGTERM/SIGINT): read no further."""


# What each message type must carry, and of what JSON type (checked before the SDK sees it, so
# an error names the line without echoing its content: it may hold a customer's data).
REQUIRED: dict[str, dict[str, type | tuple[type, ...]]] = {
    "RECORD": {"stream": str, "record": dict},
    "SCHEMA": {"stream": str, "schema": dict},
    "STATE": {"value": object},
    "ACTIVATE_VERSION": {"stream": str, "version": int},
}


def _modernize_schema_message(message: dict[str, t.Any]) -> None:
    """Forms taps write that the SDK refuses or misreads, read as they mean: `key_properties`
    as one string (a list of one); draft 4's boolean `exclusiveMaximum` / `exclusiveMinimum`
    and a fractional `multipleOf` (singer-io and pipelinewise tap-postgres write both for
    `numeric` columns: 560.05 is no multiple of 0.01 in binary floating point)."""
    keys = message.get("key_properties")
    if isinstance(keys, str):
        message["key_properties"] = [keys]
    message["schema"] = _tap_numbers(message["schema"])


def _tap_numbers(node: t.Any) -> t.Any:
    if isinstance(node, list):
        return [_tap_numbers(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _tap_numbers(v) for k, v in node.items()}
    step = out.get("multipleOf")
    if isinstance(step, float) and not step.is_integer():
        del out["multipleOf"]  # a precision, not a constraint a dialer needs checked
    for exclusive, bound in (("exclusiveMaximum", "maximum"), ("exclusiveMinimum", "minimum")):
        flag = out.get(exclusive)
        if isinstance(flag, bool):
            del out[exclusive]
            if flag and bound in out:
                out[exclusive] = out.pop(bound)
    return out


class NumberedReader(SingerReader):
    """The SDK's reader, counting lines so an error can name the one at fault.

    A bad line is never logged whole: it may hold a customer's data.
    """

    def __init__(self) -> None:
        super().__init__()
        self.line_number = 0
        self.waiting = False  # True while blocked reading the next line (safe to interrupt)
        self.should_stop: Callable[[], bool] = lambda: False

    def deserialize_json(self, line: str) -> dict:
        """Parse one line; a failure names the line, not its content."""
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"input line {self.line_number} is not valid JSON ({exc.msg} at column {exc.colno})"
            ) from None
        if not isinstance(value, dict):
            raise InputError(f"input line {self.line_number} is not a JSON object")
        return value

    def process_lines(
        self,
        file_input: t.IO[str] | None,
        callbacks: dict[str, Callable[[dict], None]],
    ) -> t.Counter[str]:
        """Dispatch each line to its callback, naming the line in any input error."""
        stats: dict[str, int] = defaultdict(int)
        lines = iter(file_input or self.default_input)
        while True:
            self.waiting = True
            try:
                if self.should_stop():
                    raise Terminated
                line = next(lines, None)
            finally:
                self.waiting = False
            if line is None:
                break
            self.line_number += 1
            if not line.strip():
                continue
            message = self.deserialize_json(line)
            kind = message.get("type")
            if not isinstance(kind, str):
                raise InputError(f"input line {self.line_number} has no message type")
            callback = callbacks.get(kind)
            if callback is None:
                raise InputError(f"input line {self.line_number}: unknown message type {kind!r}")
            self._check_shape(kind, message)
            if kind == "SCHEMA":
                _modernize_schema_message(message)
            try:
                callback(message)
            except InvalidInputLine:
                raise InputError(
                    f"input line {self.line_number}: a {kind} message lacks a required key"
                ) from None
            except (SchemaError, InvalidJSONSchema) as exc:
                cause = exc.message if isinstance(exc, SchemaError) else str(exc).split("\n")[0]
                raise InputError(
                    f"input line {self.line_number}: the SCHEMA of stream "
                    f"{message.get('stream')!r} is not a valid JSON Schema ({cause})"
                ) from None
            except RecordsWithoutSchemaException:
                raise RecordBeforeSchema(
                    f"input line {self.line_number}: RECORD for stream "
                    f"{message.get('stream')!r} before its SCHEMA"
                ) from None
            stats[kind] += 1
        return Counter(**stats)

    def _check_shape(self, kind: str, message: dict) -> None:
        for key, expected in REQUIRED.get(kind, {}).items():
            if key not in message:
                raise InputError(f"input line {self.line_number}: a {kind} message needs `{key}`")
            if not isinstance(message[key], expected):
                name = getattr(expected, "__name__", "value").replace("dict", "object")
                raise InputError(
                    f"input line {self.line_number}: `{key}` of a {kind} message must be a {name}"
                )
        if kind == "SCHEMA" and not isinstance(message["schema"].get("properties"), dict):
            raise InputError(
                f"input line {self.line_number}: the SCHEMA of stream {message['stream']!r} "
                "has no `properties` object"
            )
