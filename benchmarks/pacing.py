"""Pacing against noojee-sim: the adaptive limiter beside one at a time, fixed 4, 32, the oracle.

Each run starts a fresh in-process `Simulator` (C slots, S = 100 ms a call, the real PBX's 60 s
queue timeout; `queue`, `service_cv` and `latency_ms` as the world says) and the real target as
a subprocess (`python -m target_noojee --config FILE`, operation `insert`), fed unique leads by a
writer thread as fast as the pipe accepts: the target's bounded window pushes back, so every run
is closed-loop at the most the target will send. Configs: the adaptive default; one call at a
time (`concurrency: 1`); `concurrency: 4`; `concurrency: 32`; and the *oracle*: the pinned
`concurrency` with the highest throughput whose mean server queue stays within one call, found
by a sweep of fixed runs in the same world (below). Any `fixed-N` can be asked for by name.

The grid (steady worlds): C in {1, 2, 4, 8, 16, 32} x queue {fifo, barging} x service CV
{0, 0.3, 0.6} x latency {0, 30, 100} ms, plus C=8 with CV 0.5 and 30 ms. The scenarios (C = 8,
FIFO, no noise unless said; adaptive only unless --full or --baselines):

- job-cC-Q: a 10 s job: 10 s x C/S records, then end of input; measured from the target's first
  lead call to the last lead created (start-up excluded, ramp and drain included);
- c-change: C 8 -> 3 -> 12 (3 s, 3 s, 4 s); s-growth: S about 100 -> 300 ms with the leads held;
- outage: 2 s, then 30 s of refused connections, then 4 s;
- errors: 3% of calls 103 and 1% of replies lost, compared with the same world without them
  (c8-fifo, same config and window; run too if not asked for);
- burst: half the calls answer 103 for 5 s (2 s in), then none for 2 s;
- share: two targets on one PBX (the second starts once the first is warm; the window once both
  are); greedy: a neighbour pinned at `concurrency: 32` (four times C) fills the server queue
  first, then ours joins; dialer: the PBX's dialer holds 4 of the 8 slots from 2 s to 5 s.

The default run (about 5 minutes on 2 cores): the worlds c2-fifo, c8-fifo, c16-barging,
c8-barging-cv0.3-l30 and c8-fifo-cv0.5-l30 with every config and the oracle; the jobs
job-c2-fifo, job-c8-barging, job-c16-fifo; every scenario, adaptive only. --full: every world of
the grid, all six jobs, every scenario with the baselines too (about an hour).

Metrics, over a measured window that starts a warm-up after the target's first lead (the
simulator's statistics are reset then): adaptive 2.5 s + 6 s, fixed 0.5 s + 2.5 s by default:

- thr: our leads created per second over the best possible C/S, with the C (less the dialer's
  slots) and S in force when each lead was created, so a change is weighted by time; in the
  greedy row our own share of the PBX, in the share row both targets' (each one's after it);
- q: the simulator's time-weighted mean server queue (calls waiting for a slot, anyone's);
- 109: our lead calls answered 109, over the whole run (warm-up included);
- oracle cell: `N=n thr / q` of the best sweep point. The sweep starts at n* = ceil(C x (S+L)/S),
  goes up one call at a time while the next point stays <= 1.0, up to n* + 3; if n* queues more
  than one call, it goes down instead. With constant service times (CV 0) it also stops at a
  point that queued > 0.6: a FIFO queue there means every slot is busy, so one call more in a
  closed loop adds about one queued call (the next point would queue > 1). Fixed runs of the
  same world (fixed 1, 4, 32) count as sweep points;
- back (outage): from the moment the PBX answers again to the end of the first 1 s holding >= 90%
  of C/S of our leads (a client back at full speed at once scores about 1.1 s); rise (C change,
  dialer): the same from the moment the capacity rose, with the new C/S;
- burst: the lowest `limit` of the progress lines logged within 1 s of the burst's start over the
  last one before it (1 s lines: a cut undone within the second is not seen); the notes add our
  calls in flight at the PBX (0.1 s samples) in the second before and 0.5-1 s after;
- p99 latency (JSON only): the pipe accepting a record -> the PBX creating its lead.

The goal lines after the table (issue 14, adaptive runs): steady worlds with CV <= 0.3 and
latency <= 30 ms: thr >= 0.95 x min(1, the oracle's thr), q <= 0.5, no 109s; CV 0.5 + 30 ms:
thr >= 0.95 x the oracle's, q no more than the oracle's; jobs: thr >= 0.90; outage: back <= 2 s;
C change: rise <= 3 s; errors: >= 0.90 of the same world without them; burst: the limit within
1 s at most 3/4 of the one before ("backs off at once"); share: each >= 0.45; greedy: none of
our calls answered 109. Worlds with CV 0.6 or 100 ms have no goal (the table shows them).

`limit` and the target's own `in_flight` come from its progress lines, `progress_interval_s: 1`
(the settings schema's minimum: `NumberType(minimum=1)`), so they are 1 s samples; the PBX side
(server queue, calls in service, our calls in flight at the PBX, leads created, non-OK replies)
is sampled every 0.1 s. With matplotlib (the `bench` extra: `pip install -e '.[bench]'`), a PNG
per scenario (the adaptive run, else the first config run) goes to --plots: four panels over time,
limit and in flight, throughput with C/S, server queue, non-OK replies per second. Without
matplotlib the table is printed all the same.

    .venv/bin/python benchmarks/pacing.py                  # default subset, about 5 min
    .venv/bin/python benchmarks/pacing.py --full           # the whole grid: about an hour
    .venv/bin/python benchmarks/pacing.py --scenario c8-fifo --scenario outage
    .venv/bin/python benchmarks/pacing.py --scenario 'job-*' --configs adaptive,fixed-8
    .venv/bin/python benchmarks/pacing.py --list           # scenario names, default marked
    .venv/bin/python benchmarks/pacing.py --json out.json --plots /tmp/plots   # or --no-plots

The table and the goal list go to stdout, progress and errors to stderr.
"""

from __future__ import annotations

import argparse
import atexit
import bisect
import contextlib
import fcntl
import fnmatch
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

from target_noojee.simulator import Simulator

API_KEY = "bench-pacing-key"
CAMPAIGN = 41
OVERLOAD_PAUSE_S = 5.0  # the real manual-import pause is 120 s; here 109s come from the queue
QUEUE_TIMEOUT_S = 60.0  # the real PBX's
PIPE_BYTES = 4096
PROGRESS_INTERVAL_S = 1  # the settings schema's minimum (NumberType(minimum=1))
SAMPLE_S = 0.1
SERVICE_MS = 100.0
RECOVERY_WINDOW_S = 1.0
RECOVERY_FRACTION = 0.9
OUTAGE_ALLOWANCE_S = 2.0  # the outage row's thr excludes the outage and this long after it
ORACLE_QUEUE = 1.0  # the oracle: best pinned concurrency whose mean queue stays within one call
SWEEP_ROOM_QUEUE = 0.6  # CV 0, a sweep point queuing more: the next one would queue over one
SWEEP_UP_MAX = 3  # the sweep goes no higher than n* + this
JOB_S = 10.0
GREEDY_CONCURRENCY = 32
BURST_LOOK_S = 1.0
DEFAULT_PLOTS = Path(__file__).resolve().parent / "out"
MAPPING = {"njExternalLeadId": "id", "Name": "name", "FirstPhone": "phone"}
SCHEMA = {
    "type": "SCHEMA",
    "stream": "leads",
    "key_properties": ["id"],
    "schema": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "phone": {"type": "string"},
        },
    },
}
PROGRESS_RE = re.compile(r"progress: (.*)")
FIELD_RE = re.compile(r"([a-z_/]+)=([0-9.]+)")
PHONE_BASE = {"A": 0, "B": 50_000_000, "G": 25_000_000}

