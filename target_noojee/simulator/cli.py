"""`noojee-sim`: run the simulator as a process until SIGINT or SIGTERM.

Prints exactly one line to stdout once it accepts connections:
``noojee-sim listening on http://127.0.0.1:<port>`` (``https://`` with ``--tls-cert`` and
``--tls-key``, which go together). The API key comes from ``--api-key`` or the
``NOOJEE_SIM_API_KEY`` environment variable and is never printed. ``--id-in-query`` models the
early PBX build whose updateLeadFast reads njExternalLeadId from the query string only.
``--queue``, ``--service-cv``, ``--latency-ms`` and ``--dialer-load`` widen the capacity model
(queue order, noisy service times, network distance, the dialer's own work).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from target_noojee.simulator.app import Simulator
from target_noojee.simulator.fixture import Fixture

API_KEY_ENV = "NOOJEE_SIM_API_KEY"


def build_parser() -> argparse.ArgumentParser:
    """The command line of noojee-sim."""
    p = argparse.ArgumentParser(
        prog="noojee-sim", description="A simulator of the Noojee Contact CampaignAPI."
    )
    p.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: any free one)")
    p.add_argument("--api-key", help=f"the apiKey clients must send (or ${API_KEY_ENV})")
    p.add_argument("--slots", type=int, default=4, help="concurrent lead calls served (default 4)")
    p.add_argument(
        "--service-ms", type=float, default=100.0, help="service time per lead call (default 100)"
    )
    p.add_argument(
        "--service-growth-ms-per-1000",
        type=float,
        default=0.0,
        help="ms added to the service time per 1000 leads held (default 0)",
    )
    p.add_argument(
        "--queue-timeout-s",
        type=float,
        default=60.0,
        help="a call queued longer fails with 109 (default 60)",
    )
    p.add_argument("--fault-rate", type=float, default=0.0, help="probability of 103 per call")
    p.add_argument(
        "--drop-rate", type=float, default=0.0, help="probability a committed call loses its reply"
    )
    p.add_argument("--fixture", help="JSON fixture file (default: the built-in template 41)")
    p.add_argument("--seed", type=int, default=None, help="seed of the fault generator")
    p.add_argument(
        "--id-in-query",
        action="store_true",
        help="early build: updateLeadFast reads njExternalLeadId from the query string only",
    )
    p.add_argument(
        "--queue",
        choices=("fifo", "barging"),
        default="fifo",
        help="order queued calls get a freed slot: fifo, or barging as Java's non-fair "
        "Semaphore (a call arriving as a slot frees takes it first; default fifo)",
    )
    p.add_argument(
        "--service-cv",
        type=float,
        default=0.0,
        help="coefficient of variation of lognormal service times, same mean (default 0)",
    )
    p.add_argument(
        "--latency-ms",
        type=float,
        default=0.0,
        help="network round trip outside the slot, jittered +-20%% (default 0)",
    )
    p.add_argument(
        "--dialer-load",
        metavar="SCHEDULE",
        help="slots the PBX's own dialer holds from second T, e.g. 2@0,4@10,0@20",
    )
    p.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS with this PEM cert chain")
    p.add_argument("--tls-key", metavar="FILE", help="the PEM private key of --tls-cert")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `noojee-sim` console script."""
    args = build_parser().parse_args(argv)
    api_key = args.api_key or os.environ.get(API_KEY_ENV)
    if not api_key:
        print(f"noojee-sim: an API key is required (--api-key or ${API_KEY_ENV})", file=sys.stderr)
        return 2
    if (args.tls_cert is None) != (args.tls_key is None):
        print("noojee-sim: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    try:
        fixture = Fixture.load(args.fixture) if args.fixture else None
        sim = Simulator(
            api_key=api_key,
            slots=args.slots,
            service_ms=args.service_ms,
            queue_timeout_s=args.queue_timeout_s,
            fault_rate=args.fault_rate,
            drop_rate=args.drop_rate,
            fixture=fixture,
            seed=args.seed,
            service_growth_ms_per_1000=args.service_growth_ms_per_1000,
            port=args.port,
            id_in_query=args.id_in_query,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            queue=args.queue,
            service_cv=args.service_cv,
            latency_ms=args.latency_ms,
            dialer_load=args.dialer_load,
        )
    except (OSError, ValueError) as exc:
        print(f"noojee-sim: {exc}", file=sys.stderr)
        return 2

    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        sim.start()
    except OSError as exc:
        print(f"noojee-sim: cannot listen: {exc}", file=sys.stderr)
        return 2
    print(f"noojee-sim listening on {sim.url}", flush=True)
    try:
        while not done.wait(1.0):
            pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
