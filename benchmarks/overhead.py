"""The target's own overhead: dry-run records/s and peak memory for 100k and 1M records.

Each run is a real `target-noojee` process fed through a pipe by a generator (so the input is
never held in memory), with `dry_run: true` (mapping, validation, ledger look-up, dry-run file;
no network). Beside it, the same input through a do-nothing SDK target shows the SDK's own
floor, so the ratio says what our work costs. Peak memory is the child's own max RSS (wait4).

    .venv/bin/python benchmarks/overhead.py            # 100k and 1M records
    .venv/bin/python benchmarks/overhead.py --quick    # 20k and 200k
    .venv/bin/python benchmarks/overhead.py --ledger-url postgresql://u:p@127.0.0.1:5432/db

With --ledger-url, 100k records go through the target twice, once with a SQLite ledger and once
with that ledger (PostgreSQL), each holding the same 100k leads beforehand, beside the floor.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SCHEMA = {
    "type": "SCHEMA",
    "stream": "contacts",
    "key_properties": ["id"],
    "schema": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "address": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "postcode": {"type": "string"}},
            },
            "mobile": {"type": "string"},
            "home": {"type": ["string", "null"]},
            "email": {"type": ["string", "null"]},
            "callback_at": {"type": ["string", "null"], "format": "date-time"},
            "priority": {"type": ["integer", "null"]},
        },
    },
}
MAPPING = {
    "njExternalLeadId": "id",
    "Name": "name",
    "City": "address.city",
    "PostCode": "address.postcode",
    "FirstPhone": "mobile",
    "SecondPhone": "home",
    "Email": "email",
    "njCallBackDate": "callback_at",
    "njPriority": "priority",
}

NOOP_TARGET = """
from singer_sdk import Target
from singer_sdk.sinks import RecordSink
class Noop(RecordSink):
    def process_record(self, record, context):
        pass
class NoopTarget(Target):
    name = "noop"
    config_jsonschema = {"type": "object", "properties": {}}
    default_sink_class = Noop