# Goals (issue 14), checked on the adaptive rows.
GOAL_STEADY = 0.95  # of C/S, or of the oracle where the oracle gets less than C/S
GOAL_QUEUE = 0.5
GOAL_STEADY_CV = 0.3  # the steady goal holds for CV <= this and latency <= GOAL_STEADY_LATENCY
GOAL_STEADY_LATENCY = 30.0
GOAL_CV05 = 0.95  # of the oracle's throughput, with no more queue than the oracle
GOAL_JOB = 0.90
GOAL_OUTAGE_S = 2.0
GOAL_RISE_S = 3.0
GOAL_ERRORS = 0.90  # of the same world without errors
GOAL_BURST_CUT = 0.75  # "backs off at once": the limit within 1 s at most 3/4 of the one before
GOAL_SHARE = 0.45


# -- worlds, configurations, scenarios -----------------------------------------------------


@dataclass(frozen=True)
class World:
    """A PBX: C slots of S ms, a queue order, service-time noise, network distance."""

    slots: int
    queue: str = "fifo"
    service_cv: float = 0.0
    latency_ms: float = 0.0
    service_ms: float = SERVICE_MS

    @property
    def name(self) -> str:
        cv = f"-cv{self.service_cv:g}" if self.service_cv else ""
        lat = f"-l{self.latency_ms:g}" if self.latency_ms else ""
        return f"c{self.slots}-{self.queue}{cv}{lat}"

    @property
    def label(self) -> str:
        cv = f" cv{self.service_cv:g}" if self.service_cv else ""
        lat = f" L{self.latency_ms:g}ms" if self.latency_ms else ""
        return f"C={self.slots} {self.queue}{cv}{lat}"

    @property
    def n_star(self) -> int:
        """Calls in flight that keep C slots busy at L ms away: C x (S + L) / S, rounded up."""
        return math.ceil(self.slots * (self.service_ms + self.latency_ms) / self.service_ms - 1e-9)

    @property
    def full_rate(self) -> float:
        return self.slots / (self.service_ms / 1000.0)


@dataclass(frozen=True)
class TargetConfig:
    key: str
    label: str
    settings: dict[str, Any]


def fixed(n: int) -> TargetConfig:
    label = "one at a time" if n == 1 else f"fixed {n}"
    return TargetConfig(f"fixed-{n}", label, {"concurrency": n})


ADAPTIVE = TargetConfig("adaptive", "adaptive", {})
BASELINES = [fixed(1), fixed(4), fixed(32)]
ORACLE = "oracle"
DEFAULT_CONFIGS = ["adaptive", "fixed-1", "fixed-4", "fixed-32", ORACLE]


@dataclass(frozen=True)
class Timing:
    adaptive_warmup_s: float = 2.5
    adaptive_window_s: float = 6.0
    fixed_warmup_s: float = 0.5  # a pinned concurrency is at its level from the first calls
    fixed_window_s: float = 2.5

    def warmup(self, cfg: TargetConfig) -> float:
        return self.adaptive_warmup_s if cfg.key == "adaptive" else self.fixed_warmup_s

    def window(self, cfg: TargetConfig) -> float:
        return self.adaptive_window_s if cfg.key == "adaptive" else self.fixed_window_s


@dataclass
class Scenario:
    name: str
    label: str
    world: World
    kind: str = "steady"  # steady | job | change | growth | outage | errors | burst | ...
    window_s: float | None = None  # None: the timing's window for the config
    events: list[tuple[float, str, Any]] = field(default_factory=list)  # (offset s, what, value)
    growth: float = 0.0  # service_growth_ms_per_1000
    fault_rate: float = 0.0
    drop_rate: float = 0.0
    targets: int = 1
    neighbour: int | None = None  # a greedy neighbour pinned at this concurrency, started first
    reference: str | None = None  # errors: the scenario of the same world without them
    grid: bool = False  # a steady world: baselines and the oracle by default

    @property
    def ours(self) -> list[str]:
        return list("AB"[: self.targets])


def growth_per_1000(slots: int, service_ms: float, run_s: float, end_ms: float) -> float:
    """service_growth_ms_per_1000 taking S from `service_ms` to about `end_ms` over a run at C/S.

    With S rising linearly in the lead count from S0 to S1, N leads take N * (S0 + S1) / 2 / C
    seconds at full speed.
    """
    n = slots * run_s / ((service_ms + end_ms) / 2000.0)
    return (end_ms - service_ms) * 1000.0 / n


GRID_SLOTS = (1, 2, 4, 8, 16, 32)
GRID_QUEUES = ("fifo", "barging")
GRID_CVS = (0.0, 0.3, 0.6)
GRID_LATENCIES = (0.0, 30.0, 100.0)
CV05 = World(8, "fifo", 0.5, 30.0)
JOB_WORLDS = [World(c, q) for c in (2, 8, 16) for q in GRID_QUEUES]
SCENARIO_NAMES = ["c-change", "s-growth", "outage", "errors", "burst", "share", "greedy", "dialer"]
DEFAULT_STEADY = ["c2-fifo", "c8-fifo", "c16-barging", "c8-barging-cv0.3-l30", CV05.name]
DEFAULT_JOBS = ["job-c2-fifo", "job-c8-barging", "job-c16-fifo"]
DEFAULT = DEFAULT_STEADY + DEFAULT_JOBS + SCENARIO_NAMES


def catalog(timing: Timing) -> dict[str, Scenario]:
    """Every world of the grid and every scenario, by name, in the order they run."""
    out: dict[str, Scenario] = {}
    worlds = [
        World(c, q, cv, lat)
        for c in GRID_SLOTS
        for q in GRID_QUEUES
        for cv in GRID_CVS
        for lat in GRID_LATENCIES
    ]
    for w in [*worlds, CV05]:
        out[w.name] = Scenario(w.name, w.label, w, grid=True)
    for w in JOB_WORLDS:
        name = f"job-c{w.slots}-{w.queue}"
        out[name] = Scenario(name, f"10 s job C={w.slots} {w.queue}", w, kind="job")
    c8 = World(8)
    out["c-change"] = Scenario(
        "c-change",
        "C 8->3->12",
        c8,
        kind="change",
        window_s=10.0,
        events=[(3.0, "slots", 3), (6.0, "slots", 12)],
    )
    grow_s = 7.0
    growth = growth_per_1000(8, SERVICE_MS, timing.adaptive_warmup_s + grow_s + 1.0, 300.0)
    out["s-growth"] = Scenario(
        "s-growth", "S 100->~300ms C=8", c8, kind="growth", window_s=grow_s, growth=growth
    )
    out["outage"] = Scenario(
        "outage",
        "30 s outage C=8",
        c8,
        kind="outage",
        window_s=36.0,
        events=[(2.0, "outage", "refuse"), (32.0, "outage", None)],
    )
    out["errors"] = Scenario(
        "errors",
        "3% 103 + 1% lost C=8",
        c8,
        kind="errors",
        fault_rate=0.03,
        drop_rate=0.01,
        reference=c8.name,
    )
    out["burst"] = Scenario(
        "burst",
        "50% 103 for 5 s C=8",
        c8,
        kind="burst",
        window_s=9.0,
        events=[(2.0, "fault", 0.5), (7.0, "fault", 0.0)],
    )
    out["share"] = Scenario("share", "2 targets C=8", c8, kind="share", window_s=8.0, targets=2)
    out["greedy"] = Scenario(
        "greedy",
        f"greedy neighbour ({GREEDY_CONCURRENCY}) C=8",
        c8,
        kind="greedy",
        window_s=5.0,
        neighbour=GREEDY_CONCURRENCY,
    )
    out["dialer"] = Scenario(
        "dialer",
        "dialer holds 4 of 8, 2-5 s",
        c8,
        kind="dialer",
        window_s=8.0,
        events=[(2.0, "dialer", 4), (5.0, "dialer", 0)],
    )
    return out


# -- the instrumented PBX --------------------------------------------------------------------


