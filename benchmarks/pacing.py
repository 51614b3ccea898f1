"""Pacing against noojee-sim: the adaptive limiter side by side with fixed concurrencies.

Each run starts a fresh in-process `Simulator` (C slots, S ms a call, 60 s queue timeout: the
real PBX's) and the real target as a subprocess (`python -m target_noojee --config FILE`,
operation `insert`), fed by a writer thread as fast as the pipe accepts: the target's bounded
window pushes back, so every run is closed-loop at the most the target will send. Configs: the
adaptive default, one call at a time (`concurrency: 1`), `concurrency: 4`, `concurrency: 32`.

Scenarios (S = 100 ms unless said): C in {1, 2, 4, 8, 16}; C changing 8 -> 3 -> 12 at thirds
of the run; S growing with the lead count (about 100 -> 300 ms over the run, at C = 8); a 30 s
outage (connections refused) in the middle of a 50 s run; two targets sharing C = 8 for 40 s
(the second starts once the first is warm; each one's share of C/S). Extras, only with --scenario:
`s-growth-slow` (S about 100 -> 130 ms) and `s-step` (S 100 -> 200 ms at a third of the run).

Metrics, over the steady state (from 3 s after the first lead the PBX created, so neither the
process start-up nor the ramp-up counts; the simulator's statistics are reset at that moment):

- thr/(C/S): leads created per second over the best possible C/S, with the C and S in force
  when each lead was created (so a C change or a growing S is weighted by time);
- mean queue: the simulator's time-weighted mean server queue (calls waiting for a slot);
- 109s: lead calls answered 109 over the whole run, warm-up included;
- p99 latency: from the moment the pipe accepted a record to the lead's `created` time on the
  PBX, for leads created in the steady state. The pipe is shrunk to one page (4 KiB, about 35
  records) so this is mostly the target's own window (256 records) over the throughput;
- recover (outage): from the moment the PBX answers again to the end of the first 1 s window
  holding >= 90% of C/S leads (so a client back at full speed at once scores about 1.1 s);
  (C change, S step): the same from each change, with the new C/S; the column shows the
  slowest change, the notes each one.

    .venv/bin/python benchmarks/pacing.py                   # every scenario, about 17 min
    .venv/bin/python benchmarks/pacing.py --quick           # C in {2, 8} and more, 8 s each
    .venv/bin/python benchmarks/pacing.py --scenario c8 --scenario outage
    .venv/bin/python benchmarks/pacing.py --configs adaptive,fixed-4 --json out.json
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import fcntl
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from target_noojee.simulator import Simulator

API_KEY = "bench-pacing-key"
CAMPAIGN = 41
WARMUP_S = 3.0  # after a target's first lead: excluded from the steady state
OVERLOAD_PAUSE_S = 5.0  # the real manual-import pause is 120 s; here 109s come from the queue
QUEUE_TIMEOUT_S = 60.0  # the real PBX's
PIPE_BYTES = 4096
RECOVERY_WINDOW_S = 1.0
RECOVERY_FRACTION = 0.9
RECOVERY_ALLOWANCE_S = 5.0  # the goal; the outage row's throughput excludes it too
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
LIMIT_RE = re.compile(r"progress: .* limit=(\d+)")

# Goals (issue 4), checked on the adaptive rows.
GOAL_THROUGHPUT = 0.95
GOAL_QUEUE = 0.5
GOAL_RECOVER_S = 5.0
GOAL_SHARE = 0.40


# -- configurations and scenarios -----------------------------------------------------------


@dataclass(frozen=True)
class TargetConfig:
    key: str
    label: str
    settings: dict[str, Any]


CONFIGS = [
    TargetConfig("adaptive", "adaptive (default)", {}),
    TargetConfig("fixed-1", "one at a time", {"concurrency": 1}),
    TargetConfig("fixed-4", "fixed 4", {"concurrency": 4}),
    TargetConfig("fixed-32", "fixed 32", {"concurrency": 32}),
]


@dataclass
class Scenario:
    name: str
    label: str
    slots: int
    steady_s: float
    service_ms: float = 100.0
    growth: float = 0.0  # service_growth_ms_per_1000
    events: list[tuple[float, str, Any]] = field(default_factory=list)  # (offset s, what, value)
    targets: int = 1
    kind: str = "steady"  # steady | change | growth | step | outage | share


def growth_per_1000(slots: int, service_ms: float, run_s: float, end_ms: float) -> float:
    """service_growth_ms_per_1000 taking S from `service_ms` to about `end_ms` over a run at C/S.

    With S rising linearly in the lead count from S0 to S1, N leads take N * (S0 + S1) / 2 / C
    seconds at full speed.
    """
    n = slots * run_s / ((service_ms + end_ms) / 2000.0)
    return (end_ms - service_ms) * 1000.0 / n


def scenarios(quick: bool, steady: float | None) -> dict[str, Scenario]:
    """Every scenario, full length or --quick."""
    base = steady or (8.0 if quick else 15.0)
    change = steady or (12.0 if quick else 30.0)
    out: dict[str, Scenario] = {}
    for c in (1, 2, 4, 8, 16):
        out[f"c{c}"] = Scenario(f"c{c}", f"C={c}", c, base)
    third = change / 3
    out["c-change"] = Scenario(
        "c-change",
        "C 8->3->12",
        8,
        change,
        events=[(third, "slots", 3), (2 * third, "slots", 12)],
        kind="change",
    )
    growth = growth_per_1000(8, 100.0, WARMUP_S + base + 1.0, 300.0)
    out["s-growth"] = Scenario(
        "s-growth", "S 100->~300ms C=8", 8, base, growth=growth, kind="growth"
    )
    out["outage"] = Scenario(
        "outage",
        "30s outage C=8",
        8,
        50.0,
        events=[(10.0, "outage", "refuse"), (40.0, "outage", None)],
        kind="outage",
    )
    # Two targets split the PBX by small steps (one call from one to the other now and then):
    # a split is a mean over time, and 15 s holds only a few such steps.
    share = steady or (12.0 if quick else 40.0)
    out["share"] = Scenario("share", "2 targets C=8", 8, share, targets=2, kind="share")
    # Extras (not in the default list): a gentler growth, and a step in S.
    slow = growth_per_1000(8, 100.0, WARMUP_S + base + 1.0, 130.0)
    out["s-growth-slow"] = Scenario(
        "s-growth-slow", "S 100->~130ms C=8", 8, base, growth=slow, kind="growth"
    )
    out["s-step"] = Scenario(
        "s-step",
        "S 100->200ms step C=8",
        8,
        base,
        events=[(base / 3, "service_ms", 200.0)],
        kind="step",
    )
    return out


QUICK = ["c2", "c8", "c-change", "s-growth", "share"]
FULL = ["c1", "c2", "c4", "c8", "c16", "c-change", "s-growth", "outage", "share"]
EXTRA = ["s-growth-slow", "s-step"]


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


class Feed:
    """One target process and the writer thread feeding it unique leads as fast as it reads."""

    def __init__(
        self, prefix: str, phone_base: int, url: str, settings: dict[str, Any], workdir: Path
    ) -> None:
        self.prefix = prefix
        self.phone_base = phone_base
        self.written: dict[str, float] = {}  # external id -> when the pipe accepted it
        self.first_write = 0.0
        self.log: list[tuple[float, str]] = []  # (arrival time, stderr line)
        self.exited_early: int | None = None
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
            "progress_interval_s": 1,
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
            while not self._stop.is_set():
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
        except OSError:
            pass  # the target exited (BrokenPipeError)

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.log.append((time.time(), raw.decode("utf-8", "replace").rstrip()))

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """Kill the target (its clean shutdown is not what is measured) and join the threads."""
        self._stop.set()
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is not None:
            if self.exited_early is None:
                self.exited_early = proc.returncode
        else:
            with contextlib.suppress(OSError):
                proc.kill()
            proc.wait()
        _CHILDREN.discard(proc)
        for thread in self._threads:
            thread.join(timeout=5)
        with contextlib.suppress(OSError):
            assert proc.stdin is not None
            proc.stdin.close()

    def limits(self, start: float, end: float) -> list[int]:
        """The limit from each progress line logged in [start, end]."""
        out = []
        for at, line in self.log:
            m = LIMIT_RE.search(line)
            if m and start <= at <= end:
                out.append(int(m.group(1)))
        return out

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
    warmup_codes: dict[int, int] = field(default_factory=dict)
    slot_changes: list[tuple[float, int]] = field(default_factory=list)
    service_changes: list[tuple[float, float]] = field(default_factory=list)
    outage: tuple[float, float] | None = None  # (PBX gone, PBX answers again)
    leads: list[tuple[float, str]] = field(default_factory=list)  # (created, external id)
    written: dict[str, float] = field(default_factory=dict)
    first_write: float = 0.0  # when the last target to start got its first record
    limits: dict[str, list[int]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)


def sleep_until(t: float) -> None:
    while True:
        left = t - time.time()
        if left <= 0:
            return
        time.sleep(min(left, 0.5))


def wait_first_lead(sim: Simulator, feed: Feed, timeout: float = 60.0) -> float:
    """When the PBX created the first lead of this feed."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        created = [
            lead["created"]
            for lead in sim.leads(CAMPAIGN)
            if lead["external_id"].startswith(feed.prefix)
        ]
        if created:
            return min(created)
        if not feed.alive():
            break
        time.sleep(0.05)
    raise RuntimeError(f"target {feed.prefix} delivered nothing; its stderr:\n{feed.tail()}")


