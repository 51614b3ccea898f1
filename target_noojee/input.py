"""Reading Singer messages: numbered lines, malformed input named by its line, never echoed."""

from __future__ import annotations

import json
import typing as t
from collections import Counter, defaultdict
from collections.abc import Callable

from singer_sdk.exceptions import RecordsWithoutSchemaException
from singer_sdk.io_base import SingerReader
from singer_sdk.singerlib.exceptions import InvalidInputLine


class InputError(Exception):
    """The input is not valid Singer; str() names the line number."""


class RecordBeforeSchema(InputError, RecordsWithoutSchemaException):
    """A RECORD arrived for a stream whose SCHEMA has not been seen."""


class Terminated(Exception):
    """A stop was requested (SIGTERM/SIGINT): read no further."""


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
            try:
                callback(message)
            except InvalidInputLine as exc:
                raise InputError(f"input line {self.line_number}: {exc}") from None
            except RecordsWithoutSchemaException:
                raise RecordBeforeSchema(
                    f"input line {self.line_number}: RECORD for stream "
                    f"{message.get('stream')!r} before its SCHEMA"
                ) from None
            stats[kind] += 1
        return Counter(**stats)