def _client(body: Any) -> str:
    """Whose call this is: the first letter of its external id (A, B: ours; G: the neighbour)."""
    if isinstance(body, dict):
        ext = body.get("njExternalLeadId")
        if isinstance(ext, str) and ext:
            return ext[0]
    return "?"


class Probe(Simulator):
    """A Simulator that also counts, per client, lead calls in flight, replies and leads created."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._probe_lock = threading.Lock()
        self._flight: Counter[str] = Counter()
        self._created: Counter[str] = Counter()
        self._replies: dict[str, Counter[str]] = {}
        self.first_call: dict[str, float] = {}
        self.first_created: dict[str, float] = {}
        self.reset_on_first_call = False  # a job: the statistics start with its first call

    def lead_call(self, method: str, query: dict[str, str], body: Any) -> Any:
        client = _client(body)
        with self._probe_lock:
            self._flight[client] += 1
            first = client not in self.first_call
            if first:
                self.first_call[client] = time.time()
        if first and self.reset_on_first_call:
            self.reset_stats()
        outcome = "error"
        try:
            reply = super().lead_call(method, query, body)
            outcome = "lost" if reply is None else str(reply[1].get("code"))
            return reply
        finally:
            with self._probe_lock:
                self._flight[client] -= 1
                self._replies.setdefault(client, Counter())[outcome] += 1
                if outcome in ("0", "lost"):  # a lost reply's lead was committed
                    self._created[client] += 1
                    self.first_created.setdefault(client, time.time())

    def created(self, client: str) -> int:
        with self._probe_lock:
            return self._created[client]

    def snapshot(self) -> tuple[dict[str, int], dict[str, int], dict[str, dict[str, int]]]:
        """(calls in flight, leads created, replies by outcome), per client."""
        with self._probe_lock:
            return (
                dict(self._flight),
                dict(self._created),
                {c: dict(v) for c, v in self._replies.items()},
            )


class Sample(NamedTuple):
    t: float
    queue: int
    in_service: int
    slots: int  # available to lead calls (C less the dialer's)
    service_ms: float  # the mean in force (growth included)
    flight: dict[str, int]
    created: dict[str, int]
    replies: dict[str, dict[str, int]]


class Sampler:
    """Reads the PBX every SAMPLE_S seconds in a thread."""

    def __init__(self, sim: Probe) -> None:
        self.sim = sim
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pacing-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            st = self.sim.state(include_leads=False)
            flight, created, replies = self.sim.snapshot()
            service = st["service_ms"] + st["service_growth_ms_per_1000"] * st["lead_count"] / 1e3
            self.samples.append(
                Sample(
                    time.time(),
                    st["queue_length"],
                    st["in_service"],
                    max(0, st["slots"] - st["dialer_slots"]),
                    service,
                    flight,
                    created,
                    replies,
                )
            )


# -- child processes ------------------------------------------------------------------------

_CHILDREN: set[subprocess.Popen[bytes]] = set()


def _kill_children() -> None:
    """Kill every target process this benchmark started and that still runs."""
    for proc in list(_CHILDREN):
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        _CHILDREN.discard(proc)


def _interrupt(_signum: int, _frame: Any) -> None:
    """SIGTERM / SIGHUP stop the benchmark like Ctrl-C: children killed, partial table."""
    raise KeyboardInterrupt


class Progress(NamedTuple):
    t: float
    delivered: int
    in_flight: int
    limit: int | None
    rate: float


def parse_progress(at: float, line: str) -> Progress | None:
    """`progress: delivered=.. rejected=.. retrying=.. in_flight=.. limit=.. leads/s=..`."""
    m = PROGRESS_RE.search(line)
    if not m:
        return None
    f = dict(FIELD_RE.findall(m.group(1)))
    if "delivered" not in f or "in_flight" not in f:
        return None
    limit = int(f["limit"]) if "limit" in f else None
    return Progress(at, int(f["delivered"]), int(f["in_flight"]), limit, float(f.get("leads/s", 0)))


class Feed:
    """One target process and the writer thread feeding it unique leads as fast as it reads."""

    def __init__(
        self,
        prefix: str,
        url: str,
        settings: dict[str, Any],
        workdir: Path,
        records: int | None = None,
    ) -> None:
        self.prefix = prefix
        self.phone_base = PHONE_BASE[prefix]
        self.records = records  # None: endless; else that many, then end of input
        self.written: dict[str, float] = {}  # external id -> when the pipe accepted it
        self.first_write = 0.0
        self.log: list[tuple[float, str]] = []  # (arrival time, stderr line)
        self.progress: list[Progress] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        config = {
            "base_url": url,
            "api_key": API_KEY,
            "template_id": 41,
            "campaign_id": CAMPAIGN,
            "allocation_id": 38,
            "operation": "insert",
            "mapping": MAPPING,
            "reject_file": str(workdir / f"{prefix}-rejects.jsonl"),
            "ledger_path": str(workdir / f"{prefix}-ledger.sqlite"),
            "overload_pause_s": OVERLOAD_PAUSE_S,
            "max_retry_time_s": 300,
            "progress_interval_s": PROGRESS_INTERVAL_S,
            **settings,
        }
        self.config_path = workdir / f"{prefix}-config.json"
        self.config_path.write_text(json.dumps(config), encoding="utf-8")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "target_noojee", "--config", str(self.config_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # Ctrl-C reaches us; we kill the children ourselves
            env={**os.environ, "LOGLEVEL": "INFO"},
        )
        _CHILDREN.add(self.proc)
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError, AttributeError):
            fcntl.fcntl(self.proc.stdin.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_BYTES)
        for target in (self._write, self._read_stderr):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _write(self) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        fd = self.proc.stdin.fileno()
        try:
            os.write(fd, (json.dumps(SCHEMA) + "\n").encode())
            self.first_write = time.time()
            i = 0
            while not self._stop.is_set() and (self.records is None or i < self.records):
                external_id = f"{self.prefix}{i:07d}"
                record = {
                    "id": external_id,
                    "name": f"{time.time():.6f}",  # written just before the write
                    "phone": f"04{self.phone_base + i:08d}",
                }
                line = json.dumps({"type": "RECORD", "stream": "leads", "record": record})
                os.write(fd, (line + "\n").encode())  # < PIPE_BUF: whole or blocks
                self.written[external_id] = time.time()
                i += 1
            if self.records is not None:
                self.proc.stdin.close()  # end of input: the target drains and exits
        except (OSError, ValueError):
            pass  # the target exited (BrokenPipeError), or stop() closed the pipe

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for raw in self.proc.stderr:
            at = time.time()
            line = raw.decode("utf-8", "replace").rstrip()
            self.log.append((at, line))
            progress = parse_progress(at, line)
            if progress is not None:
                self.progress.append(progress)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self) -> None:
        """Kill the target (its clean shutdown is not what is measured) and join the threads."""
        self._stop.set()
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.kill()
            proc.wait()
        _CHILDREN.discard(proc)
        for thread in self._threads:
            thread.join(timeout=5)
        with contextlib.suppress(OSError, ValueError):
            assert proc.stdin is not None
            proc.stdin.close()

    def tail(self, n: int = 8) -> str:
        return "\n".join(line for _, line in self.log[-n:])


# -- one run ---------------------------------------------------------------------------------


@dataclass
class Segment:
    start: float
    end: float
    label: str
    mean_queue: float
    codes: dict[int, int]
    peak: int


@dataclass
class Run:
    scenario: Scenario
    config: TargetConfig
    start: float = 0.0
    end: float = 0.0
    segments: list[Segment] = field(default_factory=list)
    cap_changes: list[tuple[float, int]] = field(default_factory=list)  # slots for lead calls
    service_changes: list[tuple[float, float]] = field(default_factory=list)
    marks: list[tuple[float, str]] = field(default_factory=list)  # (when, event) for the plots
    outage: tuple[float, float] | None = None  # (PBX gone, PBX answers again)
    leads: list[tuple[float, str]] = field(default_factory=list)  # (created, external id)
    written: dict[str, float] = field(default_factory=dict)
    first_write: dict[str, float] = field(default_factory=dict)
    first_call: dict[str, float] = field(default_factory=dict)
    progress: dict[str, list[Progress]] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    replies: dict[str, dict[str, int]] = field(default_factory=dict)  # whole run, per client
    errors: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.metrics.get("ratio") is not None and not self.errors


def sleep_until(t: float) -> None:
    while True:
        left = t - time.time()
        if left <= 0:
            return
        time.sleep(min(left, 0.5))


def wait_first_lead(sim: Probe, feed: Feed, timeout: float = 60.0) -> float:
    """When the PBX created the first lead of this feed."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        at = sim.first_created.get(feed.prefix)
        if at is not None:
            return at
        if not feed.alive():
            break
        time.sleep(0.02)
    raise RuntimeError(f"target {feed.prefix} delivered nothing; its stderr:\n{feed.tail()}")


