"""`make demo`: a real pipeline on the embedded default.

Starts noojee-sim (4 slots, 100 ms a call), pipes the bundled sample Singer file through
`target-noojee` (a separate process, exactly as Meltano would run it), then prints the run's
summary, the final STATE and what the PBX now holds.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

from target_noojee.simulator import Simulator

DEMO_MAPPING = {
    "njExternalLeadId": "id",
    "Name": "full_name",
    "StreetAddress": "address.street",
    "City": "address.city",
    "State": "address.state",
    "PostCode": "address.postcode",
    "FirstPhone": "phones.mobile",
    "SecondPhone": "phones.home",
    "Email": "email",
    "njCallBackDate": "callback_at",
    "njPriority": "priority",
}


def sample_path() -> Path:
    """The bundled sample: 240 leads, nested fields, varied phones, callbacks with offsets."""
    return Path(str(resources.files("target_noojee") / "data" / "sample_leads.singer"))


def main() -> int:
    """Run the demo; returns the target's exit status."""
    api_key = secrets.token_hex(16)
    out_dir = Path(tempfile.mkdtemp(prefix="noojee-demo-"))
    with Simulator(api_key=api_key, slots=4, service_ms=100) as sim:
        config = {
            "base_url": sim.url,
            "api_key": api_key,
            "template_id": 41,
            "campaign_id": 41,
            "allocation_id": 38,
            "operation": "upsert",
            "mapping": DEMO_MAPPING,
            "reject_file": str(out_dir / "rejects.jsonl"),
            "ledger_path": str(out_dir / "ledger.sqlite"),
            "progress_interval_s": 2,
        }
        config_path = out_dir / "config.json"
        config_path.write_text(json.dumps(config), encoding="utf-8")
        print(f"noojee-sim on {sim.url} (4 slots, 100 ms a call); piping {sample_path().name}")
        with sample_path().open("rb") as stdin:
            proc = subprocess.run(
                [sys.executable, "-m", "target_noojee", "--config", str(config_path)],
                stdin=stdin,
                stdout=subprocess.PIPE,
                check=False,
            )
        config_path.unlink()  # it holds the key
        states = proc.stdout.decode().splitlines()
        leads = sim.leads(campaign_id=41)
        print(f"\ntarget-noojee exited {proc.returncode}; STATE lines written: {len(states)}")
        print(f"final STATE: {states[-1] if states else '(none)'}")
        print(f"leads held by the PBX: {len(leads)}; responses: {dict(sim.code_counts)}")
        print(
            f"peak calls in service: {sim.peak_in_service}; "
            f"mean server queue: {sim.mean_queue_length():.2f}"
        )
        for lead in leads[:5]:
            print(f"  {lead['external_id']}: {json.dumps(lead['fields'])}")
        rejects = out_dir / "rejects.jsonl"
        if rejects.exists():
            print(f"rejects ({rejects}):")
            for line in rejects.read_text(encoding="utf-8").splitlines():
                entry = json.loads(line)
                print(f"  {entry['key']}: {entry['message']}")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
