"""A discrete-event queueing model of the PBX and of target clients, in virtual time.

The server has C slots (may change over time), a service time S(t) with uniform jitter, a FIFO
queue whose calls fail with 109 (OVERLOAD) after `queue_timeout` seconds, and outages that fail
every call with CONNECT_FAILED. Each client is a closed loop of `workers` callers gated by a
`LimiterCore`, with an endless backlog of leads. Nothing sleeps: a 100 s run takes well under a
second of real time.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from target_noojee.pacing import GradientPolicy, LimiterCore, Permit, Signal


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
        self._idle += 1
        self.sim.at(now + self.think, self._wake)

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


def recovery_time(clients: list[Client], server: Server, t_end: float, share: float = 0.9) -> float:
    """Seconds after t_end until the clients' completions over the trailing second first reach
    `share` of C/S."""
    t = t_end
    while t < t_end + 60:
        t += 0.05
        done = sum(c.done_between(t - 1.0, t) for c in clients)
        if done >= share * ideal_done(server, t - 1.0, t):
            return t - t_end
    return float("inf")


def adaptive_core(seed: int = 1, **kw: Any) -> LimiterCore:
    """A LimiterCore with the default adaptive policy (seeded)."""
    from target_noojee.pacing import Breaker

    rng = random.Random(seed)
    breaker_kw = {k: kw.pop(k) for k in ("failures_to_open", "base_wait", "max_wait") if k in kw}
    return LimiterCore(GradientPolicy(rng=rng, **kw), Breaker(rng=rng, **breaker_kw))