def run_one(scn: Scenario, cfg: TargetConfig, timing: Timing, workdir: Path) -> Run:
    """One scenario with one config: start, warm up, measure, stop, collect."""
    w = scn.world
    run = Run(scn, cfg)
    run.cap_changes.append((0.0, w.slots))
    run.service_changes.append((0.0, w.service_ms))
    sim = Probe(
        api_key=API_KEY,
        slots=w.slots,
        service_ms=w.service_ms,
        queue_timeout_s=QUEUE_TIMEOUT_S,
        fault_rate=scn.fault_rate,
        drop_rate=scn.drop_rate,
        service_growth_ms_per_1000=scn.growth,
        queue=w.queue,
        service_cv=w.service_cv,
        latency_ms=w.latency_ms,
    )
    sim.start()
    sampler = Sampler(sim)
    sampler.start()
    feeds: list[Feed] = []
    try:
        if scn.neighbour:
            greedy = Feed("G", sim.url, {"concurrency": scn.neighbour}, workdir)
            feeds.append(greedy)
            greedy.start()
            wait_first_lead(sim, greedy)
            sleep_until(time.time() + 0.5)  # its queue stands before ours joins
        if scn.kind == "job":
            _job(run, sim, feeds, workdir)
        else:
            _timeline(run, sim, feeds, timing, workdir)
        run.replies = sim.snapshot()[2]
    finally:
        for feed in feeds:
            feed.stop()
        sampler.stop()
        run.leads = sorted((lead["created"], lead["external_id"]) for lead in sim.leads(CAMPAIGN))
        sim.stop()
    run.samples = sampler.samples
    run.first_call = dict(sim.first_call)
    for feed in feeds:
        run.written.update(feed.written)
        run.first_write[feed.prefix] = feed.first_write
        run.progress[feed.prefix] = feed.progress
    compute_metrics(run)
    return run


def _job(run: Run, sim: Probe, feeds: list[Feed], workdir: Path) -> None:
    """A job of JOB_S x C/S records: from its first lead call to its last lead created."""
    w = run.scenario.world
    n = round(JOB_S * w.full_rate)
    sim.reset_on_first_call = True
    feed = Feed("A", sim.url, run.config.settings, workdir, records=n)
    feeds.append(feed)
    feed.start()
    deadline = time.time() + 60.0 + 10 * JOB_S
    while sim.created("A") < n and feed.alive() and time.time() < deadline:
        time.sleep(0.02)
    now = time.time()
    done = sim.created("A") >= n
    start = sim.first_call.get("A", now)
    run.segments.append(
        Segment(start, now, "job", sim.mean_queue_length(), sim.code_counts, sim.peak_in_service)
    )
    run.start, run.end = start, now  # the end: the last lead's created time, once collected
    run.metrics["job_records"] = n
    if not done:
        code = feed.returncode()
        why = "timed out" if code is None else f"exited ({code})"
        run.errors.append(f"job {why} with {sim.created('A')} of {n} leads:\n{feed.tail()}")


def _timeline(run: Run, sim: Probe, feeds: list[Feed], timing: Timing, workdir: Path) -> None:
    """Warm up, then the measured window with its events."""
    scn, cfg = run.scenario, run.config
    warmup = timing.warmup(cfg)
    window = scn.window_s if scn.window_s is not None else timing.window(cfg)
    warm_end = 0.0
    for n, prefix in enumerate(scn.ours):
        if n:
            sleep_until(warm_end)  # the next target joins a PBX the first one fills
        feed = Feed(prefix, sim.url, cfg.settings, workdir)
        feeds.append(feed)
        feed.start()
        warm_end = wait_first_lead(sim, feed) + warmup
    sleep_until(warm_end)
    sim.reset_stats()
    run.start = seg_start = time.time()
    slots, held = scn.world.slots, 0
    label = {"change": f"C={slots}", "dialer": "dialer 0"}.get(scn.kind, "steady")
    outage_start = 0.0
    for offset, what, value in [*scn.events, (window, "end", None)]:
        sleep_until(run.start + offset)
        now = time.time()
        run.segments.append(
            Segment(seg_start, now, label, sim.mean_queue_length(), sim.code_counts, 0)
        )
        run.segments[-1].peak = sim.peak_in_service
        sim.reset_stats()
        if what == "slots":
            sim.set_slots(value)
            slots, label = value, f"C={value}"
        elif what == "dialer":
            sim.set_dialer_slots(value)
            held, label = value, f"dialer {value}"
        elif what == "service_ms":
            sim.set_service_ms(value)
            run.service_changes.append((time.time(), value))
            label = f"S={value:g}ms"
        elif what == "fault":
            sim.set_fault_rate(value)
            label = f"103 {value:.0%}" if value else "after"
        elif what == "outage":
            sim.set_outage(value)
            if value is not None:
                outage_start, label = time.time(), "outage"
            else:
                run.outage, label = (outage_start, time.time()), "after"
        if what in ("slots", "dialer"):
            run.cap_changes.append((time.time(), max(0, slots - held)))
        if what != "end":
            run.marks.append((time.time(), label))
        seg_start = time.time()
    run.end = run.segments[-1].end
    for feed in feeds:
        if not feed.alive():
            run.errors.append(
                f"target {feed.prefix} exited early ({feed.returncode()}):\n{feed.tail()}"
            )


# -- metrics ---------------------------------------------------------------------------------


def in_force(changes: list[tuple[float, Any]], t: float) -> Any:
    """The value of a setting at time t, from its (time, value) changes."""
    value = changes[0][1]
    for at, new in changes:
        if at <= t:
            value = new
    return value


def ideal_costs(run: Run) -> list[tuple[float, str, float]]:
    """(created, id, S/C in force): the seconds of PBX capacity each lead needed at best."""
    growth = run.scenario.growth
    out = []
    for i, (created, ext) in enumerate(run.leads):
        service_s = (in_force(run.service_changes, created) + growth * i / 1000.0) / 1000.0
        out.append((created, ext, service_s / max(1, in_force(run.cap_changes, created))))
    return out


def ratio(
    costs: list[tuple[float, str, float]],
    spans: list[tuple[float, float]],
    prefixes: Iterable[str],
) -> float | None:
    """Throughput / (C/S) over some spans of time: capacity used at best / time elapsed."""
    elapsed = sum(b - a for a, b in spans if b > a)
    if elapsed <= 0:
        return None
    whose = tuple(prefixes)
    used = sum(
        cost
        for created, ext, cost in costs
        if ext.startswith(whose) and any(a <= created < b for a, b in spans)
    )
    return used / elapsed


