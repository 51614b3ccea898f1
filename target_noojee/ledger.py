"""The lead ledger: a durable record of what each lead last was when it reached the PBX.

One row per lead, in SQLite (a file, the default) or PostgreSQL (`ledger_url`, for workers whose
disk does not outlive the run and for several targets sharing what they know), keyed by PBX,
campaign and njExternalLeadId: a fingerprint of the last
mapped lead, its outcome (delivered, rejected with the code, rejected locally, closed) and when;
for the lifecycle (README "Closing leads") its stream, the last full-table version it was seen
in, whether the PBX holds it and whether it is closed, and a reject's lead for re-delivery. A
`schema_version` table and in-place upgrades keep a ledger of any earlier version working.

It lets a run skip leads that did not change, pick insert or update in one call, and survive
kills: each write is one committed transaction (SQLite in WAL mode), so a kill at any moment
leaves it consistent. A row
is written only after the PBX answered, so the ledger never claims a delivery that did not happen
(a kill between the answer and the write costs one redundant update on the next run).

What it cannot see: changes made on the PBX itself (an agent editing a lead, a manual import, a
lead deleted there). `full_resend: true` ignores it for one run.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, make_url

from target_noojee.settings import ConfigError

DELIVERED = "delivered"
REJECTED = "rejected"
LOCAL = "local"  # rejected before sending; remembered so an unchanged record is not re-rejected
CLOSED = "closed"
CLOSE_UNKNOWN = "close_unknown"  # a close the PBX answered 101 to: it does not hold the lead
CLOSED_OUTCOMES = frozenset({CLOSED, CLOSE_UNKNOWN})

SCHEMA_VERSION = 4  # 2: lifecycle columns and versions; 3: rejects; 4: sent inserts
_LOCK_KEY = 0x6E6F6F6A  # PostgreSQL advisory lock held while the tables are upgraded
_BATCH = 500  # external ids per look-up query


def _tables(sqlite: bool) -> tuple[str, ...]:
    rowid = " WITHOUT ROWID" if sqlite else ""
    return (
        f"""
        CREATE TABLE IF NOT EXISTS leads (
            pbx TEXT NOT NULL,
            campaign_id BIGINT NOT NULL,
            external_id TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            outcome TEXT NOT NULL,
            code TEXT,
            at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (pbx, campaign_id, external_id)
        ){rowid}
        """,
        f"""
        CREATE TABLE IF NOT EXISTS versions (
            pbx TEXT NOT NULL,
            campaign_id BIGINT NOT NULL,
            stream TEXT NOT NULL,
            version BIGINT NOT NULL,
            ended_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (pbx, campaign_id, stream, version)
        ){rowid}
        """,
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
        f"""
        CREATE TABLE IF NOT EXISTS rejects (
            id {"INTEGER PRIMARY KEY" if sqlite else "BIGSERIAL PRIMARY KEY"},
            pbx TEXT NOT NULL,
            campaign_id BIGINT,
            stream TEXT NOT NULL,
            external_id TEXT,
            code TEXT NOT NULL,
            entry TEXT NOT NULL,
            at DOUBLE PRECISION NOT NULL,
            resolved_at DOUBLE PRECISION
        )
        """,
        "CREATE INDEX IF NOT EXISTS rejects_open ON rejects (pbx, resolved_at)",
        # An insert on its way: written before the call, deleted with the lead's outcome. A row
        # left by a run that died says the PBX may hold the lead (README "The ledger").
        f"""
        CREATE TABLE IF NOT EXISTS sent_inserts (
            pbx TEXT NOT NULL,
            campaign_id BIGINT NOT NULL,
            external_id TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (pbx, campaign_id, external_id)
        ){rowid}
        """,
    )


# Columns added after version 1, with how a row written by version 1 fills them.
_ADDED_COLUMNS = (
    ("stream", "TEXT", None),  # the stream that last wrote the lead; NULL: never closed by mirror
    ("version", "BIGINT", None),  # the last full-table version the lead was seen in
    ("on_pbx", "INTEGER NOT NULL DEFAULT 0", "outcome = 'delivered'"),  # the PBX holds it
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


def ledger_url(config: Mapping[str, Any]) -> str:
    """The SQLAlchemy URL of the ledger: `ledger_url`, else the SQLite file `ledger_path`."""
    url = config.get("ledger_url")
    if url:
        return str(url)
    path = Path(config.get("ledger_path") or default_ledger_path())
    return f"sqlite:///{path}"


def safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparseable URL: say nothing of it
        return "(unparseable ledger_url)"


def make_engine(url: str) -> Engine:
    """An engine for SQLite or PostgreSQL (through psycopg 3, whatever the URL's driver)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
        return sa.create_engine(parsed, pool_pre_ping=True, pool_size=4, max_overflow=4)
    if parsed.get_backend_name() != "sqlite":
        raise ValueError("ledger_url must be sqlite:///<file> or postgresql://...")
    if parsed.database and parsed.database != ":memory:":
        folder = Path(parsed.database).parent
        if folder != Path():
            folder.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(parsed, connect_args={"timeout": 30})

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")  # atomic across kills; cheap commits
        cursor.close()

    return engine


def open_ledger(config: Mapping[str, Any]) -> Ledger:
    """The ledger a run's config names; a ConfigError naming `ledger_url` when it cannot open."""
    url = ledger_url(config)
    try:
        return Ledger(url, pbx_identity(str(config.get("base_url", ""))))
    except (sa.exc.SQLAlchemyError, ValueError, OSError, ImportError) as exc:
        setting = "ledger_url" if config.get("ledger_url") else "ledger_path"
        raise ConfigError(
            setting,
            f"setting `{setting}`: cannot open the ledger at {safe_url(url)} "
            f"({type(exc).__name__}: {_first_line(exc, url)})",
        ) from None


def _first_line(exc: BaseException, url: str) -> str:
    """An error's first line, without the URL's password."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    line = text[0] if text else "no details"
    password = make_url(url).password if "://" in url else None
    if password:
        line = line.replace(str(password), "***")
    return line[:160]


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
_SENT_INSERT = sa.text(
    "INSERT INTO sent_inserts (pbx, campaign_id, external_id, fingerprint, at) "
    "VALUES (:pbx, :c, :e, :f, :at) ON CONFLICT (pbx, campaign_id, external_id) "
    "DO UPDATE SET fingerprint = excluded.fingerprint, at = excluded.at"
)
_SENT_INSERT_DONE = sa.text(
    "DELETE FROM sent_inserts WHERE pbx = :pbx AND campaign_id = :campaign_id "
    "AND external_id = :external_id"
)
_UPSERT = sa.text(
    "INSERT INTO leads (pbx, campaign_id, external_id, fingerprint, outcome, code, at, "
    "stream, version, on_pbx, lead, endpoint, ids, redeliveries, closed) "
    "VALUES (:pbx, :campaign_id, :external_id, :fingerprint, :outcome, :code, :at, :stream, "
    ":version, :on_pbx_new, :lead, :endpoint, :ids, :redelivered, :closed_new) "
    "ON CONFLICT (pbx, campaign_id, external_id) DO UPDATE SET "
    "fingerprint = excluded.fingerprint, outcome = excluded.outcome, "
    "code = excluded.code, at = excluded.at, "
    "stream = COALESCE(excluded.stream, leads.stream), "
    "version = COALESCE(excluded.version, leads.version), "
    "on_pbx = COALESCE(:on_pbx, leads.on_pbx), closed = COALESCE(:closed, leads.closed), "
    "lead = excluded.lead, endpoint = excluded.endpoint, ids = excluded.ids, "
    "redeliveries = CASE WHEN :failed_again = 1 THEN leads.redeliveries + 1 ELSE 0 END"
)


class Ledger:
    """Thread-safe access to the ledger (several processes may share it)."""

    def __init__(self, url_or_path: str | os.PathLike[str], pbx: str) -> None:
        text = str(url_or_path)
        self.url = text if "://" in text else f"sqlite:///{text}"
        self._engine = make_engine(self.url)
        self.sqlite = self._engine.dialect.name == "sqlite"
        self._pbx = pbx
        self._lock = threading.Lock()  # one statement at a time from this process
        self._held: list[Any] = []  # stream locks: lock files or PostgreSQL sessions
        self._upgrade()

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        """One committed transaction (SQLite: taking the write lock at once)."""
        with self._lock, self._engine.connect() as conn:
            if self.sqlite:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                conn.begin()
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            conn.commit()

    def _upgrade(self) -> None:
        """Bring a ledger of any earlier version to this one, in place, in one transaction."""
        with self._tx() as conn:
            if not self.sqlite:  # two targets starting at once upgrade one after the other
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
            for table in _tables(self.sqlite):
                conn.exec_driver_sql(table)
            sent = {c["name"] for c in sa.inspect(conn).get_columns("sent_inserts")}
            if "fingerprint" not in sent:  # an early version 4: a note matching no lead
                conn.exec_driver_sql(
                    "ALTER TABLE sent_inserts ADD COLUMN fingerprint TEXT NOT NULL DEFAULT ''"
                )
            have = {c["name"] for c in sa.inspect(conn).get_columns("leads")}
            for name, kind, fill in _ADDED_COLUMNS:
                if name not in have:
                    conn.exec_driver_sql(f"ALTER TABLE leads ADD COLUMN {name} {kind}")
                    if fill is not None:
                        conn.exec_driver_sql(
                            f"UPDATE leads SET {name} = CASE WHEN {fill} THEN 1 ELSE 0 END"
                        )
            conn.exec_driver_sql("DELETE FROM schema_version")
            conn.execute(
                sa.text("INSERT INTO schema_version (version) VALUES (:v)"), {"v": SCHEMA_VERSION}
            )

    @property
    def schema_version(self) -> int:
        """The version of the ledger's tables."""
        with self._tx() as conn:
            row = conn.exec_driver_sql("SELECT version FROM schema_version").fetchone()
        return int(row[0]) if row else 0

    def get(self, campaign_id: int, external_id: str) -> Entry | None:
        """The last outcome recorded for a lead, or None."""
        return self.get_many(campaign_id, [external_id]).get(external_id)

    def get_many(self, campaign_id: int, external_ids: Iterable[str]) -> dict[str, Entry]:
        """What the ledger knows of several leads of a campaign, in few queries."""
        wanted = sorted(set(external_ids))
        found: dict[str, Entry] = {}
        query = sa.text(
            f"SELECT external_id, {_ENTRY} FROM leads WHERE pbx = :pbx "
            "AND campaign_id = :campaign_id AND external_id IN :ids"
        ).bindparams(sa.bindparam("ids", expanding=True))
        with self._tx() as conn:
            for start in range(0, len(wanted), _BATCH):
                rows = conn.execute(
                    query,
                    {
                        "pbx": self._pbx,
                        "campaign_id": campaign_id,
                        "ids": wanted[start : start + _BATCH],
                    },
                )
                for row in rows:
                    found[str(row[0])] = _entry(tuple(row[1:]))
        return found

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
        params = {
            "pbx": self._pbx,
            "campaign_id": campaign_id,
            "external_id": external_id,
            "fingerprint": lead_fingerprint,
            "outcome": outcome,
            "code": None if code is None else str(code),
            "at": time.time(),
            "stream": stream,
            "version": version,
            "on_pbx_new": on_pbx or 0,
            "closed_new": closed or 0,
            "on_pbx": on_pbx,
            "closed": closed,
            "lead": json.dumps(dict(rejected_lead)) if keep and rejected_lead else None,
            "endpoint": endpoint if keep else None,
            "ids": json.dumps(dict(ids)) if keep and ids else None,
            "redelivered": 1 if redelivery else 0,
            "failed_again": 1 if redelivery and outcome == REJECTED else 0,
        }
        with self._tx() as conn:
            conn.execute(_UPSERT, params)
            conn.execute(_SENT_INSERT_DONE, params)

    def insert_sent(self, campaign_id: int, external_id: str, lead_fingerprint: str) -> None:
        """An insert of this lead goes out now (committed before the call)."""
        params = {"pbx": self._pbx, "c": campaign_id, "e": external_id, "f": lead_fingerprint}
        with self._tx() as conn:
            conn.execute(_SENT_INSERT, {**params, "at": time.time()})

    def inserts_unsettled(
        self, campaign_id: int, external_ids: Iterable[str], before: float
    ) -> dict[str, str]:
        """The leads a run before `before` sent an insert of and never recorded the outcome
        of (it died with the call in flight, so the PBX may hold them): id -> the fingerprint
        of the lead that insert carried."""
        wanted = sorted(set(external_ids))
        query = sa.text(
            "SELECT external_id, fingerprint FROM sent_inserts WHERE pbx = :pbx "
            "AND campaign_id = :campaign_id AND at < :before AND external_id IN :ids"
        ).bindparams(sa.bindparam("ids", expanding=True))
        found: dict[str, str] = {}
        with self._tx() as conn:
            for start in range(0, len(wanted), _BATCH):
                batch = wanted[start : start + _BATCH]
                params = {"pbx": self._pbx, "campaign_id": campaign_id, "before": before}
                for row in conn.execute(query, {**params, "ids": batch}):
                    found[str(row[0])] = str(row[1])
        return found

    def seen(self, campaign_id: int, stream: str, version: int, external_ids: list[str]) -> None:
        """Mark leads as present in a full-table version of a stream (one transaction)."""
        if not external_ids:
            return
        with self._tx() as conn:
            conn.execute(
                sa.text(
                    "UPDATE leads SET stream = :stream, version = :version WHERE pbx = :pbx "
                    "AND campaign_id = :campaign_id AND external_id = :external_id"
                ),
                [
                    {
                        "stream": stream,
                        "version": version,
                        "pbx": self._pbx,
                        "campaign_id": campaign_id,
                        "external_id": e,
                    }
                    for e in external_ids
                ],
            )

    def open_leads(self, campaign_id: int, stream: str) -> list[tuple[str, int | None, float]]:
        """(external id, last version seen, last written) of the stream's open leads."""
        with self._tx() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT external_id, version, at FROM leads WHERE pbx = :pbx "
                    "AND campaign_id = :campaign_id AND stream = :stream "
                    "AND on_pbx = 1 AND closed = 0"
                ),
                {"pbx": self._pbx, "campaign_id": campaign_id, "stream": stream},
            ).fetchall()
        return [(str(e), None if v is None else int(v), float(at)) for e, v, at in rows]

    def version_before(
        self, campaign_id: int, stream: str, version: int
    ) -> tuple[int, float] | None:
        """The latest version of a stream before `version` that reached the end of input, and
        when it did."""
        with self._tx() as conn:
            row = conn.execute(
                sa.text(
                    "SELECT version, ended_at FROM versions WHERE pbx = :pbx "
                    "AND campaign_id = :campaign_id AND stream = :stream AND version < :version "
                    "ORDER BY version DESC LIMIT 1"
                ),
                {
                    "pbx": self._pbx,
                    "campaign_id": campaign_id,
                    "stream": stream,
                    "version": version,
                },
            ).fetchone()
        return None if row is None else (int(row[0]), float(row[1]))

    def end_version(self, campaign_id: int, stream: str, version: int) -> None:
        """Record that a version of a stream reached the end of input."""
        with self._tx() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO versions (pbx, campaign_id, stream, version, ended_at) "
                    "VALUES (:pbx, :campaign_id, :stream, :version, :at) "
                    "ON CONFLICT (pbx, campaign_id, stream, version) "
                    "DO UPDATE SET ended_at = excluded.ended_at"
                ),
                {
                    "pbx": self._pbx,
                    "campaign_id": campaign_id,
                    "stream": stream,
                    "version": version,
                    "at": time.time(),
                },
            )

    def due_rejects(
        self, campaign_id: int, stream: str, after_s: Mapping[int, float], max_redeliveries: int
    ) -> list[DueReject]:
        """Rejected leads of a stream and campaign whose code's wait has passed."""
        if not after_s:
            return []
        now = time.time()
        with self._tx() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT external_id, code, endpoint, ids, lead, fingerprint, stream, "
                    "redeliveries, at FROM leads WHERE pbx = :pbx AND campaign_id = :campaign_id "
                    "AND stream = :stream AND outcome = :outcome AND lead IS NOT NULL "
                    "AND redeliveries < :most"
                ),
                {
                    "pbx": self._pbx,
                    "campaign_id": campaign_id,
                    "stream": stream,
                    "outcome": REJECTED,
                    "most": max_redeliveries,
                },
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

    # --- one sender per PBX, campaign and stream -------------------------------------------

    def lock_stream(self, campaign_id: int, stream: str, wait_s: float) -> bool:
        """Hold the lock of a stream's leads until close(); False when another run holds it
        for longer than `wait_s` (a PostgreSQL advisory lock, a file lock beside SQLite)."""
        name = f"{self._pbx}\0{campaign_id}\0{stream}"
        digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
        deadline = time.monotonic() + wait_s
        while True:
            if self._try_lock(digest):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))

    def _try_lock(self, digest: bytes) -> bool:
        if self.sqlite:
            folder = Path(str(self._engine.url.database) + ".locks")
            folder.mkdir(parents=True, exist_ok=True)
            handle = (folder / f"{digest.hex()}.lock").open("a")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                return False
            self._held.append(handle)
            return True
        high = int.from_bytes(digest[:4], "big", signed=True)
        low = int.from_bytes(digest[4:], "big", signed=True)
        conn = self._engine.connect()
        got = conn.execute(
            sa.text("SELECT pg_try_advisory_lock(:high, :low)"), {"high": high, "low": low}
        ).scalar()
        conn.commit()
        if not got:
            conn.close()
            return False
        self._held.append(conn)  # the session holds the lock until it ends
        return True

    # --- rejects: the source of truth (the reject file is written alongside) -------------

    def add_reject(self, entry: Mapping[str, Any]) -> None:
        """Keep one reject line (committed before any STATE that covers it goes out)."""
        ids, lead = entry.get("ids"), entry.get("lead")
        campaign_id = ids.get("fCampaignId") if isinstance(ids, Mapping) else None
        external_id = lead.get("njExternalLeadId") if isinstance(lead, Mapping) else None
        with self._tx() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO rejects (pbx, campaign_id, stream, external_id, code, entry, at) "
                    "VALUES (:pbx, :campaign_id, :stream, :external_id, :code, :entry, :at)"
                ),
                {
                    "pbx": self._pbx,
                    "campaign_id": campaign_id,
                    "stream": str(entry.get("stream")),
                    "external_id": external_id if isinstance(external_id, str) else None,
                    "code": str(entry.get("code")),
                    "entry": json.dumps(dict(entry), separators=(",", ":"), default=str),
                    "at": time.time(),
                },
            )

    def open_rejects(self) -> list[tuple[int, dict[str, Any]]]:
        """(row id, reject line) of every reject of this PBX not resolved yet, oldest first."""
        with self._tx() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT id, entry FROM rejects WHERE pbx = :pbx AND resolved_at IS NULL "
                    "ORDER BY id"
                ),
                {"pbx": self._pbx},
            ).fetchall()
        return [(int(i), json.loads(e)) for i, e in rows]

    def resolve_rejects(self, row_ids: Iterable[int]) -> None:
        """Mark reject rows as resolved (sent again and settled)."""
        chosen = sorted(set(row_ids))
        if not chosen:
            return
        with self._tx() as conn:
            conn.execute(
                sa.text("UPDATE rejects SET resolved_at = :at WHERE id IN :ids").bindparams(
                    sa.bindparam("ids", expanding=True)
                ),
                {"at": time.time(), "ids": chosen},
            )

    def resolve_lead(self, campaign_id: int, external_id: str, before: float) -> None:
        """A lead re-delivered and landed: its rejects written before `before` are resolved."""
        with self._tx() as conn:
            conn.execute(
                sa.text(
                    "UPDATE rejects SET resolved_at = :at WHERE pbx = :pbx AND resolved_at IS NULL "
                    "AND campaign_id = :campaign_id AND external_id = :external_id AND at < :before"
                ),
                {
                    "at": time.time(),
                    "pbx": self._pbx,
                    "campaign_id": campaign_id,
                    "external_id": external_id,
                    "before": before,
                },
            )

    def count(self) -> int:
        """Rows for this PBX (for tests and operators)."""
        with self._tx() as conn:
            row = conn.execute(
                sa.text("SELECT COUNT(*) FROM leads WHERE pbx = :pbx"), {"pbx": self._pbx}
            ).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        """Release the stream locks and close the connections (SQLite checkpoints its WAL)."""
        with self._lock:
            for held in reversed(self._held):
                held.close()
            self._held.clear()
            self._engine.dispose()


def _entry(row: tuple[Any, ...]) -> Entry:
    fp, outcome, code, at, stream, version, on_pbx, tries, closed = row
    return Entry(
        fp,
        outcome,
        code,
        float(at),
        stream,
        None if version is None else int(version),
        bool(on_pbx),
        int(tries or 0),
        bool(closed),
    )
