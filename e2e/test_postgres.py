"""End to end with a real tap and a real database: a CRM table in PostgreSQL, read by
meltanolabs-tap-postgres under Meltano, loaded by target-noojee into noojee-sim (issue 13).

Run by `make e2e`. The steps, in order, on one simulator and one ledger:

1. incremental (replication key `updated_at`), `close_field: opted_out`: every contact inserted;
2. two contacts opt out (and their `updated_at` moves on): exactly those two leads are closed
   with `close_disposition` "Do Not Call", nothing else is sent;
3. full table with ACTIVATE_VERSION (`emit_activate_version_messages`) and `mirror: true`, three
   times, one row deleted after the first: the SDK tap announces a version only before its
   records, so its lead is closed only once it is missing from two consecutive versions (the
   third run), and not after the second;
4. soft deletes (`_sdc_deleted_at`, which LOG_BASED replication would send; that needs wal2json,
   which pgserver lacks) from e2e/soft_deletes.singer piped through target-noojee directly.

PostgreSQL comes from e2e/postgres.py (the pgserver wheel, 127.0.0.1, a random port, a temp data
dir); the Meltano project is e2e/postgres_project/meltano.yml, its system dir a temp dir. The API
key is random, passed through the environment only, and looked for in every output and file.
The only network used is PyPI (`meltano install`) and 127.0.0.1. E2E_KEEP=1 keeps the temp dir.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest
from postgres import Postgres, postgres_server
from test_meltano import BIN, FOREIGN_ENV, MELTANO, start_sim

ROOT = Path(__file__).resolve().parent.parent
PROJECT_DIR = ROOT / "e2e" / "postgres_project"
SOFT_DELETES = ROOT / "e2e" / "soft_deletes.singer"
STREAM = "public-contacts"  # tap-postgres names a stream <schema>-<table>
PIPELINE = ("run", "tap-postgres", "target-noojee")
CAMPAIGN = 41
CLOSE = "Do Not Call"
OPTED_OUT = ("C1005", "C1012")  # step 2
DELETED_ROW = "C1017"  # step 3
SOFT_DELETED = ("C1003", "C1008")  # step 4; the file also re-deletes C1005 and an unknown lead
UNKNOWN = "C1999"
SCRUB = (*FOREIGN_ENV, "TAP_POSTGRES_", "PG")  # caller variables that would change the runs
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=timezone.utc)

# The CRM: id, name, mobile (in the formats people type), opted_out (NULL keeps a lead open).
CONTACTS: list[tuple[str, str, str, bool | None]] = [
    ("C1001", "Ava Nguyen", "0412 345 601", False),
    ("C1002", "Liam Smith", "+61 412 345 602", False),
    ("C1003", "Olivia Brown", "0412-345-603", False),
    ("C1004", "Noah Wilson", "(04) 1234 5604", None),
    ("C1005", "Mia Taylor", "0412345605", False),
    ("C1006", "Jack Martin", "+61 (0) 412 345 606", False),
    ("C1007", "Isla Anderson", "0412 345 607", False),
    ("C1008", "Henry Thomas", "0412 345 608", False),
    ("C1009", "Grace White", "0412 345 609", None),
    ("C1010", "Leo Harris", "0412 345 610", False),
    ("C1011", "Chloe Clark", "0412 345 611", False),
    ("C1012", "Oscar Lewis", "+61412345612", False),
    ("C1013", "Ruby Walker", "0412 345 613", False),
    ("C1014", "William Hall", "0412 345 614", False),
    ("C1015", "Zoe Allen", "0412 345 615", False),
    ("C1016", "Lucas Young", "0412 345 616", False),
    ("C1017", "Sophie King", "0412 345 617", False),
    ("C1018", "Thomas Wright", "0412 345 618", False),
    ("C1019", "Ella Scott", "0412 345 619", False),
    ("C1020", "James Green", "0412 345 620", False),
]
IDS = [c[0] for c in CONTACTS]


def dialled(mobile: str) -> str:
    """What the target sends for these mobiles: the 10 digits an Australian dialer dials."""
    digits = "".join(ch for ch in mobile.replace("(0)", "") if ch.isdigit())
    return "0" + digits[2:] if digits.startswith("61") else digits


def tail(proc: subprocess.CompletedProcess[str], lines: int = 60) -> str:
    return "\n".join((proc.stdout + proc.stderr).splitlines()[-lines:])


@dataclass
class Crm:
    """The database, the simulator, the Meltano project's environment, and all that was said."""

    work: Path
    pg: Postgres
    api_key: str
    sim_url: str
    env: dict[str, str]
    outputs: list[str] = field(default_factory=list)
    runs: int = 0

    def sql(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(
            host=self.pg.host,
            port=self.pg.port,
            user=self.pg.user,
            password=self.pg.password,
            dbname=self.pg.dbname,
            connect_timeout=30,
            autocommit=True,
        ) as conn:
            cursor = conn.execute(statement, params)
            return cursor.fetchall() if cursor.description else []

    def meltano(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """meltano in e2e/postgres_project; its output is kept for the key check."""
        proc = subprocess.run(
            [MELTANO, *args],
            cwd=PROJECT_DIR,
            env={**self.env, **(env or {})},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        self.outputs += [proc.stdout, proc.stderr]
        return proc

    def run(self, environment: str) -> dict[str, Any]:
        """One `meltano run`; returns the target's run report for the stream."""
        self.runs += 1
        report = self.work / f"report-{self.runs}-{environment}.json"
        started = time.monotonic()
        proc = self.meltano(
            f"--environment={environment}",
            *PIPELINE,
            env={"TARGET_NOOJEE_REPORT_FILE": str(report)},
        )
        print(f"\nmeltano run #{self.runs} ({environment}): {time.monotonic() - started:.1f}s")
        assert proc.returncode == 0, (
            f"meltano run ({environment}) exited {proc.returncode}:\n{tail(proc)}\n"
            f"--- postgres log:\n{self.pg.log_tail()}"
        )
        return stream_report(report)

    def sim_state(self) -> dict[str, Any]:
        url = f"{self.sim_url}/__admin/state?apiKey={self.api_key}&campaign_id={CAMPAIGN}"
        with urllib.request.urlopen(url, timeout=10) as reply:
            data: dict[str, Any] = json.load(reply)
        return data

    def leads(self) -> dict[str, dict[str, Any]]:
        return {lead["external_id"]: lead for lead in self.sim_state()["leads"]}

    def closed(self) -> set[str]:
        return {k for k, v in self.leads().items() if v["disposition"] == CLOSE}

    def lead_calls(self) -> int:
        calls: int = self.sim_state()["lead_calls"]
        return calls


def stream_report(path: Path) -> dict[str, Any]:
    assert path.exists(), f"the target wrote no run report at {path}"
    report: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    assert report.get("error") is None, report
    streams: dict[str, Any] = report["streams"]
    assert STREAM in streams, f"no stream {STREAM!r} in the run report: {sorted(streams)}"
    counts: dict[str, Any] = streams[STREAM]
    return counts


def create_crm(crm: Crm) -> None:
    crm.sql(
        "CREATE TABLE contacts (id text PRIMARY KEY, name text, mobile text,"
        " opted_out boolean, updated_at timestamptz)"
    )
    with psycopg.connect(crm.pg.url, autocommit=True) as conn, conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO contacts VALUES (%s, %s, %s, %s, %s)",
            [(*c, T0 + timedelta(minutes=i)) for i, c in enumerate(CONTACTS)],
        )


@pytest.fixture(scope="module")
def crm() -> Iterator[Crm]:
    """PostgreSQL with the CRM table, a fresh simulator, `meltano install` of the project."""
    work = Path(tempfile.mkdtemp(prefix="noojee-e2e-pg-"))
    api_key = f"e2e-{os.urandom(16).hex()}"
    sim, sim_url = start_sim(api_key, work / "noojee-sim.log")
    env = {k: v for k, v in os.environ.items() if not k.startswith(SCRUB)}
    crm: Crm | None = None
    try:
        with postgres_server() as pg:
            env.update(
                {
                    "MELTANO_SYS_DIR_ROOT": str(work / "meltano-sys"),
                    "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
                    "MELTANO_CLI_DISABLE_VERSION_CHECK": "true",
                    "MELTANO_CLI_LOG_FORMAT": "plain",
                    "UV_COMPILE_BYTECODE": "1",
                    "TAP_POSTGRES_HOST": pg.host,
                    "TAP_POSTGRES_PORT": str(pg.port),
                    "TAP_POSTGRES_USER": pg.user,
                    "TAP_POSTGRES_PASSWORD": pg.password,
                    "TAP_POSTGRES_DATABASE": pg.dbname,
                    "NOOJEE_BASE_URL": sim_url,
                    "TARGET_NOOJEE_API_KEY": api_key,
                    "TARGET_NOOJEE_LEDGER_PATH": str(work / "ledger.sqlite"),
                    "TARGET_NOOJEE_REJECT_FILE": str(work / "rejects.jsonl"),
                }
            )
            crm = Crm(work, pg, api_key, sim_url, env)
            create_crm(crm)
            started = time.monotonic()
            proc = crm.meltano("install", timeout=900)
            assert proc.returncode == 0, f"meltano install exited {proc.returncode}:\n{tail(proc)}"
            print(f"\nmeltano install: {time.monotonic() - started:.1f}s", file=sys.stderr)
            yield crm
    finally:
        sim.terminate()
        try:
            sim.wait(10)
        except subprocess.TimeoutExpired:
            sim.kill()
        if crm is not None:
            crm.outputs.append((work / "noojee-sim.log").read_text(errors="replace"))
        if os.environ.get("E2E_KEEP"):
            print(f"\ne2e work dir kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def incremental_1(crm: Crm) -> dict[str, Any]:
    return crm.run("incremental")


@pytest.fixture(scope="module")
def incremental_2(crm: Crm, incremental_1: dict[str, Any]) -> dict[str, Any]:
    """Two contacts opt out; their updated_at moves past the bookmark, as the CRM would."""
    calls = crm.lead_calls()
    crm.sql(
        "UPDATE contacts SET opted_out = true,"
        " updated_at = (SELECT max(updated_at) FROM contacts) + interval '1 hour'"
        " WHERE id = ANY(%s)",
        (list(OPTED_OUT),),
    )
    report = crm.run("incremental")
    return {"report": report, "calls": crm.lead_calls() - calls}


@pytest.fixture(scope="module")
def full_tables(crm: Crm, incremental_2: dict[str, Any]) -> list[dict[str, Any]]:
    """Three full-table runs; DELETED_ROW is deleted from the table after the first."""
    results = []
    for i in range(3):
        if i == 1:
            crm.sql("DELETE FROM contacts WHERE id = %s", (DELETED_ROW,))
        calls = crm.lead_calls()
        report = crm.run("full_table")
        results.append(
            {
                "report": report,
                "calls": crm.lead_calls() - calls,
                "closed": crm.closed(),
                "leads": crm.leads(),
            }
        )
    return results


@pytest.fixture(scope="module")
def soft_deletes(crm: Crm, full_tables: list[dict[str, Any]]) -> dict[str, Any]:
    """e2e/soft_deletes.singer through target-noojee itself, with the same ledger and PBX."""
    config = crm.work / "soft-deletes-config.json"  # no key in it: that comes from the env
    report = crm.work / "report-soft-deletes.json"
    config.write_text(
        json.dumps(
            {
                "base_url": crm.sim_url,
                "template_id": 41,
                "campaign_id": CAMPAIGN,
                "allocation_id": 38,
                "operation": "upsert",
                "fallback_disposition": "Call Back",
                "close_disposition": CLOSE,
                "close_field": "opted_out",
                "mapping": {"njExternalLeadId": "id", "Name": "name", "FirstPhone": "mobile"},
                "ledger_path": str(crm.work / "ledger.sqlite"),
                "reject_file": str(crm.work / "rejects.jsonl"),
                "report_file": str(report),
            }
        ),
        encoding="utf-8",
    )
    env = {k: v for k, v in crm.env.items() if not k.startswith("TARGET_NOOJEE_")}
    env["TARGET_NOOJEE_API_KEY"] = crm.api_key
    calls = crm.lead_calls()
    with SOFT_DELETES.open("rb") as stdin:
        proc = subprocess.run(
            [str(BIN / "target-noojee"), "--config", str(config), "--config", "ENV"],
            cwd=crm.work,
            env=env,
            stdin=stdin,
            capture_output=True,
            timeout=300,
            check=False,
        )
    stdout, stderr = proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
    crm.outputs += [stdout, stderr]
    errors = "\n".join((stdout + stderr).splitlines()[-60:])
    assert proc.returncode == 0, f"target-noojee exited {proc.returncode}:\n{errors}"
    return {
        "report": stream_report(report),
        "calls": crm.lead_calls() - calls,
        "states": [json.loads(line) for line in stdout.splitlines() if line.strip()],
        "stderr": stderr,
    }


# --- the steps, in order ---------------------------------------------------------------------


def test_postgres_listens_on_loopback_only(crm: Crm) -> None:
    (addresses, sockets), *_ = crm.sql(
        "SELECT current_setting('listen_addresses'), current_setting('unix_socket_directories')"
    )
    assert (addresses, sockets) == ("127.0.0.1", "")
    assert crm.sql("SELECT count(*) FROM contacts") == [(len(CONTACTS),)]


def test_incremental_run_inserts_every_contact(crm: Crm, incremental_1: dict[str, Any]) -> None:
    state = crm.sim_state()
    leads = crm.leads()
    assert sorted(leads) == IDS
    assert state["code_counts"] == {"0": len(CONTACTS)}, state["code_counts"]
    assert state["lead_calls"] == len(CONTACTS)  # upsert with an empty ledger: one insert each
    assert state["problems"] == []
    for contact_id, name, mobile, _ in CONTACTS:
        lead = leads[contact_id]
        assert lead["fields"]["Name"] == name
        assert lead["fields"]["FirstPhone"] == dialled(mobile), (mobile, lead["fields"])
        assert lead["writes"] == 1
        assert lead["disposition"] != CLOSE and CLOSE not in lead["dispositions"]
    assert incremental_1["delivered"] == len(CONTACTS), incremental_1
    assert incremental_1["closed"] == incremental_1["rejected"] == 0, incremental_1
    assert not (crm.work / "rejects.jsonl").exists()
    stored = crm.meltano("state", "get", "incremental:tap-postgres-to-target-noojee")
    assert stored.returncode == 0, tail(stored)
    mark = json.loads(stored.stdout)["singer_state"]["bookmarks"][STREAM]
    assert mark["replication_key"] == "updated_at", mark
    last = datetime.fromisoformat(mark["replication_key_value"].replace("Z", "+00:00"))
    assert last == T0 + timedelta(minutes=len(CONTACTS) - 1), mark


def test_opting_out_closes_exactly_those_leads(crm: Crm, incremental_2: dict[str, Any]) -> None:
    """The tap sends the 2 changed rows (and the row at the bookmark, `>=`): 2 calls, 2 closes."""
    assert incremental_2["calls"] == len(OPTED_OUT), incremental_2
    assert incremental_2["report"]["closed"] == len(OPTED_OUT), incremental_2["report"]
    assert incremental_2["report"]["delivered"] == 0, incremental_2["report"]
    leads = crm.leads()
    assert crm.closed() == set(OPTED_OUT)
    for contact_id in OPTED_OUT:
        assert leads[contact_id]["dispositions"][-1] == CLOSE, leads[contact_id]
        assert leads[contact_id]["writes"] == 2
    for contact_id, name, mobile, _ in CONTACTS:  # a close changes no other field
        assert leads[contact_id]["fields"] == {"Name": name, "FirstPhone": dialled(mobile)}
    others = {k: v["writes"] for k, v in leads.items() if k not in OPTED_OUT}
    assert set(others.values()) == {1}, others


def test_the_sdk_tap_announces_a_version_before_its_records_only(
    crm: Crm, incremental_2: dict[str, Any]
) -> None:
    """Why the two-version rule applies: no ACTIVATE_VERSION follows the records."""
    proc = crm.meltano("--environment=full_table", "invoke", "tap-postgres")
    assert proc.returncode == 0, tail(proc)
    messages = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    kinds = [m["type"] for m in messages if m.get("stream") == STREAM]
    assert kinds.count("ACTIVATE_VERSION") == 1, kinds
    assert kinds.index("ACTIVATE_VERSION") < kinds.index("RECORD")
    records = [m for m in messages if m["type"] == "RECORD"]
    assert len(records) == len(CONTACTS)
    version = next(m["version"] for m in messages if m["type"] == "ACTIVATE_VERSION")
    assert {m.get("version") for m in records} == {version}


def test_first_full_table_run_sends_nothing(full_tables: list[dict[str, Any]]) -> None:
    """Every row is as the ledger last saw it; the opted-out two stay closed without a call."""
    first = full_tables[0]
    assert first["calls"] == 0, first
    assert first["report"]["unchanged"] == len(CONTACTS), first["report"]
    assert first["closed"] == set(OPTED_OUT)


def test_a_row_missing_from_one_version_stays_open(full_tables: list[dict[str, Any]]) -> None:
    second = full_tables[1]
    assert second["calls"] == 0, second
    assert second["report"]["unchanged"] == len(CONTACTS) - 1, second["report"]
    assert second["report"]["closed"] == 0, second["report"]
    assert DELETED_ROW not in second["closed"]
    assert second["closed"] == set(OPTED_OUT)
    assert (
        second["leads"][DELETED_ROW]["dispositions"]
        == full_tables[0]["leads"][DELETED_ROW]["dispositions"]
    )


def test_a_row_missing_from_two_versions_is_closed(
    crm: Crm, full_tables: list[dict[str, Any]]
) -> None:
    third = full_tables[2]
    assert third["calls"] == 1, third
    assert third["closed"] == {*OPTED_OUT, DELETED_ROW}
    lead = third["leads"][DELETED_ROW]
    assert lead["dispositions"][-1] == CLOSE, lead
    assert lead["fields"]["Name"] == "Sophie King"  # closed, not blanked
    assert third["report"]["closed"] == 1, third["report"]
    assert third["report"]["unchanged"] == len(CONTACTS) - 1, third["report"]
    assert crm.sql("SELECT count(*) FROM contacts") == [(len(CONTACTS) - 1,)]


def test_the_singer_file_matches_the_crm() -> None:
    """e2e/soft_deletes.singer's open record is the CRM's row as it is, so it is unchanged."""
    rows = {c[0]: c for c in CONTACTS}
    messages = [json.loads(line) for line in SOFT_DELETES.read_text().splitlines() if line]
    records = [m["record"] for m in messages if m["type"] == "RECORD"]
    assert all(m["stream"] == STREAM for m in messages if m["type"] != "STATE")
    deleted = {r["id"] for r in records if r.get("_sdc_deleted_at")}
    assert deleted == {*SOFT_DELETED, OPTED_OUT[0], UNKNOWN}
    for record in records:
        if record["id"] in rows:
            assert (record["name"], record["mobile"]) == rows[record["id"]][1:3], record


def test_soft_deletes_close_exactly_those_leads(
    crm: Crm, full_tables: list[dict[str, Any]], soft_deletes: dict[str, Any]
) -> None:
    """2 closes, 1 close of a lead the PBX does not know (101, nothing inserted); the lead
    closed already and the unchanged one cost no call."""
    assert soft_deletes["calls"] == 3, soft_deletes
    leads = crm.leads()
    assert UNKNOWN not in leads
    assert crm.closed() == {*OPTED_OUT, DELETED_ROW, *SOFT_DELETED}
    for contact_id in SOFT_DELETED:
        assert leads[contact_id]["dispositions"][-1] == CLOSE, leads[contact_id]
    assert leads[OPTED_OUT[0]]["dispositions"].count(CLOSE) == 1  # not closed twice
    report = soft_deletes["report"]
    assert report["closed"] == len(SOFT_DELETED), report
    assert report["close_unknown"] == 1, report
    assert report["unchanged"] == 2, report  # C1010 as it is, C1005 closed already
    assert soft_deletes["states"], "no STATE forwarded"
    assert soft_deletes["states"][-1] == {"bookmarks": {STREAM: {"file": "soft_deletes.singer"}}}
    assert not (crm.work / "rejects.jsonl").exists()


def test_api_key_never_appears(crm: Crm, soft_deletes: dict[str, Any]) -> None:
    """Not in any output of meltano, the tap, the target or the simulator; in no file left."""
    assert len(crm.outputs) > 10, "too little was captured"
    leaked = [i for i, text in enumerate(crm.outputs) if crm.api_key in text]
    assert not leaked, f"the API key is in captured output(s) #{leaked}"
    needle = crm.api_key.encode()
    files = []
    for root in (crm.work, PROJECT_DIR):
        for folder, subfolders, names in os.walk(root):
            subfolders[:] = [d for d in subfolders if d != "venv"]  # the plugins' installs
            files += [Path(folder, name) for name in names]
    assert any(f.name == "meltano.db" for f in files), files
    assert any(f.name == "ledger.sqlite" for f in files), files
    holding = [str(f) for f in files if needle in f.read_bytes()]
    assert not holding, f"the API key is in: {holding}"