def p99(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


def recovery(times: list[float], since: float, rate: float) -> float | None:
    """Seconds from `since` to the end of the first 1 s window holding >= 90% of `rate` leads."""
    need = max(1, math.ceil(RECOVERY_FRACTION * rate * RECOVERY_WINDOW_S))
    after = [t for t in times if t >= since]
    for j in range(need - 1, len(after)):
        if after[j] - after[j - need + 1] <= RECOVERY_WINDOW_S:
            return max(after[j] - since, RECOVERY_WINDOW_S)
    return None


def full_rate(run: Run, t: float) -> float:
    """C/S in leads per second at time t (the C and S in force then)."""
    return in_force(run.cap_changes, t) / (in_force(run.service_changes, t) / 1000.0)


def weighted_queue(segments: list[Segment]) -> float:
    total = sum(s.end - s.start for s in segments)
    if total <= 0:
        return 0.0
    return sum(s.mean_queue * (s.end - s.start) for s in segments) / total


def merged(replies: dict[str, dict[str, int]], prefixes: Iterable[str]) -> dict[str, int]:
    out: Counter[str] = Counter()
    for p in prefixes:
        out.update(replies.get(p, {}))
    return dict(out)


def limits_between(run: Run, prefix: str, a: float, b: float) -> list[int]:
    return [p.limit for p in run.progress.get(prefix, []) if p.limit is not None and a <= p.t <= b]


def mean_flight(run: Run, prefix: str, a: float, b: float) -> float | None:
    values = [s.flight.get(prefix, 0) for s in run.samples if a <= s.t < b]
    return statistics.fmean(values) if values else None


def compute_metrics(run: Run) -> None:
    scn, m = run.scenario, run.metrics
    ours = scn.ours
    costs = ideal_costs(run)
    if scn.kind == "job":
        mine = [created for created, ext in run.leads if ext.startswith("A")]
        if mine and run.first_call.get("A"):
            run.end = max(mine)
        m["job_s"] = run.end - run.start
        wrote = run.first_write.get("A")
        if wrote and run.end > wrote:
            m["from_write"] = len(mine) / (run.end - wrote) / scn.world.full_rate
    times = [created for created, ext in run.leads if ext.startswith(tuple(ours))]
    end = run.end + (1e-6 if scn.kind == "job" else 0.0)  # the job's last lead counts
    spans = [(run.start, end)]
    queue_segments = run.segments
    if run.outage is not None:
        gone, back = run.outage
        spans = [(run.start, gone), (back + OUTAGE_ALLOWANCE_S, run.end)]
        queue_segments = [s for s in run.segments if s.label != "outage"]
    m["ratio"] = ratio(costs, spans, ours)
    m["queue"] = weighted_queue(queue_segments)
    m["codes"] = dict(sorted(merged(run.replies, ours).items()))
    m["n109"] = m["codes"].get("109", 0)
    m["peak"] = max((s.peak for s in run.segments), default=0)
    latencies = [
        created - run.written[ext]
        for created, ext in run.leads
        if run.start <= created < end and ext in run.written
    ]
    m["p99"] = p99(latencies)
    m["leads"] = sum(1 for t in times if run.start <= t < end)
    notes: list[str] = []
    if scn.kind in ("change", "dialer"):
        parts, rises = [], []
        for i, seg in enumerate(run.segments):
            part = f"{seg.label}: {ratio(costs, [(seg.start, seg.end)], ours) or 0:.2f}"
            part += f" q {seg.mean_queue:.2f}"
            if i:
                rec = recovery(times, seg.start, full_rate(run, seg.start))
                part += f" (90% in {fmt(rec, 1, 'never')} s)"
                prev = run.segments[i - 1]
                if in_force(run.cap_changes, seg.start) > in_force(run.cap_changes, prev.start):
                    rises.append(math.inf if rec is None else rec)
            parts.append(part)
        m["recover_rise"] = max(rises) if rises else None
        notes.append("; ".join(parts))
    if scn.kind == "growth":
        n_end = sum(1 for created, _ in run.leads if created < run.end)
        m["s_end_ms"] = scn.world.service_ms + scn.growth * n_end / 1000.0
        notes.append(f"S reached {m['s_end_ms']:.0f} ms ({scn.growth:.0f} ms/1000 leads)")
    if run.outage is not None:
        gone, back = run.outage
        m["recover"] = recovery(times, back, full_rate(run, back))
        m["ratio_before"] = ratio(costs, [(run.start, gone)], ours)
        m["ratio_after"] = ratio(costs, [(back + OUTAGE_ALLOWANCE_S, run.end)], ours)
        notes.append(
            f"thr before {fmt(m['ratio_before'])} after {fmt(m['ratio_after'])} "
            f"(from {OUTAGE_ALLOWANCE_S:g} s after)"
        )
    if scn.kind == "burst" and run.marks:
        burst = run.marks[0][0]
        before = limits_between(run, "A", burst - 2.0, burst)
        after = limits_between(run, "A", burst + 1e-3, burst + BURST_LOOK_S)
        if not after:  # no line in that second (1 s lines): the first one after it
            after = [p.limit for p in run.progress.get("A", []) if p.t > burst and p.limit][:1]
        if before and after:
            m["burst_before"], m["burst_min"] = before[-1], min(after)
            m["burst_cut"] = min(after) / before[-1]
        f0 = mean_flight(run, "A", burst - 1.0, burst)
        f1 = mean_flight(run, "A", burst + 0.5, burst + 1.0)
        m["burst_flight"] = (f0, f1)
        by_label = {s.label: s for s in run.segments}
        during = by_label.get(run.marks[0][1])
        notes.append(
            f"limit {m.get('burst_before', '-')} -> {m.get('burst_min', '-')} within "
            f"{BURST_LOOK_S:g} s; our calls at the PBX {fmt(f0, 1)} -> {fmt(f1, 1)} "
            f"(0.5-1 s after); thr during "
            f"{fmt(ratio(costs, [(during.start, during.end)], ours) if during else None)}"
        )
    if scn.kind == "share":
        m["shares"] = {p: ratio(costs, spans, p) or 0.0 for p in ours}
        notes.append(
            "shares "
            + " ".join(f"{p} {v:.2f}" for p, v in m["shares"].items())
            + f", total {sum(m['shares'].values()):.2f}"
        )
    if scn.kind == "greedy":
        m["neighbour"] = ratio(costs, spans, "G")
        g109 = run.replies.get("G", {}).get("109", 0)
        notes.append(f"neighbour's share {fmt(m['neighbour'])}, its 109s {g109}")
    if scn.kind == "job":
        notes.append(
            f"{m.get('job_records')} leads in {m['job_s']:.1f} s from the first call; from the "
            f"first record written {fmt(m.get('from_write'))} of C/S (start-up included)"
        )
    lim = {
        p: f"{min(v)}-{max(v)} med {statistics.median(v):g}"
        for p in ours
        if (v := limits_between(run, p, run.start, run.end))
    }
    if run.config.key == "adaptive" and lim:
        notes.append(
            ("limit " + next(iter(lim.values())))
            if len(lim) == 1
            else "limits " + ", ".join(f"{p} {v}" for p, v in lim.items())
        )
    others = {k: v for k, v in m["codes"].items() if k not in ("0", "109")}
    if others:
        notes.append("codes " + " ".join(f"{k}x{v}" for k, v in others.items()))
    if run.errors:
        notes.append("ERROR: " + run.errors[0].splitlines()[0])
    m["notes"] = "; ".join(notes)


def failed_run(scn: Scenario, cfg: TargetConfig, error: str) -> Run:
    """A row for a run that could not be measured."""
    run = Run(scn, cfg, errors=[error])
    run.metrics = {"ratio": None, "queue": None, "n109": "-", "notes": "FAILED: " + error}
    run.metrics["notes"] = run.metrics["notes"].splitlines()[0]
    return run


# -- the oracle sweep -------------------------------------------------------------------------


@dataclass
class Oracle:
    n_star: int
    points: dict[int, Run]
    best: int | None = None
    stopped: str = ""

    @property
    def run(self) -> Run | None:
        return None if self.best is None else self.points[self.best]


def within(run: Run) -> bool:
    return run.ok and run.metrics["queue"] <= ORACLE_QUEUE


def sweep(scn: Scenario, known: dict[str, Run], measure: Callable[[int], Run]) -> Oracle:
    """The pinned concurrency with the best throughput whose mean queue stays within one call."""
    points = {int(k[6:]): r for k, r in known.items() if k.startswith("fixed-") and r.ok}
    oracle = Oracle(scn.world.n_star, points)

    def point(n: int) -> Run:
        if n not in points:
            points[n] = measure(n)
        return points[n]

    n = oracle.n_star
    if within(point(n)):
        while True:
            if not scn.world.service_cv and point(n).metrics["queue"] > SWEEP_ROOM_QUEUE:
                oracle.stopped = f"{n} queued > {SWEEP_ROOM_QUEUE:g}"
                break
            if n + 1 > oracle.n_star + SWEEP_UP_MAX:
                oracle.stopped = f"n*+{SWEEP_UP_MAX}"
                break
            if not within(point(n + 1)):
                oracle.stopped = f"{n + 1} queued > {ORACLE_QUEUE:g}"
                break
            n += 1
    else:
        while n > 1 and not within(point(n)):
            n -= 1
    fits = [(r.metrics["ratio"], -k) for k, r in points.items() if within(r)]
    if fits:
        oracle.best = -max(fits)[1]
    return oracle


# -- report ----------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 2, none: str = "-") -> str:
    return none if value is None else f"{value:.{digits}f}"


def key_metric(run: Run) -> str:
    """The scenario's own number for a table cell."""
    m, kind = run.metrics, run.scenario.kind
    if kind == "outage":
        return f", back {fmt(m.get('recover'), 1, 'never')} s"
    if kind in ("change", "dialer"):
        rec = m.get("recover_rise")
        return f", rise {fmt(None if rec == math.inf else rec, 1, 'never')} s"
    if kind == "errors" and m.get("vs_clean") is not None:
        return f", {m['vs_clean']:.2f} of clean"
    if kind == "burst" and run.config.key == "adaptive" and m.get("burst_cut") is not None:
        return f", limit x{m['burst_cut']:.2f} in {BURST_LOOK_S:g} s"
    if kind == "share" and "shares" in m:
        return ", " + " / ".join(f"{v:.2f}" for v in m["shares"].values())
    if kind == "greedy":
        return f", neighbour {fmt(m.get('neighbour'))}"
    return ""


def cell(run: Run | None) -> str:
    if run is None:
        return "-"
    m = run.metrics
    if m.get("queue") is None:
        return "FAILED"
    return f"{fmt(m['ratio'])} / {fmt(m['queue'])} / {m['n109']}{key_metric(run)}"


@dataclass
class Results:
    runs: dict[str, dict[str, Run]] = field(default_factory=dict)  # scenario -> config -> run
    oracles: dict[str, Oracle] = field(default_factory=dict)
    order: list[Scenario] = field(default_factory=list)

    def add(self, run: Run) -> None:
        if run.scenario.name not in self.runs:
            self.runs[run.scenario.name] = {}
            self.order.append(run.scenario)
        self.runs[run.scenario.name][run.config.key] = run

    def get(self, scenario: str, config: str) -> Run | None:
        return self.runs.get(scenario, {}).get(config)

    def count(self) -> int:
        sweeps = sum(
            len([k for k in o.points if f"fixed-{k}" not in self.runs.get(name, {})])
            for name, o in self.oracles.items()
        )
        return sum(len(v) for v in self.runs.values()) + sweeps


def oracle_cell(oracle: Oracle | None) -> str:
    if oracle is None:
        return "-"
    run = oracle.run
    if run is None:
        return "none within 1 call"
    return f"N={oracle.best} {fmt(run.metrics['ratio'])} / {fmt(run.metrics['queue'])}"


def sweep_note(oracle: Oracle) -> str:
    pts = ", ".join(
        f"{k} {fmt(r.metrics.get('ratio'))}/{fmt(r.metrics.get('queue'))}"
        for k, r in sorted(oracle.points.items())
    )
    stop = f", stop: {oracle.stopped}" if oracle.stopped else ""
    return f"sweep n*={oracle.n_star}: {pts}{stop}"


def table(results: Results, columns: list[TargetConfig], with_oracle: bool) -> str:
    header = ["scenario", *[c.label for c in columns]]
    if with_oracle:
        header.append("oracle")
    header.append("notes")
    rows = []
    for scn in results.order:
        by_cfg = results.runs[scn.name]
        config = " x2" if scn.targets > 1 else ""
        row = [scn.label + config, *[cell(by_cfg.get(c.key)) for c in columns]]
        oracle = results.oracles.get(scn.name)
        if with_oracle:
            row.append(oracle_cell(oracle))
        main = by_cfg.get("adaptive") or next(iter(by_cfg.values()))
        notes = [main.metrics.get("notes", "")]
        if oracle is not None:
            notes.append(sweep_note(oracle))
        row.append("; ".join(n for n in notes if n))
        rows.append(row)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    out = [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out.extend(line(r) for r in rows)
    return "\n".join(out)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def goals(results: Results) -> list[str]:
    """The issue's goals, one line each, on the adaptive runs."""
    out: list[str] = []

    def add(ok: bool, what: str, detail: str) -> None:
        out.append(f"{verdict(ok)}  {what}: {detail}")

    for scn in results.order:
        run = results.get(scn.name, "adaptive")
        if run is None:
            continue
        m, label = run.metrics, scn.label + (" x2" if scn.targets > 1 else "")
        if m.get("queue") is None or m.get("ratio") is None:
            add(False, label, "not measured")
            continue
        r, q, n109 = m["ratio"], m["queue"], m["n109"]
        w = scn.world
        oracle = results.oracles.get(scn.name)
        orun = oracle.run if oracle else None
        if scn.kind == "steady" and w == CV05:
            if orun is None:
                add(False, label, "no oracle to compare with")
                continue
            o_r, o_q = orun.metrics["ratio"], orun.metrics["queue"]
            ok_r, ok_q = r >= GOAL_CV05 * o_r, q <= o_q
            add(
                ok_r and ok_q,
                label,
                f"thr {r:.2f} >= {GOAL_CV05} x oracle {o_r:.2f} {verdict(ok_r)}; "
                f"queue {q:.2f} <= oracle's {o_q:.2f} {verdict(ok_q)}",
            )
        elif scn.kind == "steady":
            if w.service_cv > GOAL_STEADY_CV or w.latency_ms > GOAL_STEADY_LATENCY:
                continue  # outside the steady goal's worlds
            base = "C/S"
            need = GOAL_STEADY
            if orun is not None and orun.metrics["ratio"] < 1.0:
                need = GOAL_STEADY * orun.metrics["ratio"]
                base = f"oracle {orun.metrics['ratio']:.3f}"
            ok_r, ok_q, ok_e = r >= need, q <= GOAL_QUEUE, n109 == 0
            add(
                ok_r and ok_q and ok_e,
                label,
                f"thr {r:.2f} >= {need:.2f} ({GOAL_STEADY} x {base}) {verdict(ok_r)}; "
                f"queue {q:.2f} <= {GOAL_QUEUE} {verdict(ok_q)}; 109s {n109} {verdict(ok_e)}",
            )
        elif scn.kind == "job":
            add(r >= GOAL_JOB, label, f"thr {r:.2f} >= {GOAL_JOB} of C/S, ramp included")
        elif scn.kind == "outage":
            rec = m.get("recover")
            ok = rec is not None and rec <= GOAL_OUTAGE_S
            add(ok, label, f"back to 90% of C/S in {fmt(rec, 1, 'never')} s <= {GOAL_OUTAGE_S:g}")
        elif scn.kind == "change":
            rec = m.get("recover_rise")
            ok = rec is not None and rec <= GOAL_RISE_S
            shown = fmt(None if rec == math.inf else rec, 1, "never")
            add(ok, label, f"back to 90% of C/S in {shown} s after C rose <= {GOAL_RISE_S:g}")
        elif scn.kind == "errors":
            vs = m.get("vs_clean")
            ref = results.get(scn.reference or "", "adaptive")
            detail = (
                f"{fmt(vs)} of the same world without them >= {GOAL_ERRORS} "
                f"({r:.2f} vs {fmt(ref.metrics.get('ratio') if ref else None)})"
            )
            add(vs is not None and vs >= GOAL_ERRORS, label, detail)
        elif scn.kind == "burst":
            cut = m.get("burst_cut")
            add(
                cut is not None and cut <= GOAL_BURST_CUT,
                label,
                f"limit {m.get('burst_before', '-')} -> {m.get('burst_min', '-')} within "
                f"{BURST_LOOK_S:g} s of the burst, x{fmt(cut)} <= {GOAL_BURST_CUT}",
            )
        elif scn.kind == "share":
            shares = m.get("shares", {})
            low = min(shares.values(), default=0.0)
            add(
                low >= GOAL_SHARE,
                label,
                "shares " + " / ".join(f"{v:.2f}" for v in shares.values()) + f" >= {GOAL_SHARE}",
            )
        elif scn.kind == "greedy":
            add(n109 == 0, label, f"our 109s {n109} == 0 (our share {r:.2f})")
    return out


def preamble(args: argparse.Namespace, timing: Timing) -> str:
    return "\n".join(
        [
            f"pacing benchmark{' (--full)' if args.full else ''}: target-noojee against "
            f"noojee-sim on 127.0.0.1, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}",
            f"S = {SERVICE_MS:g} ms; sim queue_timeout_s = {QUEUE_TIMEOUT_S:g} (the real PBX's); "
            f"target overload_pause_s = {OVERLOAD_PAUSE_S:g} (the 109s here can only come from "
            "the server queue); progress_interval_s = 1 (the schema's minimum).",
            f"window: adaptive {timing.adaptive_warmup_s:g} s warm-up + "
            f"{timing.adaptive_window_s:g} s, fixed {timing.fixed_warmup_s:g} s + "
            f"{timing.fixed_window_s:g} s (scenarios: their own length); cells: thr / q / 109 = "
            "our leads/s over C/S / mean server queue (calls) / our 109s; oracle: best pinned "
            "concurrency with q <= 1 (sweep in the notes: N thr/q).",
        ]
    )


def summary_line(run: Run) -> str:
    m = run.metrics
    return (
        f"[{run.scenario.name} / {run.config.key}] thr {fmt(m.get('ratio'))} "
        f"queue {fmt(m.get('queue'))} 109s {m.get('n109')} leads {m.get('leads', 0)}"
        f"{key_metric(run) if m.get('queue') is not None else ''}; {m.get('notes', '')}"
    )


def to_json(run: Run) -> dict[str, Any]:
    return {
        "scenario": run.scenario.name,
        "config": run.config.key,
        "window_s": run.end - run.start,
        "segments": [
            {
                "label": s.label,
                "seconds": s.end - s.start,
                "mean_queue": s.mean_queue,
                "codes": s.codes,
                "peak_in_service": s.peak,
            }
            for s in run.segments
        ],
        "replies": run.replies,
        "limits": {p: [x.limit for x in v] for p, v in run.progress.items()},
        "errors": run.errors,
        **run.metrics,
    }


def results_json(results: Results) -> list[dict[str, Any]]:
    out = []
    for scn in results.order:
        for run in results.runs[scn.name].values():
            out.append(to_json(run))
        oracle = results.oracles.get(scn.name)
        if oracle is not None:
            out.append(
                {
                    "scenario": scn.name,
                    "config": ORACLE,
                    "n_star": oracle.n_star,
                    "best": oracle.best,
                    "stopped": oracle.stopped,
                    "points": {str(k): to_json(r) for k, r in sorted(oracle.points.items())},
                }
            )
    return out


# -- plots -------------------------------------------------------------------------------------


def _rates(ts: Sequence[float], counts: Sequence[float], span: float = 1.0) -> list[float]:
    """Moving rate over the last `span` seconds of a cumulative count."""
    out = []
    for i, t in enumerate(ts):
        j = bisect.bisect_left(ts, t - span)
        j = min(j, i)
        dt = t - ts[j]
        out.append((counts[i] - counts[j]) / dt if dt > 0 else 0.0)
    return out


def plot_runs(runs: list[Run], outdir: Path) -> list[Path]:
    """One PNG per run (per scenario): limit & in flight, throughput, server queue, errors."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no plots", file=sys.stderr)
        return []
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    for run in runs:
        if not run.samples:
            continue
        path = outdir / f"{run.scenario.name}.png"
        fig = _figure(plt, run)
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written


COLOURS = {"A": "tab:blue", "B": "tab:orange", "G": "tab:gray"}


def _figure(plt: Any, run: Run) -> Any:
    scn, m = run.scenario, run.metrics
    t0 = run.start
    samples = run.samples
    ts = [s.t - t0 for s in samples]
    clients = [*scn.ours, *(["G"] if scn.neighbour else [])]
    fig, axes = plt.subplots(4, 1, sharex=True, figsize=(10, 10), constrained_layout=True)
    ax_calls, ax_thr, ax_queue, ax_bad = axes
    fig.suptitle(
        f"{scn.label} - {run.config.label}: thr {fmt(m.get('ratio'))} of C/S, "
        f"mean queue {fmt(m.get('queue'))}, our 109s {m.get('n109')}{key_metric(run)}",
        fontsize=10,
    )
    for p in clients:
        colour = COLOURS.get(p, "tab:green")
        mine = p in scn.ours
        prog = run.progress.get(p, [])
        if mine and any(x.limit is not None for x in prog):
            pts = [(x.t - t0, x.limit) for x in prog if x.limit is not None]
            ax_calls.step(
                [a for a, _ in pts],
                [b for _, b in pts],
                where="post",
                color=colour,
                lw=1.8,
                label=f"limit {p}",
            )
        if mine and prog:
            ax_calls.plot(
                [x.t - t0 for x in prog],
                [x.in_flight for x in prog],
                "o",
                ms=3,
                color=colour,
                label=f"in flight {p} (target, 1 s)",
            )
        ax_calls.plot(
            ts,
            [s.flight.get(p, 0) for s in samples],
            lw=0.7,
            alpha=0.7,
            color=colour,
            ls="-" if mine else "--",
            label=f"{p} calls at the PBX (0.1 s)" + ("" if mine else ", neighbour"),
        )
        ax_thr.plot(
            ts,
            _rates(ts, [s.created.get(p, 0) for s in samples]),
            color=colour,
            lw=1.0,
            label=f"{p} leads/s" + ("" if mine else " (neighbour)"),
        )
    ax_calls.plot(ts, [s.slots for s in samples], "k:", lw=1.0, label="C (for lead calls)")
    if len(clients) > 1:
        totals = [sum(s.created.values()) for s in samples]
        ax_thr.plot(ts, _rates(ts, totals), color="tab:purple", lw=1.0, label="all leads/s")
    full = [s.slots / (s.service_ms / 1000.0) if s.service_ms else 0.0 for s in samples]
    ax_thr.plot(ts, full, "k--", lw=1.0, label="C/S")
    ax_queue.fill_between(
        ts, [s.queue for s in samples], step="post", alpha=0.4, color="tab:red", label="queue"
    )
    ax_queue.plot(
        ts, [s.in_service for s in samples], lw=0.7, color="tab:green", label="in service"
    )
    kinds: dict[str, list[float]] = {}
    for key in sorted({k for s in samples for p in scn.ours for k in s.replies.get(p, {})}):
        if key == "0":
            continue
        counts = [float(sum(s.replies.get(p, {}).get(key, 0) for p in scn.ours)) for s in samples]
        kinds[key] = _rates(ts, counts)
    for key, rates in kinds.items():
        ax_bad.plot(ts, rates, lw=1.0, label=f"ours {key}")
    if not kinds:
        ax_bad.text(0.5, 0.5, "none", transform=ax_bad.transAxes, ha="center", va="center")
    if run.outage is not None:
        ax_bad.text(
            0.5,
            0.9,
            "refused connections (the outage) reach no PBX: not counted here",
            transform=ax_bad.transAxes,
            ha="center",
            fontsize=8,
        )
    for ax in axes:
        if run.outage is not None:
            ax.axvspan(run.outage[0] - t0, run.outage[1] - t0, color="grey", alpha=0.15)
        for at, _ in run.marks:
            ax.axvline(at - t0, color="k", lw=0.6, ls="--")
        ax.axvline(0.0, color="k", lw=0.6, ls=":")
        ax.axvline(run.end - t0, color="k", lw=0.6, ls=":")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper left", ncols=2)
    for at, text in run.marks:
        ax_calls.annotate(
            text, (at - t0, 1.0), xycoords=("data", "axes fraction"), fontsize=7, va="bottom"
        )
    ax_calls.set_ylabel("calls")
    ax_thr.set_ylabel("leads/s (1 s)")
    ax_queue.set_ylabel("server queue")
    ax_bad.set_ylabel("non-OK replies/s")
    start = "the first lead call" if scn.kind == "job" else "the start of the measured window"
    ax_bad.set_xlabel(f"seconds from {start} (dotted: the window)")
    return fig


# -- main ------------------------------------------------------------------------------------


@dataclass
class Plan:
    scenario: Scenario
    configs: list[TargetConfig]
    oracle: bool


def make_plan(
    names: list[str],
    scenarios: dict[str, Scenario],
    configs: list[TargetConfig],
    with_oracle: bool,
    baselines: bool,
) -> list[Plan]:
    plan: list[Plan] = []
    planned: dict[str, Plan] = {}
    for name in names:
        scn = scenarios[name]
        cfgs = configs if scn.grid or baselines else [c for c in configs if c.key == "adaptive"]
        if not cfgs:
            print(f"{name}: adaptive only unless --baselines; skipped", file=sys.stderr)
            continue
        if scn.reference:
            ref = planned.get(scn.reference)
            missing = [c for c in cfgs if ref is None or c not in ref.configs]
            if ref is None:
                ref = Plan(scenarios[scn.reference], missing, False)
                plan.append(ref)
                planned[scn.reference] = ref
            else:
                ref.configs.extend(missing)
        entry = planned.get(name)
        if entry is not None:  # already planned as a reference: now with all it asks for
            entry.configs.extend(c for c in cfgs if c not in entry.configs)
            entry.oracle = with_oracle and scn.grid
            continue
        entry = Plan(scn, list(cfgs), with_oracle and scn.grid)
        plan.append(entry)
        planned[name] = entry
    return plan


def select(patterns: list[str], scenarios: dict[str, Scenario]) -> list[str]:
    names: list[str] = []
    for pattern in patterns:
        hits = [n for n in scenarios if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            raise SystemExit(f"no scenario matches {pattern!r} (see --list)")
        names.extend(n for n in hits if n not in names)
    return names


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--full", action="store_true", help="the whole grid, baselines everywhere")
    ap.add_argument(
        "--scenario", action="append", metavar="NAME", help="run only these (glob; see --list)"
    )
    ap.add_argument(
        "--configs",
        default=",".join(DEFAULT_CONFIGS),
        help="comma-separated: adaptive, fixed-N for any N, oracle (the sweep)",
    )
    ap.add_argument(
        "--baselines",
        action="store_true",
        help="fixed configs on the scenarios too, not only on"
        " the steady worlds (default with --full)",
    )
    ap.add_argument("--steady", type=float, help="adaptive window, s (default 6)")
    ap.add_argument("--fixed-window", type=float, help="fixed runs' window, s (default 2.5)")
    ap.add_argument("--json", type=Path, help="also write every run's numbers here")
    ap.add_argument(
        "--plots", type=Path, default=DEFAULT_PLOTS, help=f"PNG directory (default {DEFAULT_PLOTS})"
    )
    ap.add_argument("--no-plots", action="store_true", help="draw nothing")
    ap.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = ap.parse_args()

    timing = Timing()
    if args.steady:
        timing = replace(timing, adaptive_window_s=args.steady)
    if args.fixed_window:
        timing = replace(timing, fixed_window_s=args.fixed_window)
    scenarios = catalog(timing)
    if args.list:
        for name, scn in scenarios.items():
            mark = "*" if name in DEFAULT else " "
            print(f"{mark} {name:24} {scn.label}")
        print("(* = the default subset)")
        return 0

    keys = [k.strip() for k in args.configs.split(",") if k.strip()]
    configs: list[TargetConfig] = []
    for k in keys:
        if k == "adaptive":
            configs.append(ADAPTIVE)
        elif k.startswith("fixed-") and k[6:].isdigit() and int(k[6:]) >= 1:
            configs.append(fixed(int(k[6:])))
        elif k != ORACLE:
            ap.error(f"unknown config {k!r}")
    with_oracle = ORACLE in keys
    if args.scenario:
        names = select(args.scenario, scenarios)
    elif args.full:
        names = list(scenarios)
    else:
        names = DEFAULT
    plan = make_plan(names, scenarios, configs, with_oracle, args.baselines or args.full)

    atexit.register(_kill_children)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)

    print(preamble(args, timing), file=sys.stderr, flush=True)
    results = Results()
    started = time.time()
    interrupted = False
    try:
        with tempfile.TemporaryDirectory(prefix="noojee-pacing-") as tmp:
            counter = iter(range(1_000_000))

            def measure(scn: Scenario, cfg: TargetConfig) -> Run:
                workdir = Path(tmp) / f"{next(counter):04d}-{scn.name}-{cfg.key}"
                workdir.mkdir()
                try:
                    run = run_one(scn, cfg, timing, workdir)
                except RuntimeError as exc:
                    run = failed_run(scn, cfg, str(exc))
                print(
                    f"{time.time() - started:5.0f}s {summary_line(run)}",
                    file=sys.stderr,
                    flush=True,
                )
                for error in run.errors:
                    print(error, file=sys.stderr, flush=True)
                return run

            for entry in plan:
                scn = entry.scenario
                for cfg in entry.configs:
                    results.add(measure(scn, cfg))
                if entry.oracle:

                    def point(n: int, scn: Scenario = scn) -> Run:
                        return measure(scn, fixed(n))

                    results.oracles[scn.name] = sweep(scn, results.runs.get(scn.name, {}), point)
                if scn.kind == "errors" and scn.reference:
                    for key, run in results.runs.get(scn.name, {}).items():
                        ref = results.get(scn.reference, key)
                        if ref and ref.ok and run.ok and ref.metrics["ratio"] > 0:
                            run.metrics["vs_clean"] = run.metrics["ratio"] / ref.metrics["ratio"]
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: the runs finished so far:", file=sys.stderr)
    finally:
        _kill_children()

    elapsed = time.time() - started
    columns = [c for c in configs if any(c.key in v for v in results.runs.values())]
    print(preamble(args, timing))
    print()
    print(table(results, columns, with_oracle))
    print()
    lines = goals(results)
    for line in lines:
        print(line)
    passed = sum(1 for line in lines if line.startswith("PASS"))
    print(f"\n{passed} of {len(lines)} goals PASS; {results.count()} runs in {elapsed:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results_json(results), indent=1), encoding="utf-8")
    if not args.no_plots and results.order:
        chosen = []
        for scn in results.order:
            by_cfg = results.runs[scn.name]
            chosen.append(by_cfg.get("adaptive") or next(iter(by_cfg.values())))
        written = plot_runs(chosen, args.plots)
        if written:
            print(f"{len(written)} plots in {args.plots}", file=sys.stderr)
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
