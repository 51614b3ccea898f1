"""Scale-out: three targets on one PBX (noojee-sim) and one PostgreSQL ledger, beside one alone.

Each target is a real `target-noojee` process with its own stream and working directory (as
three pipelines of an orchestrator would be), all sharing `ledger_url`. It prints, side by side,
the PBX's throughput as a share of C/S (process start-up included), when each target ended
(together means they shared the PBX evenly), the mean server queue, and a second pass of the
same input (every lead unchanged: 0 calls expected).

    .venv/bin/python benchmarks/scale_out.py --ledger-url postgresql://u:p@127.0.0.1:5432/db
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from target_noojee.simulator import Simulator

SLOTS, SERVICE_MS, LEADS = 8, 100.0, 800
MAPPING = {"njExternalLeadId": "id", "Name": "name", "FirstPhone": "phone", "njDisposition": "d"}


def messages(stream: str, offset: int) -> bytes:
    schema = {
        "type": "SCHEMA",
        "stream": stream,
        "key_properties": ["id"],
        "schema": {"properties": {k: {"type": "string"} for k in ("id", "name", "phone", "d")}},
    }
    lines = [schema]
    for i in range(offset, offset + LEADS):
        record = {"id": f"S{i:06d}", "name": f"Lead {i}", "phone": f"04{i:08d}", "d": "Call Back"}
        lines.append({"type": "RECORD", "stream": stream, "record": record})
        if i % 50 == 49:
            lines.append({"type": "STATE", "value": {stream: i}})
    return "".join(json.dumps(m) + "\n" for m in lines).encode()


def run_targets(sim: Simulator, key: str, url: str, streams: list[str], work: Path) -> list[float]:
    """Run one target per stream at once; returns when each one ended (seconds)."""
    procs = []
    started = time.perf_counter()
    for n, stream in enumerate(streams):
        folder = work / stream
        folder.mkdir(exist_ok=True)
        config = {
            "base_url": sim.url,
            "api_key": key,
            "template_id": 41,
            "campaign_id": 41,
            "allocation_id": 38,
            "operation": "upsert",
            "mapping": MAPPING,
            "ledger_url": url,
            "reject_file": str(folder / "rejects.jsonl"),
        }
        (folder / "config.json").write_text(json.dumps(config))
        proc = subprocess.Popen(
            [sys.executable, "-m", "target_noojee", "--config", "config.json"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=folder,
            env={**os.environ, "LOGLEVEL": "WARNING"},
        )
        assert proc.stdin is not None
        proc.stdin.write(messages(stream, 100_000 * (n + 1)))
        proc.stdin.close()
        procs.append(proc)
    ended = [0.0] * len(procs)
    while not all(ended):
        for n, proc in enumerate(procs):
            if not ended[n] and proc.poll() is not None:
                if proc.returncode != 0:
                    raise SystemExit(f"a target exited {proc.returncode}")
                ended[n] = time.perf_counter() - started
        time.sleep(0.05)
    return ended


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ledger-url", required=True)
    url = parser.parse_args().ledger_url
    best = SLOTS / (SERVICE_MS / 1000)
    print(
        f"noojee-sim C={SLOTS}, S={SERVICE_MS:g} ms (C/S = {best:.0f} leads/s), {LEADS} leads each"
    )
    head = ("targets", "leads/s of C/S", "each ended after s", "queue", "2nd pass calls")
    print(" | ".join(head))
    for streams in (["solo"], ["north", "south", "west"]):
        key = secrets.token_hex(8)
        with (
            tempfile.TemporaryDirectory() as tmp,
            Simulator(api_key=key, slots=SLOTS, service_ms=SERVICE_MS) as sim,
        ):
            ended = run_targets(sim, key, url, streams, Path(tmp))
            total = len(sim.leads(41))
            queue = sim.mean_queue_length()
            sim.reset_stats()
            run_targets(sim, key, url, streams, Path(tmp))
            again = sim.lead_calls
        ends = " / ".join(f"{e:.1f}" for e in ended)
        print(
            f"{len(streams):>7} | {total / max(ended) / best:>14.2f} | {ends:>18} | "
            f"{queue:>5.2f} | {again:>14}"
        )


if __name__ == "__main__":
    main()
