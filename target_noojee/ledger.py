"""The lead ledger: a durable record of what each lead last was when it reached the PBX.

One SQLite row per lead, keyed by PBX, campaign and njExternalLeadId: a fingerprint of the last
mapped lead, its outcome (delivered, rejected with the code, rejected locally, closed) and when;
for the lifecycle (README "Closing leads") its stream, the last full-table version it was seen
in, whether the PBX holds it and whether it is closed, and a reject's lead for re-delivery. A
`schema_version` table and in-place upgrades keep a ledger of any earlier version working.

It lets a run skip leads that did not change, pick insert or update in one call, and survive
kills: SQLite in WAL mode commits atomically, so a kill at any moment leaves it consistent. A row
is written only after the PBX answered, so the ledger never claims a delivery that did not happen
(a kill between the answer and the write costs one redundant update on the next run).

What it cannot see: changes made on the PBX itself (an agent editing a lead, a manual import, a
lead deleted there). `full_resend: true` ignores it for one run.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DELIVERED = "delivered"
REJECTED = "rejected"
LOCAL = "local"  # rejected before sending; remembered so an unchanged record is not re-rejected
CLOSED = "closed"
CLOSE_UNKNOWN = "close_unknown"  # a close the PBX answered 101 to: it does not hold the lead
CLOSED_OUTCOMES = frozenset({CLOSED, CLOSE_UNKNOWN})

SCHEMA_VERSION = 2
_TABLES = (
    """
    CREATE TABLE IF NOT EXISTS leads (
        pbx TEXT NOT NULL,
        campaign_id INTEGER NOT NULL,
        external_id TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        outcome TEXT NOT NULL,
        code TEXT,
        at REAL NOT NULL,
        PRIMARY KEY (pbx, campaign_id, external_id)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE IF NOT EXISTS versions (
        pbx TEXT NOT NULL,
        campaign_id INTEGER NOT NULL,
        stream TEXT NOT NULL,
        version INTEGER NOT NULL,
        ended_at REAL NOT NULL,
        PRIMARY KEY (pbx, campaign_id, stream, version)
    ) WITHOUT ROWID
    """,
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
)
# Columns added after version 1, with how a row written by version 1 fills them.
_ADDED_COLUMNS = (
    ("stream", "TEXT", None),  # the stream that last wrote the lead; NULL: never closed by mirror
    ("version", "INTEGER", None),  # the last full-table version the lead was seen in
    ("on_pbx", "INTEGER NOT NULL DEFAULT 0", "outcome = 'delivered'"),  # the PBX holds it, open
    ("lead", "TEXT", None),  # a reject's lead as sent (JSON), for its re-delivery
    ("endpoint", "TEXT", None),
    ("ids", "TEXT", None),
    ("redeliveries", "INTEGER NOT NULL DEFAULT 0", None),
    ("closed", "INTEGER NOT NULL DEFAULT 0", None),  # closed until a delivery reopens it
)


def default_ledger_path() -> Path:
    """Under Meltano: its system folder (.meltano); otherwise the working directory."""
    system_dir = os.environ.get("MELTANO_SYS_DIR_ROOT")
    if system_dir:
        return Path(system_dir) / "target-noojee" / "ledger.sqlite"
    root = os.environ.get("MELTANO_PROJECT_ROOT")
    if root:
        return Path(root) / ".meltano" / "target-noojee" / "ledger.sqlite"
    return Path("noojee-ledger.sqlite")


def pbx_identity(base_url: str) -> str:
    """The PBX part of the key: scheme, host, port and path of base_url (never the key)."""
    parts = urlsplit(base_url.strip())
    return f"{parts.scheme.lower()}://{(parts.netloc or '').lower()}{parts.path.rstrip('/')}"


def fingerprint(values: Mapping[str, Any]) -> str:
    """A stable hash of a mapped lead (field order does not matter)."""
    canonical = json.dumps(values, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest()


@dataclass(frozen=True)
class Entry:
    """What the ledger knows of one lead."""

    fingerprint: str
    outcome: str  # delivered | rejected | local | closed | close_unknown
    code: str | None
    at: float
    stream: str | None = None
    version: int | None = None
    on_pbx: bool = False  # the PBX holds the lead (delivered, or closed there)
    redeliveries: int = 0
    closed: bool = False  # closed (or closed unknown) and not reopened since


@dataclass(frozen=True)
class DueReject:
    """A rejected lead whose re-delivery is due."""

    external_id: str
    code: int
    endpoint: str
    ids: dict[str, int]
    lead: dict[str, str]
    fingerprint: str
    stream: str | None
    redeliveries: int


_ENTRY = "fingerprint, outcome, code, at, stream, version, on_pbx, redeliveries, closed"


class Ledger:
    """Thread-safe access to the ledger file (several processes may share it)."""

    def __init__(self, path: str | os.PathLike[str], pbx: str) -> None:
        self.path = Path(path)
        if self.path.parent != Path():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._pbx = pbx
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            str(self.path), timeout=30, check_same_thread=False, isolation_level=None
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # atomic across kills; cheap commits
        self._upgrade()

    def _upgrade(self) -> None:
        """Bring a ledger of any earlier version to this one, in place, in one transaction."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for table in _TABLES:
                db.execute(table)
            have = {row[1] for row in db.execute("PRAGMA table_info(leads)")}
            for name, kind, fill in _ADDED_COLUMNS:
                if name not in have:
                    db.execute(f"ALTER TABLE leads ADD COLUMN {name} {kind}")
                    if fill is not None:
                        db.execute(f"UPDATE leads SET {name} = ({fill})")
            db.execute("DELETE FROM schema_version")
            db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    @property
    def schema_version(self) -> int:
        """The version of the ledger's tables."""
        with self._lock:
            row = self._db.execute("SELECT version FROM schema_version").fetchone()
        return int(row[0]) if row else 0

    def get(self, campaign_id: int, external_id: str) -> Entry | None:
        """The last outcome recorded for a lead, or None."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {_ENTRY} FROM leads WHERE pbx = ? AND campaign_id = ? AND external_id = ?",
                (self._pbx, campaign_id, external_id),
            ).fetchone()
        return _entry(row) if row else None

    def record(
        self,
        campaign_id: int,
        external_id: str,
        lead_fingerprint: str,
        outcome: str,
        code: int | str | None = None,
        *,
        stream: str | None = None,
        version: int | None = None,
        rejected_lead: Mapping[str, Any] | None = None,
        endpoint: str | None = None,
        ids: Mapping[str, int] | None = None,
        redelivery: bool = False,
    ) -> None:
        """Remember the outcome of a lead (one atomic upsert).

        A rejected lead keeps its body, endpoint and ids for re-delivery; `redelivery` counts a
        failed re-delivery, anything else starts the count again.
        """
        on_pbx = {DELIVERED: 1, CLOSED: 1, CLOSE_UNKNOWN: 0}.get(outcome)
        closed = {DELIVERED: 0, CLOSED: 1, CLOSE_UNKNOWN: 1}.get(outcome)
        keep = rejected_lead is not None and outcome == REJECTED
        with self._lock:
            self._db.execute(
                "INSERT INTO leads (pbx, campaign_id, external_id, fingerprint, outcome, code, at, "
                "stream, version, on_pbx, lead, endpoint, ids, redeliveries, closed) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (pbx, campaign_id, external_id) DO UPDATE SET "
                "fingerprint = excluded.fingerprint, outcome = excluded.outcome, "
                "code = excluded.code, at = excluded.at, "
                "stream = COALESCE(excluded.stream, leads.stream), "
                "version = COALESCE(excluded.version, leads.version), "
                "on_pbx = COALESCE(?, leads.on_pbx), closed = COALESCE(?, leads.closed), "
                "lead = excluded.lead, endpoint = excluded.endpoint, ids = excluded.ids, "
                "redeliveries = CASE WHEN ? THEN leads.redeliveries + 1 ELSE 0 END",
                (
                    self._pbx,
                    campaign_id,
                    external_id,
                    lead_fingerprint,
                    outcome,
                    None if code is None else str(code),
                    time.time(),
                    stream,
                    version,
                    on_pbx or 0,
                    json.dumps(dict(rejected_lead)) if keep and rejected_lead else None,
                    endpoint if keep else None,
                    json.dumps(dict(ids)) if keep and ids else None,
                    1 if redelivery else 0,
                    closed or 0,
                    on_pbx,
                    closed,
                    1 if redelivery and outcome == REJECTED else 0,
                ),
            )

    def seen(self, campaign_id: int, stream: str, version: int, external_ids: list[str]) -> None:
        """Mark leads as present in a full-table version of a stream (one transaction)."""
        if not external_ids:
            return
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(
                    "UPDATE leads SET stream = ?, version = ? "
                    "WHERE pbx = ? AND campaign_id = ? AND external_id = ?",
                    [(stream, version, self._pbx, campaign_id, e) for e in external_ids],
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def open_leads(self, campaign_id: int, stream: str) -> list[tuple[str, int | None]]:
        """(external id, last version seen) of the stream's leads the PBX holds open."""
        with self._lock:
            rows = self._db.execute(
                "SELECT external_id, version FROM leads "
                "WHERE pbx = ? AND campaign_id = ? AND stream = ? AND on_pbx = 1 AND closed = 0",
                (self._pbx, campaign_id, stream),
            ).fetchall()
        return [(str(e), None if v is None else int(v)) for e, v in rows]

    def version_before(self, campaign_id: int, stream: str, version: int) -> int | None:
        """The latest version of a stream before `version` that reached the end of input."""
        with self._lock:
            row = self._db.execute(
                "SELECT MAX(version) FROM versions "
                "WHERE pbx = ? AND campaign_id = ? AND stream = ? AND version < ?",
                (self._pbx, campaign_id, stream, version),
            ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def end_version(self, campaign_id: int, stream: str, version: int) -> None:
        """Record that a version of a stream reached the end of input."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO versions (pbx, campaign_id, stream, version, ended_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (self._pbx, campaign_id, stream, version, time.time()),
            )

    def due_rejects(
        self, campaign_id: int, after_s: Mapping[int, float], max_redeliveries: int
    ) -> list[DueReject]:
        """Rejected leads of a campaign whose code's wait has passed, fewest tries first."""
        if not after_s:
            return []
        now = time.time()
        with self._lock:
            rows = self._db.execute(
                "SELECT external_id, code, endpoint, ids, lead, fingerprint, stream, "
                "redeliveries, at FROM leads WHERE pbx = ? AND campaign_id = ? "
                "AND outcome = ? AND lead IS NOT NULL AND redeliveries < ?",
                (self._pbx, campaign_id, REJECTED, max_redeliveries),
            ).fetchall()
        due = []
        for ext, code, endpoint, ids, lead, fp, stream, tries, at in rows:
            number = int(code) if code is not None and str(code).isdigit() else None
            if number is None or number not in after_s or at + after_s[number] > now:
                continue
            due.append(
                DueReject(
                    str(ext),
                    number,
                    str(endpoint),
                    json.loads(ids),
                    json.loads(lead),
                    str(fp),
                    stream,
                    int(tries),
                )
            )
        return due

    def count(self) -> int:
        """Rows for this PBX (for tests and operators)."""
        with self._lock:
            row = self._db.execute("SELECT COUNT(*) FROM leads WHERE pbx = ?", (self._pbx,))
            return int(row.fetchone()[0])

    def close(self) -> None:
        """Close the connection (checkpointing the WAL)."""
        with self._lock:
            self._db.close()


def _entry(row: tuple[Any, ...]) -> Entry:
    fp, outcome, code, at, stream, version, on_pbx, tries, closed = row
    return Entry(
        fp, outcome, code, at, stream, version, bool(on_pbx), int(tries or 0), bool(closed)
    )