def run_one(scn: Scenario, cfg: TargetConfig, workdir: Path) -> Run:
    """One scenario with one config: start, warm up, measure, stop, collect."""
    run = Run(scn, cfg)
    sim = Simulator(
        api_key=API_KEY,
        slots=scn.slots,
        service_ms=scn.service_ms,
        queue_timeout_s=QUEUE_TIMEOUT_S,
        service_growth_ms_per_1000=scn.growth,
    ).start()
    feeds: list[Feed] = []
    try:
        warm_end = 0.0
        for n in range(scn.targets):
            if n:
                sleep_until(warm_end)  # the next target joins a PBX the first one fills
            feed = Feed("AB"[n], 50_000_000 * n, sim.url, cfg.settings, workdir)
            feeds.append(feed)
            feed.start()
            warm_end = wait_first_lead(sim, feed) + WARMUP_S
        sleep_until(warm_end)
        run.warmup_codes = sim.code_counts
        sim.reset_stats()
        run.start = seg_start = time.time()
        run.slot_changes.append((run.start, scn.slots))
        run.service_changes.append((run.start, scn.service_ms))
        label = {"change": f"C={scn.slots}", "step": f"S={scn.service_ms:g}ms"}.get(
            scn.kind, "steady"
        )
        outage_start = 0.0
        for offset, what, value in [*scn.events, (scn.steady_s, "end", None)]:
            sleep_until(run.start + offset)
            now = time.time()
            run.segments.append(
                Segment(seg_start, now, label, sim.mean_queue_length(), sim.code_counts, 0)
            )
            run.segments[-1].peak = sim.peak_in_service
            sim.reset_stats()
            if what == "slots":
                sim.set_slots(value)
                run.slot_changes.append((time.time(), value))
                label = f"C={value}"
            elif what == "service_ms":
                sim.set_service_ms(value)
                run.service_changes.append((time.time(), value))
                label = f"S={value:g}ms"
            elif what == "outage":
                sim.set_outage(value)
                if value is not None:
                    outage_start, label = time.time(), "outage"
                else:
                    run.outage, label = (outage_start, time.time()), "after"
            seg_start = time.time()
        run.end = run.segments[-1].end
        for feed in feeds:
            if not feed.alive():
                feed.exited_early = feed.proc.returncode if feed.proc else None
                run.errors.append(
                    f"target {feed.prefix} exited early ({feed.exited_early}):\n{feed.tail()}"
                )
    finally:
        for feed in feeds:
            feed.stop()
        run.leads = sorted((lead["created"], lead["external_id"]) for lead in sim.leads(CAMPAIGN))
        sim.stop()
    for feed in feeds:
        run.written.update(feed.written)
        run.first_write = max(run.first_write, feed.first_write)
        run.limits[feed.prefix] = feed.limits(run.start, run.end)
    compute_metrics(run)
    return run


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
    scn = run.scenario
    out = []
    for i, (created, ext) in enumerate(run.leads):
        service_ms = in_force(run.service_changes, created) if run.service_changes else 0.0
        service_s = (service_ms + scn.growth * i / 1000.0) / 1000.0
        out.append((created, ext, service_s / in_force(run.slot_changes, created)))
    return out


