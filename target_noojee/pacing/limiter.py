"""The limiters delivery uses: permits under a limit, the breaker in front, the rule behind.

`LimiterCore` is pure (the caller passes the time), so the tests' queueing model drives it in
virtual time; `AdaptiveLimiter` and `FixedLimiter` put it behind a condition variable, one per
PBX, shared by every stream and both endpoints.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from target_noojee.pacing.breaker import Breaker
from target_noojee.pacing.rule import Rule
from target_noojee.pacing.samples import Permit, Signal
from target_noojee.pacing.tuning import Tuning
from target_noojee.pacing.window import Window, window_size


class Limiter(Protocol):
    """What delivery needs from a limiter."""

    def acquire(self, timeout: float | None = None) -> Permit | None:
        """Block until a call may start; None if `timeout` seconds pass first."""
        ...

    def release(self, permit: Permit, rtt_s: float, signal: Signal) -> None:
        """Report how the call admitted by `permit` ended."""
        ...

    @property
    def limit(self) -> int:
        """The current concurrency limit."""
        ...

    @property
    def in_flight(self) -> int:
        """Calls admitted and not yet released."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """Limit, in-flight, baseline, breaker state: for logs."""
        ...


class LimiterCore:
    """Breaker + windows + rule + in-flight count, without threads or a clock of its own.

    With `fixed` the limit never moves (the `concurrency` setting); the breaker still works.
    """

    def __init__(
        self,
        rule: Rule | None = None,
        breaker: Breaker | None = None,
        *,
        fixed: int | None = None,
    ) -> None:
        if fixed is not None and fixed < 1:
            raise ValueError("a fixed limit must be at least 1")
        self.rule = rule
        self.fixed = fixed
        self.breaker = breaker or Breaker()
        self._in_flight = 0
        self._ids = itertools.count(1)
        self._next_id = 1
        self._window = self._open_window(1)
        self._outstanding: set[int] = set()
        self._last_rtt: float | None = None

    @property
    def limit(self) -> int:
        """The concurrency limit in force."""
        if self.rule is None:
            return self.fixed or 1
        return self.rule.limit

    @property
    def in_flight(self) -> int:
        """Calls admitted and not yet released."""
        return self._in_flight

    def try_acquire(self, now: float) -> Permit | float | None:
        """A Permit if a call may start now; else the time to try again (breaker wait) or None
        (wait for a release)."""
        if self._in_flight >= self.limit:
            return None
        admitted, retry_at = self.breaker.admit(now)
        if not admitted:
            return retry_at
        self._in_flight += 1
        self._next_id = next(self._ids) + 1
        permit = Permit(self._next_id - 1, now, self._in_flight, probe=self.breaker.is_open)
        self._outstanding.add(permit.id)
        return permit

    def release(self, now: float, permit: Permit, rtt_s: float, signal: Signal) -> None:
        """Account the end of the call admitted by `permit`."""
        try:
            self._outstanding.remove(permit.id)
        except KeyError:
            raise ValueError(f"permit {permit.id} is not outstanding") from None
        self._in_flight -= 1
        if self.breaker.on_result(now, signal, permit.probe):
            self._window = self._open_window(self._next_id)  # the outage's calls say nothing
        if signal is Signal.OK:
            self._last_rtt = rtt_s
        rule = self.rule
        if rule is None:
            return
        limit = rule.limit
        if signal is Signal.OVERLOAD:
            rule.on_overload(now)
        if rule.limit == limit:
            self._add(rule, now, permit, rtt_s, signal)
        if rule.limit != limit:
            self._window = self._open_window(self._next_id)

    def _add(self, rule: Rule, now: float, permit: Permit, rtt: float, signal: Signal) -> None:
        window = self._window
        window.add(permit.id, rtt, permit.in_flight, signal)
        if signal is Signal.ERROR and rule.errors.is_rise(
            window.errors, window.replies, rule.tuning.confidence
        ):
            rule.errors.learn(window.errors, window.replies)
            rule.on_error_rise()  # a burst backs off at once, not at the window's end
        elif window.complete:
            limit = rule.limit
            rule.on_window(window.stats(), now)
            if rule.limit == limit:
                self._window = self._open_window(window.end_id)
                for spilled in window.spill:
                    self._window.add(*spilled)

    def _open_window(self, first_id: int) -> Window:
        rule = self.rule
        if rule is None:
            return Window(first_id, 1)
        t = rule.tuning
        rounds = 1 if rule.starting else t.max_rounds  # the start doubles every round trip
        size = window_size(rule.limit, rule.baseline.rel_sd, t.confidence, rounds)
        return Window(first_id, size)

    def snapshot(self) -> dict[str, Any]:
        """Limit, in-flight, baseline and last round trip, breaker state and counters."""
        rule = self.rule
        snap: dict[str, Any] = {
            "limit": self.limit,
            "in_flight": self._in_flight,
            "breaker": self.breaker.state,
            "recent_rtt": self._last_rtt,
            "mode": "fixed" if rule is None else _mode(rule),
            "baseline_rtt": None if rule is None else rule.baseline.value,
        }
        if rule is not None:
            snap.update(rule.counts)
            snap["queue"] = rule.last_queue
            snap["error_rate"] = rule.errors.rate
        return snap


def _mode(rule: Rule) -> str:
    return "start" if rule.starting else "remeasure" if rule.remeasuring else "adaptive"


class _ThreadSafeLimiter:
    """A `LimiterCore` behind a condition variable: safe to share between threads."""

    def __init__(self, core: LimiterCore, clock: Callable[[], float]) -> None:
        self.core = core
        self._clock = clock
        self._cond = threading.Condition()

    def acquire(self, timeout: float | None = None) -> Permit | None:
        """Block until a call may start (under the limit; the one probe if the breaker is open);
        None if `timeout` seconds pass first."""
        with self._cond:
            deadline = None if timeout is None else self._clock() + timeout
            while True:
                now = self._clock()
                got = self.core.try_acquire(now)
                if isinstance(got, Permit):
                    return got
                wait = None if got is None else max(0.0, got - now)
                if deadline is not None:
                    remaining = deadline - now
                    if remaining <= 0:
                        return None
                    wait = remaining if wait is None else min(wait, remaining)
                self._cond.wait(wait)

    def release(self, permit: Permit, rtt_s: float, signal: Signal) -> None:
        """Report how the call admitted by `permit` ended; wakes as many callers as may go."""
        with self._cond:
            was_open = self.core.breaker.is_open
            self.core.release(self._clock(), permit, rtt_s, signal)
            if was_open or self.core.breaker.is_open:
                self._cond.notify_all()  # the probe's answer, or waits to re-time
            else:
                # Waking only as many as may go spares a hundred threads a wake-up per reply.
                self._cond.notify(max(0, self.core.limit - self.core.in_flight))

    @property
    def limit(self) -> int:
        """The current concurrency limit."""
        with self._cond:
            return self.core.limit

    @property
    def in_flight(self) -> int:
        """Calls admitted and not yet released."""
        with self._cond:
            return self.core.in_flight

    def snapshot(self) -> dict[str, Any]:
        """Limit, in-flight, baseline, recent round trip, breaker state and counters."""
        with self._cond:
            return self.core.snapshot()


class AdaptiveLimiter(_ThreadSafeLimiter):
    """The thread-safe adaptive limiter: one per PBX, shared by every stream and endpoint."""

    def __init__(
        self,
        *,
        max_limit: int = 128,
        min_limit: int = 1,
        tuning: Tuning | None = None,
        clock: Callable[[], float] = time.monotonic,
        breaker: Breaker | None = None,
    ) -> None:
        if not 1 <= min_limit <= max_limit:
            raise ValueError("need 1 <= min_limit <= max_limit")
        rule = Rule(tuning or Tuning(), max_limit=max_limit, min_limit=min_limit)
        super().__init__(LimiterCore(rule, breaker), clock)


class FixedLimiter(_ThreadSafeLimiter):
    """A pinned concurrency limit (the `concurrency` setting); still has the circuit breaker."""

    def __init__(
        self,
        limit: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        breaker: Breaker | None = None,
    ) -> None:
        super().__init__(LimiterCore(breaker=breaker, fixed=limit), clock)


_SHARED_KNOBS = ("clock", "breaker")  # what a fixed limiter takes of the adaptive one's


def make_limiter(
    max_concurrency: int, concurrency: int | None = None, **kw: Any
) -> AdaptiveLimiter | FixedLimiter:
    """The limiter for the settings: fixed at `concurrency` if set, else adaptive up to
    `max_concurrency`. Extra keywords go to the limiter (a fixed one takes only the clock and
    the breaker)."""
    if concurrency is not None:
        fixed_kw = {k: v for k, v in kw.items() if k in _SHARED_KNOBS}
        return FixedLimiter(concurrency, **fixed_kw)
    return AdaptiveLimiter(max_limit=max_concurrency, **kw)
