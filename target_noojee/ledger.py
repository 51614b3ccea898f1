"""The lead ledger: a durable record of what each lead last was when it reached the PBX.

One SQLite row per lead, keyed by PBX, campaign and njExternalLeadId: a fingerprint of the last
mapped lead, its outcome (delivered or rejected, with the code) and when. It lets a run skip
leads that did not change, pick insert or update in one call, and survive kills: SQLite in WAL
mode commits atomically, so a kill at any moment leaves it consistent. A row is written only
after the PBX answered, so the ledger never claims a delivery that did not happen (a kill
between the answer and the write costs one redundant update on the next run, nothing more).

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

_SCHEMA = """
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
"""


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
    outcome: str  # delivered | rejected
    code: str | None
    at: float


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
        self._db.execute(_SCHEMA)

    def get(self, campaign_id: int, external_id: str) -> Entry | None:
        """The last outcome recorded for a lead, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT fingerprint, outcome, code, at FROM leads "
                "WHERE pbx = ? AND campaign_id = ? AND external_id = ?",
                (self._pbx, campaign_id, external_id),
            ).fetchone()
        return Entry(*row) if row else None

    def record(
        self,
        campaign_id: int,
        external_id: str,
        lead_fingerprint: str,
        outcome: str,
        code: int | str | None = None,
    ) -> None:
        """Remember the outcome of a lead (one atomic upsert)."""
        with self._lock:
            self._db.execute(
                "INSERT INTO leads (pbx, campaign_id, external_id, fingerprint, outcome, code, at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (pbx, campaign_id, external_id) DO UPDATE SET "
                "fingerprint = excluded.fingerprint, outcome = excluded.outcome, "
                "code = excluded.code, at = excluded.at",
                (
                    self._pbx,
                    campaign_id,
                    external_id,
                    lead_fingerprint,
                    outcome,
                    None if code is None else str(code),
                    time.time(),
                ),
            )

    def count(self) -> int:
        """Rows for this PBX (for tests and operators)."""
        with self._lock:
            row = self._db.execute("SELECT COUNT(*) FROM leads WHERE pbx = ?", (self._pbx,))
            return int(row.fetchone()[0])

    def close(self) -> None:
        """Close the connection (checkpointing the WAL)."""
        with self._lock:
            self._db.close()