def ratio(
    costs: list[tuple[float, str, float]],
    spans: list[tuple[float, float]],
    prefix: str = "",
) -> float | None:
    """Throughput / (C/S) over some spans of time: capacity used at best / time elapsed."""
    elapsed = sum(b - a for a, b in spans if b > a)
    if elapsed <= 0:
        return None
    used = sum(
        cost
        for created, ext, cost in costs
        if ext.startswith(prefix) and any(a <= created < b for a, b in spans)
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
    return in_force(run.slot_changes, t) / (in_force(run.service_changes, t) / 1000.0)


def weighted_queue(segments: list[Segment]) -> float:
    total = sum(s.end - s.start for s in segments)
    if total <= 0:
        return 0.0
    return sum(s.mean_queue * (s.end - s.start) for s in segments) / total


def compute_metrics(run: Run) -> None:
    scn, m = run.scenario, run.metrics
    costs = ideal_costs(run)
    times = [created for created, _ in run.leads]
    spans = [(run.start, run.end)]
    queue_segments = run.segments
    if run.outage is not None:
        gone, back = run.outage
        spans = [(run.start, gone), (back + RECOVERY_ALLOWANCE_S, run.end)]
        queue_segments = [s for s in run.segments if s.label != "outage"]
    m["ratio"] = ratio(costs, spans)
    m["queue"] = weighted_queue(queue_segments)
    codes: Counter[int] = Counter(run.warmup_codes)
    for seg in run.segments:
        codes.update(seg.codes)
    m["codes"] = dict(sorted(codes.items()))
    m["n109"] = codes.get(109, 0)
    m["peak"] = max((s.peak for s in run.segments), default=0)
    latencies = [
        created - run.written[ext]
        for created, ext in run.leads
        if run.start <= created < run.end and ext in run.written
    ]
    m["p99"] = p99(latencies)
    # Closed loop: a record waits behind the target's window and the pipe, about
    # (256 + 35) / throughput; a run shorter than that bounds the latency instead.
    m["p99_bounded"] = m["p99"] is not None and m["p99"] >= 0.9 * (run.end - run.first_write)
    m["leads"] = sum(1 for created, _ in run.leads if run.start <= created < run.end)
    notes: list[str] = []
    if scn.kind in ("change", "step"):
        parts = [
            f"{s.label}: {ratio(costs, [(s.start, s.end)]) or 0:.2f} q {s.mean_queue:.2f}"
            for s in run.segments
        ]
        recovers = [
            recovery(times, s.start, full_rate(run, s.start)) if i else None
            for i, s in enumerate(run.segments)
        ]
        m["phases"] = [
            {
                "label": s.label,
                "ratio": ratio(costs, [(s.start, s.end)]),
                "queue": s.mean_queue,
                "n109": s.codes.get(109, 0),
                "recover": rec,
            }
            for s, rec in zip(run.segments, recovers, strict=True)
        ]
        m["recover"] = max((r if r is not None else math.inf for r in recovers[1:]), default=None)
        parts = [
            part + ("" if i == 0 else f" (90% in {fmt(rec, 1, 'never')} s)")
            for i, (part, rec) in enumerate(zip(parts, recovers, strict=True))
        ]
        notes.append("; ".join(parts))
    if scn.kind == "growth":
        n_end = sum(1 for created, _ in run.leads if created < run.end)
        s_end = scn.service_ms + scn.growth * n_end / 1000.0
        m["s_end_ms"] = s_end
        notes.append(f"S reached {s_end:.0f} ms ({scn.growth:.0f} ms/1000 leads)")
    if scn.kind == "share":
        shares = {p: ratio(costs, spans, p) or 0.0 for p in "AB"}
        m["shares"] = shares
        notes.append(f"shares A {shares['A']:.2f} B {shares['B']:.2f}")
    if run.outage is not None:
        gone, back = run.outage
        full = full_rate(run, back)
        m["recover"] = recovery(times, back, full)
        own = ratio(costs, [(run.start, gone)]) or 0.0
        m["recover_own"] = recovery(times, back, own * full) if own > 0 else None
        m["ratio_after"] = ratio(costs, [(back + RECOVERY_ALLOWANCE_S, run.end)])
        own_txt = "never" if m["recover_own"] is None else f"{m['recover_own']:.1f}s"
        notes.append(
            f"to 90% of own pre-outage rate {own_txt}; "
            f"thr before {ratio(costs, [(run.start, gone)]) or 0:.2f} "
            f"after {m['ratio_after'] or 0:.2f}"
        )
    if run.config.key == "adaptive":
        lim = {
            p: f"{min(v)}-{max(v)} med {statistics.median(v):g}" for p, v in run.limits.items() if v
        }
        if len(lim) == 1:
            notes.append("limit " + next(iter(lim.values())))
        elif lim:
            notes.append("limits " + ", ".join(f"{p} {v}" for p, v in lim.items()))
    m["peak_note"] = f"peak in service {m['peak']}"
    others = {k: v for k, v in codes.items() if k not in (0, 109)}
    if others:
        notes.append("codes " + " ".join(f"{k}x{v}" for k, v in others.items()))
    if run.errors:
        notes.append("TARGET EXITED EARLY")
    m["notes"] = "; ".join(notes)


def failed_run(scn: Scenario, cfg: TargetConfig, error: str) -> Run:
    """A row for a run that could not be measured."""
    run = Run(scn, cfg, errors=[error])
    run.metrics = {
        "ratio": None,
        "queue": None,
        "n109": "-",
        "p99": None,
        "leads": 0,
        "peak_note": "",
        "notes": "FAILED: " + error.splitlines()[0],
    }
    return run


# -- report ----------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 2, none: str = "-") -> str:
    return none if value is None else f"{value:.{digits}f}"


def table(runs: list[Run]) -> str:
    header = ["scenario", "config", "thr/(C/S)", "mean queue", "109s", "p99 lat s", "recover s"]
    header.append("notes")
    rows = []
    for run in runs:
        m = run.metrics
        recover = "-"
        if "recover" in m:
            recover = fmt(None if m["recover"] == math.inf else m["recover"], 1, "never")
        config = run.config.label + (" x2" if run.scenario.targets > 1 else "")
        rows.append(
            [
                run.scenario.label,
                config,
                fmt(m["ratio"]),
                fmt(m["queue"]),
                str(m["n109"]),
                fmt(m["p99"], 1) + ("*" if m.get("p99_bounded") else ""),
                recover,
                m["notes"],
            ]
        )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    out = [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out.extend(line(r) for r in rows)
    return "\n".join(out)


def goal(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def goals(runs: list[Run]) -> list[str]:
    out = []
    for run in runs:
        if run.config.key != "adaptive":
            continue
        m = run.metrics
        if m["queue"] is None:
            out.append(f"Goals {run.scenario.label}: FAIL (not measured)")
            continue
        r, q, n109 = m["ratio"] or 0.0, m["queue"], m["n109"]
        if run.scenario.kind in ("change", "growth", "step"):
            # The issue asks >= 0.95 of C/S of steady state; these rows measure the ramps.
            thr = f"thr {r:.2f} (ramps, not steady state: no goal)"
        else:
            thr = f"thr {r:.2f} >= {GOAL_THROUGHPUT} {goal(r >= GOAL_THROUGHPUT)}"
        parts = [
            thr,
            f"queue {q:.2f} <= {GOAL_QUEUE} {goal(q <= GOAL_QUEUE)}",
            f"109s {n109} == 0 {goal(n109 == 0)}",
        ]
        if run.outage is not None:
            rec = m.get("recover")
            ok = rec is not None and rec <= GOAL_RECOVER_S
            parts.append(f"recover {fmt(rec, 1, 'never')} s <= {GOAL_RECOVER_S:g} {goal(ok)}")
        if "shares" in m:
            low = min(m["shares"].values())
            parts.append(f"min share {low:.2f} >= {GOAL_SHARE} {goal(low >= GOAL_SHARE)}")
        out.append(f"Goals {run.scenario.label}: " + "; ".join(parts))
    return out


def preamble(quick: bool) -> str:
    return "\n".join(
        [
            f"pacing benchmark{' (--quick)' if quick else ''}: target-noojee against noojee-sim "
            f"on 127.0.0.1, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}",
            f"S = 100 ms unless said; sim queue_timeout_s = {QUEUE_TIMEOUT_S:g} (the real PBX's); "
            f"target overload_pause_s = {OVERLOAD_PAUSE_S:g} (real manual-import pause: 120 s; "
            "the 109s here can only come from the server queue); max_concurrency 32, window 256.",
            f"steady state from {WARMUP_S:g} s after a target's first lead; outage row: thr "
            f"excludes the outage and the {RECOVERY_ALLOWANCE_S:g} s after it, queue excludes the "
            "outage; share: the 2nd target starts when the 1st is warm, the window starts when "
            "the 2nd is warm; p99 latency = pipe accepted the record -> PBX created the lead "
            f"(pipe {PIPE_BYTES} B, so mostly the target's window / throughput; * = the run "
            "was shorter than that, the run's length bounds it). Codes 112/107 in the outage "
            "rows: retried inserts whose reply the outage cut, resolved as delivered.",
        ]
    )


def summary_line(run: Run) -> str:
    m = run.metrics
    return (
        f"[{run.scenario.name} / {run.config.key}] thr {fmt(m['ratio'])} "
        f"queue {fmt(m['queue'])} 109s {m['n109']} p99 {fmt(m['p99'], 1)}s "
        f"leads {m['leads']} {m['peak_note']}; {m['notes']}"
    )


def to_json(run: Run) -> dict[str, Any]:
    m = {k: v for k, v in run.metrics.items() if k != "peak_note"}
    return {
        "scenario": run.scenario.name,
        "config": run.config.key,
        "steady_s": run.end - run.start,
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
        "limits": run.limits,
        "errors": run.errors,
        **m,
    }


def main() -> int:
    all_names = FULL
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="C in {2, 8} etc., 8 s, no outage")
    ap.add_argument("--scenario", action="append", choices=all_names + EXTRA, help="run only these")
    ap.add_argument(
        "--configs",
        default=",".join(c.key for c in CONFIGS),
        help="comma-separated: " + ", ".join(c.key for c in CONFIGS),
    )
    ap.add_argument("--steady", type=float, help="steady-state seconds (not for the outage)")
    ap.add_argument("--json", type=Path, help="also write every run's numbers here")
    args = ap.parse_args()

    keys = [k.strip() for k in args.configs.split(",") if k.strip()]
    by_key = {c.key: c for c in CONFIGS}
    unknown = [k for k in keys if k not in by_key]
    if unknown:
        ap.error(f"unknown configs {unknown}")
    configs = [by_key[k] for k in keys]
    catalog = scenarios(args.quick, args.steady)
    names = args.scenario or (QUICK if args.quick else FULL)

    atexit.register(_kill_children)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)

    print(preamble(args.quick), file=sys.stderr, flush=True)
    runs: list[Run] = []
    started = time.time()
    interrupted = False
    try:
        with tempfile.TemporaryDirectory(prefix="noojee-pacing-") as tmp:
            for name in names:
                for cfg in configs:
                    workdir = Path(tmp) / f"{name}-{cfg.key}"
                    workdir.mkdir()
                    try:
                        run = run_one(catalog[name], cfg, workdir)
                    except RuntimeError as exc:
                        run = failed_run(catalog[name], cfg, str(exc))
                    runs.append(run)
                    print(summary_line(run), file=sys.stderr, flush=True)
                    for error in run.errors:
                        print(error, file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: the runs finished so far:", file=sys.stderr)
    finally:
        _kill_children()

    print(preamble(args.quick))
    print()
    print(table(runs))
    print()
    for line in goals(runs):
        print(line)
    print(f"\n{len(runs)} runs in {time.time() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps([to_json(r) for r in runs], indent=1), encoding="utf-8")
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