NoopTarget.cli()
"""


def lines(n: int) -> bytes:
    """The input, generated in chunks."""
    out = [json.dumps(SCHEMA)]
    for i in range(n):
        record = {
            "id": f"C{i:07d}",
            "name": f"Lead number {i}",
            "address": {"city": "Melbourne", "postcode": "3000"},
            "mobile": f"04{i % 100_000_000:08d}",
            "home": f"(03) 9{i % 1000:03d} {i % 10000:04d}" if i % 3 else None,
            "email": f"lead{i}@example.com.au" if i % 4 else None,
            "callback_at": "2026-12-01T09:30:00+11:00" if i % 5 == 0 else None,
            "priority": i % 50,
        }
        out.append(json.dumps({"type": "RECORD", "stream": "contacts", "record": record}))
        if i % 1000 == 999:
            out.append(json.dumps({"type": "STATE", "value": {"n": i + 1}}))
    return ("\n".join(out) + "\n").encode()


def feed(stdin: object, n: int) -> None:
    chunk = 20_000
    try:
        first = True
        for start in range(0, n, chunk):
            data = lines(min(chunk, n - start))
            if not first:
                data = data.split(b"\n", 1)[1]  # the SCHEMA line only once
            first = False
            stdin.write(data)  # type: ignore[attr-defined]
        stdin.close()  # type: ignore[attr-defined]
    except BrokenPipeError:
        pass


def run(argv: list[str], n: int, workdir: Path) -> tuple[float, float]:
    """(records/s, peak RSS MiB) of one process fed n records."""
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=workdir,
        env={**os.environ, "LOGLEVEL": "WARNING"},
    )
    started = time.perf_counter()
    writer = threading.Thread(target=feed, args=(proc.stdin, n), daemon=True)
    writer.start()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{argv[-1]} exited {proc.returncode}")
    return n / elapsed, usage.ru_maxrss / 1024


PBX = "http://127.0.0.1:9"
HELD = 100_000  # leads each ledger holds before a --ledger-url run


def prefill(url: str, n: int) -> None:
    """A ledger at `url` holding n leads of campaign 41 (the ids the input uses, and more)."""
    import sqlalchemy as sa

    from target_noojee.ledger import Ledger, make_engine, pbx_identity

    pbx = pbx_identity(PBX)
    Ledger(url, pbx).close()  # its tables, at the current schema version
    engine = make_engine(url)
    rows = [
        {"pbx": pbx, "c": 41, "e": f"C{i:07d}", "f": f"{i:032x}", "at": time.time()}
        for i in range(n)
    ]
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM leads WHERE pbx = :pbx"), {"pbx": pbx})
        conn.execute(
            sa.text(
                "INSERT INTO leads (pbx, campaign_id, external_id, fingerprint, outcome, at, "
                "on_pbx) VALUES (:pbx, :c, :e, :f, 'delivered', :at, 1)"
            ),
            rows,
        )
    if engine.dialect.name == "postgresql":
        # What autovacuum does within a minute of such a load: without statistics the planner
        # scans the table for each batch of look-ups.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("ANALYZE leads"))
    engine.dispose()


def compare_ledgers(workdir: Path, config: dict[str, object], url: str) -> None:
    """Records/s with a SQLite ledger and with `url`, both holding HELD leads, and the floor."""
    n = 100_000
    sqlite_url = f"sqlite:///{workdir / 'held.sqlite'}"
    results = {}
    for name, ledger in (("SQLite", sqlite_url), ("--ledger-url", url)):
        prefill(ledger, HELD)
        (workdir / "config.json").write_text(json.dumps({**config, "ledger_url": ledger}))
        results[name], _ = run(
            [sys.executable, "-m", "target_noojee", "--config", "config.json"], n, workdir
        )
        (workdir / "dry.jsonl").unlink(missing_ok=True)
    floor, _ = run([sys.executable, "noop.py"], n, workdir)
    print(f"{n:,} records, each ledger holding {HELD:,} leads (dry run)")
    print(f"{'ledger':>12} | {'rec/s':>8} | {'of SQLite':>9} | {'of floor':>8}")
    for name, rate in results.items():
        print(
            f"{name:>12} | {rate:>8.0f} | {rate / results['SQLite']:>9.2f} | {rate / floor:>8.2f}"
        )
    print(f"{'SDK floor':>12} | {floor:>8.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--ledger-url", help="compare this ledger with SQLite (100k records)")
    args = parser.parse_args()
    sizes = (20_000, 200_000) if args.quick else (100_000, 1_000_000)
    with tempfile.TemporaryDirectory(prefix="noojee-overhead-") as tmp:
        workdir = Path(tmp)
        config = {
            "base_url": PBX,
            "api_key": "benchmark",
            "template_id": 41,
            "campaign_id": 41,
            "allocation_id": 38,
            "operation": "upsert",
            "mapping": MAPPING,
            "dry_run": True,
            "dry_run_file": str(workdir / "dry.jsonl"),
            "reject_file": str(workdir / "rejects.jsonl"),
            "ledger_path": str(workdir / "ledger.sqlite"),
        }
        (workdir / "noop.py").write_text(NOOP_TARGET)
        if args.ledger_url:
            compare_ledgers(workdir, config, args.ledger_url)
            return
        (workdir / "config.json").write_text(json.dumps(config))
        target = [sys.executable, "-m", "target_noojee", "--config", "config.json"]
        noop = [sys.executable, "noop.py"]
        print(
            f"{'records':>9} | {'target rec/s':>12} | {'SDK floor rec/s':>15} | "
            f"{'ours/floor':>10} | {'peak MiB':>8}"
        )
        peaks = []
        for n in sizes:
            ours, peak = run(target, n, workdir)
            floor, _ = run(noop, n, workdir)
            (workdir / "dry.jsonl").unlink(missing_ok=True)
            peaks.append(peak)
            print(f"{n:>9} | {ours:>12.0f} | {floor:>15.0f} | {ours / floor:>10.2f} | {peak:>8.1f}")
        print(f"peak memory {sizes[1]:,} / {sizes[0]:,} records: {peaks[1] / peaks[0]:.3f}")


if __name__ == "__main__":
    main()
