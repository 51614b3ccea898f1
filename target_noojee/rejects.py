"""The reject file (and other JSON Lines outputs).

One JSON line per record that can never be delivered, with its reason.

Lines are written and flushed at once; `sync()` fsyncs them and is called before any STATE that
covers them goes out, so a reject is on disk before the tap is told the record is done.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import math
import os
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Protocol

LOGGER = logging.getLogger("target_noojee")


def reject_entry(
    *,
    stream: str,
    key: Any,
    code: int | str,
    message: str,
    lead: Mapping[str, Any],
    endpoint: str | None = None,
    ids: Mapping[str, int] | None = None,
    fingerprint: str | None = None,
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
    if fingerprint:
        entry["fingerprint"] = fingerprint  # lets a later re-send update the ledger
    return entry


def lock_path(path: Path) -> Path:
    """The advisory lock beside a reject file: runs share it, `noojee-rejects resend` owns it."""
    return path.with_name(path.name + ".lock")


@contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold the reject file alone (no target run writing it), or raise BlockingIOError."""
    lock = lock_path(path)
    if lock.parent != Path():
        lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_entries(path: Path) -> list[dict[str, Any]]:
    """Every entry of a reject file (a torn last line from a killed run is skipped)."""
    if not path.exists():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            entries.append(value)
    return entries


def json_line(entry: Mapping[str, Any]) -> str:
    """One line of strict JSON that UTF-8 can hold, whatever the record carried: a lone
    surrogate (a cut emoji) is escaped, NaN and infinity become text."""
    try:
        line = json.dumps(
            entry, separators=(",", ":"), default=str, ensure_ascii=False, allow_nan=False
        )
    except ValueError:  # NaN or infinity somewhere in the record
        line = json.dumps(_finite(entry), separators=(",", ":"), default=str, ensure_ascii=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(json.loads(line), separators=(",", ":"), ensure_ascii=True)
    return line


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


class JsonLinesFile:
    """Append-only JSON Lines file, safe to share between threads (rejects, dry-run output)."""

    def __init__(self, path: str | os.PathLike[str], *, shared_lock: bool = False) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._shared_lock = shared_lock  # hold lock_path() shared while the file is open
        self._lock_handle: IO[str] | None = None
        self._handle: IO[str] | None = None
        self._dirty = False
        self.written = 0

    def write(self, entry: Mapping[str, Any]) -> None:
        """Append one entry and flush it to the OS."""
        line = json_line(entry)
        with self._lock:
            if self._handle is None:
                if self.path.parent != Path():
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                if self._shared_lock:
                    # Waits while `noojee-rejects resend` rewrites the file.
                    self._lock_handle = lock_path(self.path).open("a")
                    fcntl.flock(self._lock_handle, fcntl.LOCK_SH)
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
            if self._lock_handle is not None:
                self._lock_handle.close()  # releases the shared lock
                self._lock_handle = None


def rewrite(path: Path, entries: list[dict[str, Any]]) -> None:
    """Replace the file atomically (temp file, fsync, rename)."""
    fd, tmp = tempfile.mkstemp(prefix=path.name, dir=str(path.parent or "."))
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        for entry in entries:
            handle.write(json_line(entry) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def resolve_lines(path: Path, resolved: set[tuple[int, str]], *, before: dt.datetime) -> None:
    """Drop the lines, written before `before`, of leads (campaign, external id) that were
    re-delivered and landed; a line of this run (a new reject of the same lead) stays."""
    try:
        with exclusive(path):
            entries = read_entries(path)
            kept = [e for e in entries if _lead_of(e) not in resolved or not _older(e, before)]
            if len(kept) != len(entries):
                rewrite(path, kept)
    except BlockingIOError:
        LOGGER.warning(
            "%d re-delivered lead(s) landed; another run is writing %s, so their old lines stay "
            "there (the ledger knows they are resolved)",
            len(resolved),
            path,
        )


def _older(entry: Mapping[str, Any], moment: dt.datetime) -> bool:
    try:
        return dt.datetime.fromisoformat(str(entry.get("time"))) < moment.replace(microsecond=0)
    except ValueError:
        return False


def _lead_of(entry: Mapping[str, Any]) -> tuple[int, str] | None:
    ids, lead = entry.get("ids"), entry.get("lead")
    if not isinstance(ids, Mapping) or not isinstance(lead, Mapping):
        return None
    campaign, external_id = ids.get("fCampaignId"), lead.get("njExternalLeadId")
    if not isinstance(campaign, int) or not isinstance(external_id, str):
        return None
    return campaign, external_id


class RejectSink(Protocol):
    """Where the ledger keeps rejects (target_noojee.ledger.Ledger)."""

    def add_reject(self, entry: Mapping[str, Any]) -> None:
        """Keep one reject line durably."""
        ...


class RejectStore:
    """Rejects kept in the ledger's database (the source of truth) and in the JSON Lines file
    beside it, for people and tools that read files."""

    def __init__(self, file: JsonLinesFile, database: RejectSink | None) -> None:
        self.file = file
        self.path = file.path
        self._database = database

    def write(self, entry: Mapping[str, Any]) -> None:
        """Keep one reject: the database row is committed before this returns."""
        self.file.write(entry)
        if self._database is not None:
            self._database.add_reject(entry)

    def sync(self) -> None:
        """fsync the file's lines (the database commits each row itself)."""
        self.file.sync()

    def close(self) -> None:
        """Sync and close the file."""
        self.file.close()
