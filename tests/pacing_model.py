"""A discrete-event queueing model of the PBX and of target clients, in virtual time.

The server has C slots (may change over time), a service time S(t) with uniform jitter, a FIFO
queue whose calls fail with 109 (OVERLOAD) after `queue_timeout` seconds, and outages that fail
every call with CONNECT_FAILED. Each client is a closed loop of `workers` callers gated by a
`LimiterCore`, with an endless backlog of leads. Nothing sleeps: a 100 s run takes well under a
second of real time.

``python tests/pacing_model.py`` prints the scenario table (adaptive vs fixed 1, 4 and 32).
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from target_noojee.pacing import Breaker, FixedPolicy, GradientPolicy, LimiterCore, Permit, Signal


class Sim:
    """A virtual clock and an event heap."""

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = itertools.count()

    def at(self, t: float, fn: Callable[..., None], *args: Any) -> None:
        """Run fn(*args) at virtual time t."""
        heapq.heappush(self._heap, (max(t, self.now), next(self._seq), fn, args))

    def run(self, until: float) -> None:
        """Process events up to `until`."""
        while self._heap and self._heap[0][0] <= until:
            t, _, fn, args = heapq.heappop(self._heap)
            self.now = t
            fn(*args)
        self.now = until


@dataclass(eq=False)
class Call:
    client: Client
    permit: Permit
    state: str = "new"  # new / queued / serving / done


@dataclass
class Server:
    """C slots, FIFO queue, service time `service(t) * U(1 - jitter, 1 + jitter)`."""

    sim: Sim
    slots: int
    service: Callable[[float], float] = lambda t: 0.1
    jitter: float = 0.2
    queue_timeout: float = 60.0
    latency: float = 0.0005  # one way
    seed: int = 1
    busy: int = 0
    down: bool = False
    importing: bool = False
    _queue: list[Call] = field(default_factory=list)
    _serving: set[Call] = field(default_factory=set)
    _qlog_t: list[float] = field(default_factory=lambda: [0.0])
    _qlog_area: list[float] = field(default_factory=lambda: [0.0])
    _qlog_len: list[int] = field(default_factory=lambda: [0])
    _slot_log: list[tuple[float, int]] = field(default_factory=list)
    _gen: int = 0
    served: int = 0
    counts: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._slot_log.append((0.0, self.slots))

    # -- schedule changes -----------------------------------------------------------------------

    def set_slots_at(self, t: float, slots: int) -> None:
        self.sim.at(t, self._set_slots, slots)

    def outage(self, start: float, end: float) -> None:
        self.sim.at(start, self._down)
        self.sim.at(end, self._up)

    def manual_import(self, start: float, end: float) -> None:
        """Lead calls fail at once with 109 between start and end, as during a PBX import."""
        self.sim.at(start, setattr, self, "importing", True)
        self.sim.at(end, setattr, self, "importing", False)

    def slots_at(self, t: float) -> int:
        i = bisect.bisect_right([s[0] for s in self._slot_log], t) - 1
        return self._slot_log[max(0, i)][1]

    # -- the queue ------------------------------------------------------------------------------

    def _log_queue(self) -> None:
        t = self.sim.now
        area = self._qlog_area[-1] + self._qlog_len[-1] * (t - self._qlog_t[-1])
        self._qlog_t.append(t)
        self._qlog_area.append(area)
        self._qlog_len.append(len(self._queue))

    def _area(self, t: float) -> float:
        i = bisect.bisect_right(self._qlog_t, t) - 1
        return self._qlog_area[i] + self._qlog_len[i] * (t - self._qlog_t[i])

    def mean_queue(self, t0: float, t1: float) -> float:
        """Time-weighted mean number of queued calls over [t0, t1]."""
        return (self._area(t1) - self._area(t0)) / (t1 - t0)

    def arrive(self, call: Call) -> None:
        if self.down:
            self._reply(call, Signal.CONNECT_FAILED)
        elif self.importing:
            self._reply(call, Signal.OVERLOAD)
        elif self.busy < self.slots and not self._queue:
            self._start(call)
        else:
            call.state = "queued"
            self._queue.append(call)
            self._log_queue()
            self.sim.at(self.sim.now + self.queue_timeout, self._expire, call, self._gen)

    def _start(self, call: Call) -> None:
        self.busy += 1
        call.state = "serving"
        self._serving.add(call)
        s = self.service(self.sim.now) * self._rng.uniform(1 - self.jitter, 1 + self.jitter)
        self.sim.at(self.sim.now + s, self._finish, call, self._gen)

    def _finish(self, call: Call, gen: int) -> None:
        if gen != self._gen or call.state != "serving":
            return
        self.busy -= 1
        self._serving.discard(call)
        self.served += 1
        self._reply(call, Signal.OK)
        self._drain()

    def _drain(self) -> None:
        changed = False
        while self._queue and self.busy < self.slots:
            self._start(self._queue.pop(0))
            changed = True
        if changed:
            self._log_queue()

    def _expire(self, call: Call, gen: int) -> None:
        if gen != self._gen or call.state != "queued":
            return
        self._queue.remove(call)
        self._log_queue()
        self._reply(call, Signal.OVERLOAD)

    def _set_slots(self, slots: int) -> None:
        self.slots = slots
        self._slot_log.append((self.sim.now, slots))
        self._drain()

    def _down(self) -> None:
        self.down = True
        self._gen += 1
        for call in [*self._serving, *self._queue]:
            self._reply(call, Signal.CONNECT_FAILED)
        self._serving.clear()
        self._queue.clear()
        self.busy = 0
        self._log_queue()

    def _up(self) -> None:
        self.down = False

    def _reply(self, call: Call, signal: Signal) -> None:
        call.state = "done"
        self.counts[signal.value] += 1
        self.sim.at(self.sim.now + self.latency, call.client.on_reply, call, signal)


@dataclass(eq=False)
class Client:
    """`workers` closed-loop callers with an endless backlog, gated by `core`."""

    sim: Sim
    server: Server
    core: LimiterCore
    workers: int = 40
    think: float = 0.0002  # the target's own work between calls
    overload_pause: float = 1.0  # a worker's pause after a 109, as delivery's retry would
    ok_times: list[float] = field(default_factory=list)
    limit_log: list[tuple[float, int]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    _idle: int = 0
    _timer_at: float | None = None

    def start(self, t: float = 0.0) -> None:
        self._log_limit()
        for _ in range(self.workers):
            self.sim.at(t, self._try)

    def _log_limit(self) -> None:
        limit = self.core.limit
        if not self.limit_log or self.limit_log[-1][1] != limit:
            self.limit_log.append((self.sim.now, limit))

    def _try(self) -> None:
        got = self.core.try_acquire(self.sim.now)
        if isinstance(got, Permit):
            call = Call(self, got)
            self.sim.at(self.sim.now + self.server.latency, self.server.arrive, call)
            return
        self._idle += 1
        if got is not None and (self._timer_at is None or got < self._timer_at):
            self._timer_at = got
            self.sim.at(got, self._on_timer, got)

    def _on_timer(self, t: float) -> None:
        if self._timer_at == t:
            self._timer_at = None
        self._wake()

    def _wake(self) -> None:
        idle, self._idle = self._idle, 0
        for _ in range(idle):
            self._try()

    def on_reply(self, call: Call, signal: Signal) -> None:
        now = self.sim.now
        self.core.release(now, call.permit, now - call.permit.sent_at, signal)
        self.counts[signal.value] += 1
        if signal is Signal.OK:
            self.ok_times.append(now)
        self._log_limit()
        pause = self.overload_pause if signal is Signal.OVERLOAD else self.think
        self.sim.at(now + pause, self._back)
        self.sim.at(now, self._wake)  # the freed slot goes to a waiting worker

    def _back(self) -> None:
        self._idle += 1
        self._wake()

    def done_between(self, t0: float, t1: float) -> int:
        return bisect.bisect_right(self.ok_times, t1) - bisect.bisect_right(self.ok_times, t0)

    def mean_limit(self, t0: float, t1: float) -> float:
        area, log = 0.0, [*self.limit_log, (t1, 0)]
        for (ta, la), (tb, _) in itertools.pairwise(log):
            a, b = max(ta, t0), min(tb, t1)
            if b > a:
                area += la * (b - a)
        return area / (t1 - t0)


def ideal_done(server: Server, t0: float, t1: float, step: float = 0.01) -> float:
    """Calls the server could complete in [t0, t1] at full use: the integral of C(t) / S(t)."""
    total, t = 0.0, t0
    while t < t1:
        dt = min(step, t1 - t)
        mid = t + dt / 2
        total += server.slots_at(mid) / server.service(mid) * dt
        t += dt
    return total


def recovery_time(
    clients: list[Client],
    server: Server,
    t_end: float,
    share: float = 0.9,
    span: float = 1.0,
    *,
    after_span: bool = False,
) -> float:
    """Seconds after t_end until the clients' completions over the trailing `span` seconds first
    reach `share` of C/S (with `after_span`, only windows wholly after t_end count)."""
    t = t_end + span if after_span else t_end
    while t < t_end + 60:
        t += 0.05
        done = sum(c.done_between(t - span, t) for c in clients)
        if done >= share * ideal_done(server, t - span, t):
            return t - t_end
    return math.inf


# -- limiters -----------------------------------------------------------------------------------

CoreFactory = Callable[[int], LimiterCore]


def adaptive_core(seed: int = 1, **kw: Any) -> LimiterCore:
    """A LimiterCore with the adaptive policy (seeded); breaker knobs go to the breaker."""
    rng = random.Random(seed)
    breaker_kw = {k: kw.pop(k) for k in ("failures_to_open", "base_wait", "max_wait") if k in kw}
    return LimiterCore(GradientPolicy(rng=rng, **kw), Breaker(rng=rng, **breaker_kw))


def fixed_core(limit: int) -> CoreFactory:
    """A factory of LimiterCores pinned at `limit`."""
    return lambda seed: LimiterCore(FixedPolicy(limit), Breaker(rng=random.Random(seed)))


# -- scenarios ----------------------------------------------------------------------------------


@dataclass
class Result:
    """What a scenario measured (over its steady part)."""

    throughput: float  # completions / (integral of C/S)
    queue: float  # time-weighted mean server queue
    overloads: int = 0  # 109s
    shares: tuple[float, ...] = ()  # per client, for shared scenarios
    recovery: float | None = None  # seconds to >= 90% after the disturbance ends
    clients: list[Client] = field(default_factory=list)
    server: Server | None = None


def _run(
    slots: int,
    factories: list[CoreFactory],
    until: float,
    *,
    service: Callable[[float], float] = lambda t: 0.1,
    jitter: float = 0.2,
    seed: int = 1,
    starts: tuple[float, ...] = (),
    setup: Callable[[Server], None] | None = None,
    think: float = 0.0002,
) -> tuple[Server, list[Client]]:
    sim = Sim()
    server = Server(sim, slots, service=service, jitter=jitter, seed=seed)
    if setup:
        setup(server)
    clients = [Client(sim, server, f(seed + 100 * i), think=think) for i, f in enumerate(factories)]
    for i, client in enumerate(clients):
        client.start(starts[i] if i < len(starts) else 0.0)
    sim.run(until)
    return server, clients


def _measure(server: Server, clients: list[Client], t0: float, t1: float) -> Result:
    ideal = ideal_done(server, t0, t1)
    shares = tuple(c.done_between(t0, t1) / ideal for c in clients)
    return Result(
        throughput=sum(shares),
        queue=server.mean_queue(t0, t1),
        overloads=server.counts["overload"],
        shares=shares,
        clients=clients,
        server=server,
    )


def steady(
    slots: int,
    factory: CoreFactory = adaptive_core,
    *,
    jitter: float = 0.2,
    seed: int = 1,
    service_s: float = 0.1,
) -> Result:
    """C fixed, S = 100 ms unless said: measured from 20 s to 120 s."""
    server, clients = _run(
        slots, [factory], 120.0, service=lambda t: service_s, jitter=jitter, seed=seed
    )
    return _measure(server, clients, 20.0, 120.0)


def capacity_change(factory: CoreFactory = adaptive_core, *, seed: int = 1) -> list[Result]:
    """C = 8, then 3 at 40 s, then 12 at 80 s; each phase measured from 5 s after its change."""

    def setup(server: Server) -> None:
        server.set_slots_at(40.0, 3)
        server.set_slots_at(80.0, 12)

    server, clients = _run(8, [factory], 120.0, seed=seed, setup=setup)
    return [
        _measure(server, clients, a + 5.0, b)
        for a, b in ((10.0, 40.0), (40.0, 80.0), (80.0, 120.0))
    ]


def capacity_change_short(
    factory: CoreFactory = adaptive_core,
    *,
    seed: int = 1,
    warmup: float = 3.0,
    phase: float = 6.0,
    jitter: float = 0.0,
    think: float = 0.0015,
) -> list[Result]:
    """The benchmark's c-change: C = 8, 3, 12 for `phase` seconds each after a `warmup`, each
    phase measured whole (the ramp after a change counts), fixed service times (the simulator
    sleeps S) and a 1-2 ms client turnaround."""

    def setup(server: Server) -> None:
        server.set_slots_at(warmup + phase, 3)
        server.set_slots_at(warmup + 2 * phase, 12)

    until = warmup + 3 * phase
    server, clients = _run(8, [factory], until, jitter=jitter, seed=seed, setup=setup, think=think)
    return [
        _measure(server, clients, warmup + i * phase, warmup + (i + 1) * phase) for i in range(3)
    ]


def service_growth(
    factory: CoreFactory = adaptive_core, *, seed: int = 1, until: float = 120.0
) -> Result:
    """C = 8, S growing linearly from 100 ms to 300 ms over the run; measured from 10 s."""
    server, clients = _run(8, [factory], until, service=lambda t: 0.1 + 0.2 * t / until, seed=seed)
    return _measure(server, clients, 10.0, until)


def service_step(
    factory: CoreFactory = adaptive_core,
    *,
    seed: int = 1,
    at: float = 30.0,
    until: float = 90.0,
    after: float = 0.2,
) -> Result:
    """C = 8, S steps from 100 ms to `after` seconds at `at`; measured from 10 s after the step,
    with the recovery time after it (to >= 90% of the new C/S over 2 s, wholly after the step)."""
    server, clients = _run(
        8, [factory], until, service=lambda t: 0.1 if t < at else after, seed=seed
    )
    result = _measure(server, clients, at + 10.0, until)
    result.recovery = recovery_time(clients, server, at, span=2.0, after_span=True)
    return result


def fast_growth(
    factory: CoreFactory = adaptive_core, *, seed: int = 1, span: float = 19.0, warmup: float = 3.0
) -> Result:
    """C = 8, S growing from 100 ms to 300 ms over a `span`-second run, as in the benchmark's
    s-growth scenario; measured from `warmup` seconds."""
    server, clients = _run(8, [factory], span, service=lambda t: 0.1 + 0.2 * t / span, seed=seed)
    return _measure(server, clients, warmup, span)


def shared(
    slots: int = 8,
    factories: tuple[CoreFactory, CoreFactory] = (adaptive_core, adaptive_core),
    *,
    second_at: float = 0.0,
    jitter: float = 0.2,
    seed: int = 1,
) -> Result:
    """Two targets on one PBX, the second starting at `second_at`; measured from 20 s after it."""
    server, clients = _run(
        slots, list(factories), 120.0, jitter=jitter, seed=seed, starts=(0.0, second_at)
    )
    return _measure(server, clients, second_at + 20.0, 120.0)


def outage(factory: CoreFactory = adaptive_core, *, slots: int = 8, seed: int = 1) -> Result:
    """The PBX refuses connections from 30 s to 60 s; measured from 65 s to 90 s."""
    server, clients = _run(slots, [factory], 90.0, seed=seed, setup=lambda s: s.outage(30.0, 60.0))
    result = _measure(server, clients, 65.0, 90.0)
    result.recovery = recovery_time(clients, server, 60.0)
    return result


def manual_import(factory: CoreFactory = adaptive_core, *, slots: int = 8, seed: int = 1) -> Result:
    """Lead calls fail with 109 from 30 s to 40 s; measured from 45 s to 70 s."""
    server, clients = _run(
        slots, [factory], 70.0, seed=seed, setup=lambda s: s.manual_import(30.0, 40.0)
    )
    result = _measure(server, clients, 45.0, 70.0)
    result.recovery = recovery_time(clients, server, 40.0)
    return result


def main() -> None:
    """Print the model's results table: adaptive vs fixed concurrency 1, 4 and 32."""
    limiters: list[tuple[str, CoreFactory]] = [
        ("adaptive", adaptive_core),
        ("fixed 1", fixed_core(1)),
        ("fixed 4", fixed_core(4)),
        ("fixed 32", fixed_core(32)),
    ]
    rows: list[tuple[str, Callable[[CoreFactory], Result]]] = [
        *[(f"C={c:<2} S=100ms", lambda f, c=c: steady(c, f)) for c in (1, 2, 4, 8, 16)],
        *[
            (f"C={c:<2} S=100ms, no jitter", lambda f, c=c: steady(c, f, jitter=0.0))
            for c in (4, 16)
        ],
        *[(f"C 8->3->12, phase {i + 1}", lambda f, i=i: capacity_change(f)[i]) for i in range(3)],
        *[
            (f"C 8->3->12 6 s, phase {i + 1}", lambda f, i=i: capacity_change_short(f)[i])
            for i in range(3)
        ],
        ("S 100->300ms, C=8", service_growth),
        ("S 100->300ms in 19 s, C=8", fast_growth),
        ("S step 100->200ms, C=8", service_step),
        ("30 s outage, C=8", outage),
        ("10 s import (109s), C=8", manual_import),
    ]
    print(f"{'scenario':28}" + "".join(f"{name:>22}" for name, _ in limiters))
    print(f"{'':28}" + "".join(f"{'thr  queue  recover':>22}" for _ in limiters))
    for label, run in rows:
        cells = []
        for _, factory in limiters:
            r = run(factory)
            rec = (
                ""
                if r.recovery is None
                else "never"
                if math.isinf(r.recovery)
                else f"{r.recovery:4.1f}s"
            )
            cells.append(f"{r.throughput:5.2f} {r.queue:6.2f} {rec:>7}")
        print(f"{label:28}" + "".join(f"{c:>22}" for c in cells))
    for c in (4, 8, 16):
        for name, factory in limiters[:1] + limiters[3:]:
            r = shared(c, (adaptive_core, factory), second_at=15.0)
            print(
                f"shared C={c:<2} adaptive + {name:9} shares {r.shares[0]:.2f} / {r.shares[1]:.2f}"
                f"  queue {r.queue:.2f}"
            )


if __name__ == "__main__":
    main()
