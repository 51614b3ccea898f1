"""The reject file (and other JSON Lines outputs).

One JSON line per record that can never be delivered, with its reason.

Lines are written and flushed at once; `sync()` fsyncs them and is called before any STATE that
covers them goes out, so a reject is on disk before the tap is told the record is done.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any


def reject_entry(
    *,
    stream: str,
    key: Any,
    code: int | str,
    message: str,
    lead: Mapping[str, Any],
    endpoint: str | None = None,
    ids: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """One reject line: what, why, and the lead as it would have been sent."""
    entry: dict[str, Any] = {
        "stream": stream,
        "key": key,
        "code": code,
        "message": message,
        "lead": dict(lead),
        "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if endpoint:
        entry["endpoint"] = endpoint
    if ids:
        entry["ids"] = dict(ids)
    return entry


class JsonLinesFile:
    """Append-only JSON Lines file, safe to share between threads (rejects, dry-run output)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._handle: IO[str] | None = None
        self._dirty = False
        self.written = 0

    def write(self, entry: Mapping[str, Any]) -> None:
        """Append one entry and flush it to the OS."""
        line = json.dumps(entry, separators=(",", ":"), default=str, ensure_ascii=False)
        with self._lock:
            if self._handle is None:
                if self.path.parent != Path():
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                self._handle = self.path.open("a", encoding="utf-8")
            self._handle.write(line + "\n")
            self._handle.flush()
            self._dirty = True
            self.written += 1

    def sync(self) -> None:
        """fsync what was written since the last sync."""
        with self._lock:
            if self._handle is not None and self._dirty:
                os.fsync(self._handle.fileno())
                self._dirty = False

    def close(self) -> None:
        """Sync and close."""
        self.sync()
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None
