"""A discrete-event queueing model of the PBX and of target clients, in virtual time.

The server has C slots (may change), a mean service time S(t) with lognormal noise of a given
coefficient of variation, a FIFO or barging queue (Java's non-fair `Semaphore`: a freed slot
is free until the woken head of the queue takes it, `wake` seconds later, and a call arriving
meanwhile takes it first), calls that fail with 109 (OVERLOAD) after `queue_timeout` seconds, a
network round trip outside the slot (jittered), the dialer's own work holding slots on a
schedule, background 103s and lost replies (ERROR), error bursts, imports (109 at once) and
outages (CONNECT_FAILED). Each client is a closed loop of callers gated by a `LimiterCore`,
with an endless backlog. Nothing sleeps: a 100 s run takes well under a second.

``python tests/pacing_model.py`` prints the grid's steady-state table.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from target_noojee.pacing import Breaker, LimiterCore, Permit, Rule, Signal, Tuning

MAX_LIMIT = 128


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
    """The PBX: slots, a queue of a given kind, noisy service times, a network in front."""

    sim: Sim
    slots: int
    service: Callable[[float], float] = lambda t: 0.1
    cv: float = 0.0
    queue: str = "fifo"  # or "barging"
    latency: float = 0.001  # round trip, outside the slot
    wake: float = 0.001  # barging: how long a woken waiter takes to claim a freed slot
    queue_timeout: float = 60.0
    fault_rate: float = 0.0  # 103 after the service time
    drop_rate: float = 0.0  # the call is served but its reply is lost
    seed: int = 1
    busy: int = 0
    reserved: int = 0  # slots the dialer holds
    down: bool = False
    importing: bool = False
    burst_rate: float = 0.0  # while set, this share of calls fails at once (ERROR)
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

    def dialer_load(self, schedule: Iterable[tuple[float, int]]) -> None:
        """The dialer holds K slots from second T, for each (T, K)."""
        for t, k in schedule:
            self.sim.at(t, self._set_reserved, k)

    def outage(self, start: float, end: float) -> None:
        self.sim.at(start, self._down)
        self.sim.at(end, self._up)

    def manual_import(self, start: float, end: float) -> None:
        """Lead calls fail at once with 109 between start and end, as during a PBX import."""
        self.sim.at(start, setattr, self, "importing", True)
        self.sim.at(end, setattr, self, "importing", False)

    def error_burst(self, start: float, end: float, rate: float = 0.5) -> None:
        """`rate` of the calls fail with 103 between start and end."""
        self.sim.at(start, setattr, self, "burst_rate", rate)
        self.sim.at(end, setattr, self, "burst_rate", 0.0)

    def slots_at(self, t: float) -> int:
        """Slots available to lead calls at time t (the dialer's excluded)."""
        i = bisect.bisect_right([s[0] for s in self._slot_log], t) - 1
        return self._slot_log[max(0, i)][1]

    # -- the queue ------------------------------------------------------------------------------

    def _free(self) -> int:
        return self.slots - self.reserved - self.busy

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

    def one_way(self) -> float:
        return self.latency / 2 * self._rng.uniform(0.8, 1.2)

    def arrive(self, call: Call) -> None:
        if self.down:
            self._reply(call, Signal.CONNECT_FAILED)
        elif self.importing:
            self._reply(call, Signal.OVERLOAD)
        elif self.burst_rate and self._rng.random() < self.burst_rate:
            self._reply(call, Signal.ERROR)
        elif self._free() > 0 and (self.queue == "barging" or not self._queue):
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
        mean = self.service(self.sim.now)
        s = mean
        if self.cv > 0:
            sigma2 = math.log1p(self.cv**2)
            s = self._rng.lognormvariate(math.log(mean) - sigma2 / 2, math.sqrt(sigma2))
        self.sim.at(self.sim.now + s, self._finish, call, self._gen)

    def _finish(self, call: Call, gen: int) -> None:
        if gen != self._gen or call.state != "serving":
            return
        self.busy -= 1
        self._serving.discard(call)
        self.served += 1
        if self.fault_rate and self._rng.random() < self.fault_rate:
            self._reply(call, Signal.ERROR)
        elif self.drop_rate and self._rng.random() < self.drop_rate:
            self._reply(call, Signal.ERROR)  # applied, but the reply is lost
        else:
            self._reply(call, Signal.OK)
        self._drain()

    def _drain(self) -> None:
        if self.queue == "barging":
            for _ in range(max(0, min(self._free(), len(self._queue)))):
                self.sim.at(self.sim.now + self.wake, self._claim, self._gen)
            return
        changed = False
        while self._queue and self._free() > 0:
            self._start(self._queue.pop(0))
            changed = True
        if changed:
            self._log_queue()

    def _claim(self, gen: int) -> None:
        """Barging: the woken head of the queue takes a slot if no newcomer took it first."""
        if gen == self._gen and self._queue and self._free() > 0:
            self._start(self._queue.pop(0))
            self._log_queue()

    def _expire(self, call: Call, gen: int) -> None:
        if gen != self._gen or call.state != "queued":
            return
        self._queue.remove(call)
        self._log_queue()
        self._reply(call, Signal.OVERLOAD)

    def _set_slots(self, slots: int) -> None:
        self.slots = slots
        self._slot_log.append((self.sim.now, slots - self.reserved))
        self._drain()

    def _set_reserved(self, reserved: int) -> None:
        self.reserved = reserved
        self._slot_log.append((self.sim.now, self.slots - reserved))
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
        call.client.counts_at_server[signal.value] += 1
        self.sim.at(self.sim.now + self.one_way(), call.client.on_reply, call, signal)


@dataclass(eq=False)
class Client:
    """`workers` closed-loop callers with an endless backlog, gated by `core`."""

    sim: Sim
    server: Server
    core: LimiterCore
    workers: int = MAX_LIMIT + 8
    think: float = 0.0002  # the target's own work between calls
    overload_pause: float = 1.0  # a worker's pause after a 109, as delivery's retry would
    error_pause: float = 0.5  # and after a 103 or a lost reply
    ok_times: list[float] = field(default_factory=list)
    limit_log: list[tuple[float, int]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    counts_at_server: Counter[str] = field(default_factory=Counter)
    _idle: int = 0
    _timer_at: float | None = None

    def start(self, t: float = 0.0) -> None:
        self.sim.at(t, self._log_limit)
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
            self.sim.at(self.sim.now + self.server.one_way(), self.server.arrive, call)
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
        pause = {Signal.OVERLOAD: self.overload_pause, Signal.ERROR: self.error_pause}.get(
            signal, self.think
        )
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


def first_time_at(
    clients: list[Client], server: Server, since: float, share: float = 0.9, span: float = 1.0
) -> float:
    """Seconds after `since` until the end of the first `span`-second window whose completions
    reach `share` of C/S (at least `span`)."""
    t = since + span
    while t < since + 60:
        done = sum(c.done_between(t - span, t) for c in clients)
        if done >= share * ideal_done(server, t - span, t):
            return t - since
        t += 0.05
    return math.inf


# -- limiters -----------------------------------------------------------------------------------

CoreFactory = Callable[[int], LimiterCore]


def adaptive_core(seed: int = 1, max_limit: int = MAX_LIMIT, **tuning: Any) -> LimiterCore:
    """A LimiterCore with the adaptive rule (seeded breaker); keywords are `Tuning` fields."""
    rule = Rule(Tuning(**tuning), max_limit=max_limit)
    return LimiterCore(rule, Breaker(rng=random.Random(seed)))


def fixed_core(limit: int) -> CoreFactory:
    """A factory of LimiterCores pinned at `limit`."""
    return lambda seed: LimiterCore(breaker=Breaker(rng=random.Random(seed)), fixed=limit)


# -- scenarios ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    """One point of the grid: the PBX as a client sees it."""

    slots: int = 8
    queue: str = "fifo"
    cv: float = 0.0
    latency_ms: float = 0.0
    service_s: float = 0.1

    def __str__(self) -> str:
        return f"C={self.slots} {self.queue} cv={self.cv:g} L={self.latency_ms:g}ms"


GRID = [
    World(c, q, cv, lat)
    for c in (1, 2, 4, 8, 16, 32)
    for q in ("fifo", "barging")
    for cv in (0.0, 0.3, 0.6)
    for lat in (0.0, 30.0, 100.0)
]


@dataclass
class Result:
    """What a scenario measured."""

    throughput: float  # completions / (integral of C/S)
    queue: float  # time-weighted mean server queue
    overloads: int = 0  # 109s
    shares: tuple[float, ...] = ()  # per client
    recovery: float | None = None  # seconds to >= 90% of C/S after the disturbance
    clients: list[Client] = field(default_factory=list)
    server: Server | None = None


def run(
    world: World,
    factories: list[CoreFactory],
    until: float,
    *,
    seed: int = 1,
    starts: tuple[float, ...] = (),
    setup: Callable[[Server], None] | None = None,
    service: Callable[[float], float] | None = None,
    think: float = 0.0002,
    **server_kw: Any,
) -> tuple[Server, list[Client]]:
    """Run clients of the given limiters against one server until `until`."""
    sim = Sim()
    server = Server(
        sim,
        world.slots,
        service=service or (lambda t: world.service_s),
        cv=world.cv,
        queue=world.queue,
        latency=max(world.latency_ms / 1000.0, 0.001),
        seed=seed,
        **server_kw,
    )
    if setup:
        setup(server)
    clients = [Client(sim, server, f(seed + 100 * i), think=think) for i, f in enumerate(factories)]
    for i, client in enumerate(clients):
        client.start(starts[i] if i < len(starts) else 0.0)
    sim.run(until)
    return server, clients


def measure(server: Server, clients: list[Client], t0: float, t1: float) -> Result:
    """Throughput over C/S, mean queue and shares over [t0, t1]."""
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
    world: World, factory: CoreFactory = adaptive_core, *, seed: int = 1, until: float = 60.0
) -> Result:
    """C and S fixed: measured from 10 s to the end."""
    server, clients = run(world, [factory], until, seed=seed)
    return measure(server, clients, 10.0, until)


def short_job(
    world: World, factory: CoreFactory = adaptive_core, *, seed: int = 1, span: float = 10.0
) -> Result:
    """A job of `span` seconds from the first call, ramp included; `recovery` is the time to
    the first second at >= 90% of C/S."""
    server, clients = run(world, [factory], span, seed=seed)
    result = measure(server, clients, 0.0, span)
    result.recovery = first_time_at(clients, server, 0.0)
    return result


def capacity_change(
    world: World = World(8),
    factory: CoreFactory = adaptive_core,
    *,
    seed: int = 1,
    phase: float = 20.0,
    levels: tuple[int, ...] = (8, 3, 12),
) -> list[Result]:
    """C steps through `levels`, `phase` seconds each; each phase measured whole, with the time
    to >= 90% of the new C/S."""

    def setup(server: Server) -> None:
        for i, level in enumerate(levels[1:], start=1):
            server.set_slots_at(i * phase, level)

    world = World(levels[0], world.queue, world.cv, world.latency_ms, world.service_s)
    server, clients = run(world, [factory], phase * len(levels), seed=seed, setup=setup)
    out = []
    for i in range(len(levels)):
        r = measure(server, clients, i * phase, (i + 1) * phase)
        r.recovery = first_time_at(clients, server, i * phase)
        out.append(r)
    return out


def service_growth(
    world: World = World(8),
    factory: CoreFactory = adaptive_core,
    *,
    seed: int = 1,
    until: float = 60.0,
    end_s: float = 0.3,
) -> Result:
    """S grows linearly from the world's to `end_s` over the run; measured from 10 s."""
    s0 = world.service_s

    def service(t: float) -> float:
        return s0 + (end_s - s0) * t / until

    server, clients = run(world, [factory], until, seed=seed, service=service)
    return measure(server, clients, 10.0, until)


def outage(
    world: World = World(8), factory: CoreFactory = adaptive_core, *, seed: int = 1
) -> Result:
    """The PBX refuses connections from 20 s to 40 s; measured from 40 s to 60 s."""
    server, clients = run(world, [factory], 60.0, seed=seed, setup=lambda s: s.outage(20.0, 40.0))
    result = measure(server, clients, 40.0, 60.0)
    result.recovery = first_time_at(clients, server, 40.0)
    return result


def manual_import(
    world: World = World(8), factory: CoreFactory = adaptive_core, *, seed: int = 1
) -> Result:
    """Lead calls fail with 109 from 20 s to 30 s; measured from 30 s to 50 s."""
    server, clients = run(
        world, [factory], 50.0, seed=seed, setup=lambda s: s.manual_import(20.0, 30.0)
    )
    result = measure(server, clients, 30.0, 50.0)
    result.recovery = first_time_at(clients, server, 30.0)
    return result


def background_errors(
    world: World = World(16),
    factory: CoreFactory = adaptive_core,
    *,
    seed: int = 1,
    fault_rate: float = 0.03,
    drop_rate: float = 0.01,
    until: float = 60.0,
) -> Result:
    """A steady share of 103s and lost replies; throughput counts OK replies only."""
    server, clients = run(
        world, [factory], until, seed=seed, fault_rate=fault_rate, drop_rate=drop_rate
    )
    return measure(server, clients, 10.0, until)


def error_burst(
    world: World = World(8), factory: CoreFactory = adaptive_core, *, seed: int = 1
) -> tuple[Server, list[Client]]:
    """Half the calls fail at once from 20 s to 25 s."""
    return run(world, [factory], 40.0, seed=seed, setup=lambda s: s.error_burst(20.0, 25.0))


def dialer_load(
    world: World = World(8),
    factory: CoreFactory = adaptive_core,
    *,
    seed: int = 1,
    schedule: tuple[tuple[float, int], ...] = ((0.0, 2), (20.0, 4), (40.0, 0)),
) -> list[Result]:
    """The dialer holds slots on a schedule; each phase measured whole."""
    until = schedule[-1][0] + 20.0
    server, clients = run(
        world, [factory], until, seed=seed, setup=lambda s: s.dialer_load(schedule)
    )
    bounds = [t for t, _ in schedule] + [until]
    return [measure(server, clients, a, b) for a, b in itertools.pairwise(bounds)]


def shared(
    world: World = World(8),
    factories: tuple[CoreFactory, CoreFactory] = (adaptive_core, adaptive_core),
    *,
    second_at: float = 10.0,
    seed: int = 1,
    until: float = 90.0,
) -> Result:
    """Two targets on one PBX, the second starting at `second_at`; measured from 20 s after it."""
    server, clients = run(world, list(factories), until, seed=seed, starts=(0.0, second_at))
    return measure(server, clients, second_at + 20.0, until)


def main() -> None:
    """Print the grid: the adaptive limiter's steady state and its 10 s jobs."""
    print(f"{'world':36} {'steady thr':>10} {'queue':>6} {'109':>4} {'10 s job':>9} {'to 90%':>7}")
    for world in GRID:
        r = steady(world, until=40.0)
        j = short_job(world)
        rec = "never" if j.recovery is None or math.isinf(j.recovery) else f"{j.recovery:.2f}"
        print(
            f"{world!s:36} {r.throughput:10.3f} {r.queue:6.2f} {r.overloads:4d} "
            f"{j.throughput:9.3f} {rec:>7}"
        )


if __name__ == "__main__":
    main()
