"""How many lead calls per second noojee-sim sustains with --service-ms 0.

The simulator runs in its own process (the `noojee-sim` CLI) so client and server do not share a
GIL; client threads with keep-alive sessions send a mix of inserts and updates for a few seconds.
Issue 2 asks for at least 1,000 calls/s on a 2-core machine.

    .venv/bin/python benchmarks/sim_throughput.py [--seconds 5] [--threads 24] [--slots 64]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import requests

API_KEY = "bench-key"
PREFIX = "/servicemanager/rest/CampaignAPI/"
TARGET_CALLS_PER_S = 1000


def start_simulator(slots: int) -> tuple[subprocess.Popen[str], str]:
    """Start `noojee-sim` on a free port; return the process and its base URL."""
    env = dict(os.environ, NOOJEE_SIM_API_KEY=API_KEY)
    cmd = [
        sys.executable,
        "-m",
        "target_noojee.simulator.cli",
        "--port",
        "0",
        "--service-ms",
        "0",
        "--slots",
        str(slots),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("noojee-sim listening on "):
        proc.kill()
        raise SystemExit(f"the simulator did not start: {line!r}")
    return proc, line.rsplit(" ", 1)[1]


def client(
    url: str, worker: int, stop_at: float, counts: Counter[int], lock: threading.Lock
) -> None:
    """Insert a lead, then update it, and so on until `stop_at`."""
    params = {"apiKey": API_KEY, "fTemplateId": "41", "fCampaignId": "41", "fAllocationId": "38"}
    local: Counter[int] = Counter()
    n = 0
    with requests.Session() as session:
        while time.monotonic() < stop_at:
            external_id = f"W{worker}-{n}"
            phone = f"04{worker:02d}{n:06d}"
            lead = {"njExternalLeadId": external_id, "FirstPhone": phone, "Name": "Bench"}
            r = session.post(url + PREFIX + "insertLeadFast", params=params, json=lead)
            local[r.json()["code"]] += 1
            lead["njDisposition"] = "Sale"
            lead["City"] = "Melbourne"
            r = session.post(url + PREFIX + "updateLeadFast", params=params, json=lead)
            local[r.json()["code"]] += 1
            n += 1
    with lock:
        counts.update(local)


def main() -> int:
    """Run the benchmark and print calls/s."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=24)
    ap.add_argument("--slots", type=int, default=64)
    args = ap.parse_args()

    proc, url = start_simulator(args.slots)
    try:
        counts: Counter[int] = Counter()
        lock = threading.Lock()
        started = time.monotonic()
        stop_at = started + args.seconds
        threads = [
            threading.Thread(target=client, args=(url, i, stop_at, counts, lock))
            for i in range(args.threads)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
        state = requests.get(
            url + "/__admin/state", params={"apiKey": API_KEY, "leads": "0"}, timeout=10
        ).json()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)

    calls = sum(counts.values())
    rate = calls / elapsed
    print(
        f"noojee-sim throughput: {rate:,.0f} lead calls/s "
        f"({calls} calls in {elapsed:.1f} s, {args.threads} client threads, "
        f"slots {args.slots}, service-ms 0, {os.cpu_count()} CPUs)"
    )
    print(f"codes: {dict(sorted(counts.items()))}; server holds {state['lead_count']} leads")
    ok = rate >= TARGET_CALLS_PER_S and set(counts) == {0}
    print(f"target >= {TARGET_CALLS_PER_S} calls/s, all OK: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
