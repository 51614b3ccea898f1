"""Adaptive concurrency for the PBX: find and follow its limit without building a server queue.

The PBX serves C lead calls at once (C unknown, shared with other clients, may change) and queues
the rest. Up to C a call's round trip is the service time S; above it every extra call waits, so
the round trip grows to about S * L / C. The limiter compares each window's round trip with a
baseline (S, re-measured at reduced concurrency) and holds the limit L where our own share of the
server queue stays under half a call (TCP Vegas' rule, which is also what makes two targets on
one PBX share it evenly):

    our queue  ~=  L * (1 - baseline / rtt)          ideal L  ~=  L * baseline / rtt

The window's round trip is a mean (clipped at 3x the median), not a median: the PBX's service
times are steady, callers then move in step, and a queue of one call delays a few calls by a
whole service time and the others by nothing, which leaves the median where it was (the model in
tests/pacing_model.py shows the median version holding a queue of 2.5 calls at C = 16).

Pieces, from the bottom up:

- `GradientPolicy`: the decision rule. Pure (no threads, no clock of its own): feed it samples
  with `on_sample(now, rtt, signal, in_flight, sent_at)`, read `limit`.
- `FixedPolicy`: the rule for a pinned `concurrency` setting.
- `Breaker`: the circuit breaker on connection failures (one probe at a time, capped and fully
  jittered exponential waits, closed by the first answer; the limit is kept meanwhile).
- `LimiterCore`: policy + breaker + in-flight accounting, still pure: `try_acquire(now)` and
  `release(now, ...)`. The tests' queueing model drives it in virtual time.
- `AdaptiveLimiter` / `FixedLimiter`: the thread-safe limiters delivery uses (one per PBX, shared
  by every stream and both endpoints); `make_limiter` picks one from the settings.
"""

from __future__ import annotations

import enum
import itertools
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "AdaptiveLimiter",
    "Breaker",
    "FixedLimiter",
    "FixedPolicy",
    "GradientPolicy",
    "Limiter",
    "LimiterCore",
    "Permit",
    "Signal",
    "make_limiter",
]

# Standard deviation of a sample median ~= _MEDIAN_SE * IQR / sqrt(n) (exact for a normal
# distribution, within 8% for a uniform one).
_MEDIAN_SE = 0.93
_CLIP = 3.0  # the robust mean clips round trips at this multiple of the window's median
_MIN_SPREAD = 0.01  # relative noise floor: loopback and scheduling noise never vanish
_MAX_SPREAD = 1.0
_SPREAD_GAIN = 0.2
_MAX_BASELINE_WEIGHT = 2048.0


class Signal(enum.Enum):
    """What a finished call says about the PBX's capacity."""

    OK = "ok"  # the PBX answered and did the work (any code but 109/103/5xx/429)
    OVERLOAD = "overload"  # 109: queued past the server's limit, or an import is running
    ERROR = "error"  # 103, HTTP 5xx or 429: the server is struggling
    CONNECT_FAILED = "connect_failed"  # refused, reset or timed out before any answer
    IGNORE = "ignore"  # says nothing about capacity (a local error, a cancelled call)


@dataclass(frozen=True)
class Permit:
    """One admitted call; hand it back to `release` exactly once."""

    id: int
    sent_at: float  # clock reading when the call was admitted
    in_flight: int  # calls in flight once this one was admitted, itself included
    probe: bool = False  # the single call an open circuit breaker let through


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
        """Limit, in-flight, baseline and recent round trip, breaker state: for logs."""
        ...


class _Mode(enum.Enum):
    START = "start"  # first window at the initial limit: measures the baseline
    SLOW_START = "slow_start"  # doubling until a queue shows (also after error cuts)
    HOLD = "hold"  # at the accepted level, watching for inflation
    PROBE = "probe"  # trying a higher level against the window before it
    CHECK = "check"  # after a cut for inflation: did the round trip come down?
    REMEASURE = "remeasure"  # at reduced concurrency, re-sampling the service time


def _quantile(ordered: list[float], q: float) -> float:
    """Linear-interpolated quantile of an already sorted, non-empty list."""
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _summary(rtts: list[float], statistic: str) -> tuple[float, float]:
    """(center, relative noise per sample) of a window's round trips.

    The center's relative standard error is about ``noise / sqrt(n)``. "mean" is the mean of round
    trips clipped at 3x the median: Little's law makes it exactly L / throughput, so it sees a
    queue even when most calls do not wait (steady service times keep callers in step, and then
    a queue of one call delays a few calls by a whole service time and the rest by nothing, which
    leaves the median unmoved). "median" is the plain median, for heavy-tailed noise.
    """
    ordered = sorted(rtts)
    median = _quantile(ordered, 0.5)
    if statistic == "median":
        iqr = _quantile(ordered, 0.75) - _quantile(ordered, 0.25)
        return median, _MEDIAN_SE * iqr / median
    cap = _CLIP * median
    clipped = [min(x, cap) for x in ordered]
    mean = sum(clipped) / len(clipped)
    var = sum((x - mean) ** 2 for x in clipped) / max(1, len(clipped) - 1)
    return mean, math.sqrt(var) / mean


def _round(x: float) -> int:
    return math.floor(x + 0.5)


class GradientPolicy:
    """The adaptive rule: a concurrency limit from round trips and outcomes. Not thread-safe.

    Samples are grouped in windows; only calls sent under the current limit count (`sent_at` at or
    after the last change). A window closes once it can tell a queue of half a call from noise
    (``2 * (2 * confidence * noise * L)**2`` samples, at least `min_rounds` rounds of L), or
    early when the round trip is grossly inflated. Its center (robust mean round trip) is
    compared with the baseline S and with the window before it. At each close:

    - slow start doubles L while no queue shows, then cuts to ``round(L * baseline / rtt)``;
    - at the level held, a window showing a queue of our own >= `hold_tolerance` calls cuts L
      the same way, and the next window checks the round trip fell with it. When a neighbour's
      probe adds the one call of queue, our share of it is our share of all calls in flight:
      the default 0.5 makes whoever holds more than half of the PBX give up a call, which is
      what moves two targets towards an even split. A window with a smaller queue of ours (>=
      `quiet_tolerance`) just holds: no probe into a queue;
    - a rise with no step from the window before looks like S growing, not a queue: one window
      at `drift_fraction` of the level re-measures S instead;
    - a quiet window lets L probe upward (+1, +1, +2, +4 ... while accepted). A probe is judged
      against the baseline and against the window before it, fails on a queue of our own >=
      `queue_tolerance` calls, returns to the level held, and backs off (doubling) up to
      `probe_backoff_max` windows, or `probe_backoff_rounds` round trips where windows are
      longer (not under half of `probe_backoff_max` windows, though). Each probe is a queue of
      one call for a window: 16 windows apart, that is a sixteenth of a call on average, and
      two targets probing make two of those. The cap in round trips keeps the time to notice
      a rise of C near 3 s at S = 100 ms when windows are long (one call at a time, say). An
      accepted probe halves the back-off, and holds `probe_rest` windows before the
      next: next to a neighbour the queue a probe makes often delays the neighbour's calls,
      not ours, and the neighbour's cut needs a window to show (probing again at once kept two
      targets swapping a call, a queue of one or two standing meanwhile);
    - every `remeasure_interval` seconds (the first after `first_remeasure`) one window runs
      at `remeasure_fraction` (3/4) of the level to re-sample S: below C once the level holds
      a queue of one call (up to 4/3 of C), and a third as dear as half the level (a quarter
      of the pace for 2/3 of the time). None below `remeasure_min_limit` (3/4 of 2 is one call
      at a time), and 2, not 1, from 3. The baseline may rise by at most `max_drift` per second;
    - a cut (or re-measurement) that leaves the round trip where it was shows it is S, not a
      queue: up to C the round trip is S whatever the limit, above C it scales with the limit.
      The baseline then takes the round trip at the lower limit, uncapped, and the level held
      comes back (after a cut for inflation, once two windows after it agree: the window that
      caused it may straddle a change of C). A rise of more than `verify_rise` is checked by a
      re-measurement at half the level `verify_after` seconds later: a neighbour ramping up
      fills the room a lower limit makes and looks just like S growing, and a baseline that
      took its queue for S would hold that queue for good. A check that confirms the rise is
      checked again twice as late (2, 4, 8 .. s, up to `remeasure_interval`): the neighbour
      may still be filling every slot we free;
    - 109 (OVERLOAD) halves L at most once per round trip; a cluster of 103/5xx (ERROR, >= 2 and
      >= 10% of the replies since the last change) cuts it by a quarter, once per change; slow
      start then climbs back to the level held before.
    """

    def __init__(
        self,
        *,
        max_limit: int = 32,
        min_limit: int = 1,
        initial_limit: int = 1,
        confidence: float = 2.0,
        queue_tolerance: float = 0.4,
        hold_tolerance: float = 0.5,
        quiet_tolerance: float = 0.4,
        min_window: int = 8,
        min_rounds: int = 2,
        max_window: int = 256,
        start_window: int = 8,
        initial_spread: float = 0.2,
        baseline_gain: float = 0.25,
        learn_z: float = 2.0,
        probe_backoff_max: int = 16,
        probe_rest: int = 1,
        probe_backoff_rounds: int = 32,
        remeasure_interval: float = 30.0,
        first_remeasure: float = 5.0,
        remeasure_jump: float = 0.3,
        verify_rise: float = 0.3,
        verify_after: float = 2.0,
        remeasure_min_limit: int = 3,
        remeasure_fraction: float = 0.75,
        drift_limit: float = 0.25,
        drift_fraction: float = 0.75,
        max_drift: float = 0.02,
        overload_backoff: float = 0.5,
        error_backoff: float = 0.75,
        statistic: str = "mean",
        rng: random.Random | None = None,
    ) -> None:
        if not 1 <= min_limit <= max_limit:
            raise ValueError("need 1 <= min_limit <= max_limit")
        if min_window < 3 or max_window < min_window:
            raise ValueError("need 3 <= min_window <= max_window")
        if statistic not in ("mean", "median"):
            raise ValueError('statistic must be "mean" or "median"')
        self.max_limit = max_limit
        self.min_limit = min_limit
        self.confidence = confidence
        self.queue_tolerance = queue_tolerance
        self.hold_tolerance = hold_tolerance
        self.quiet_tolerance = quiet_tolerance
        self.min_window = min_window
        self.min_rounds = min_rounds
        self.max_window = max_window
        self.start_window = max(3, start_window)
        self.baseline_gain = baseline_gain
        self.learn_z = learn_z
        self.probe_backoff_max = max(1, probe_backoff_max)
        self.probe_rest = probe_rest
        self.probe_backoff_rounds = probe_backoff_rounds
        self.remeasure_interval = remeasure_interval
        self.first_remeasure = first_remeasure
        self.remeasure_jump = remeasure_jump
        self.verify_rise = verify_rise
        self.verify_after = verify_after
        self.remeasure_min_limit = remeasure_min_limit
        self.remeasure_fraction = remeasure_fraction
        self.drift_limit = drift_limit
        self.drift_fraction = drift_fraction
        self.max_drift = max_drift
        self.overload_backoff = overload_backoff
        self.error_backoff = error_backoff
        self.statistic = statistic
        self._rng = rng or random.Random()

        self._limit = self._clamp(initial_limit)
        self._level = self._limit  # the accepted level: where probes and re-measures return
        self._mode = _Mode.START
        self._epoch = -math.inf  # samples sent before this belong to an older limit
        self._oks = self._errors = 0  # outcomes since the epoch
        self._last_error_cut = -math.inf
        self._rtts: list[float] = []
        self._used: list[int] = []
        self._baseline: float | None = None
        self._baseline_n = 0.0  # the baseline's weight, in samples
        self._baseline_at = 0.0  # when the baseline last moved
        self._spread = max(_MIN_SPREAD, initial_spread)  # relative noise of one round trip
        self._last_center: float | None = None
        self._ref: tuple[float, int] | None = None  # (center, n) of the last quiet window
        self._ssthresh = max_limit  # slow start stops here
        self._successes = 0  # probes accepted in a row
        self._backoff = 1  # windows to hold after the next failed probe
        self._skip = 0  # windows to hold before the next probe
        self._cut_center = 1.0  # the window that caused the last cut
        self._cut_from = self._limit
        self._chain_from = self._limit  # the level held before the last run of cuts
        self._flat = 0  # windows after a cut whose round trip did not fall with the limit
        self._next_remeasure = math.inf
        self._verifying = False  # the re-measurement under way checks a rise of the baseline
        self._verify_due = False  # the next re-measurement is such a check
        self._verify_wait = verify_after  # seconds from a baseline rise to its check
        self._queued_to: float | None = None  # see `_start_remeasure`
        self.counts: dict[str, int] = {
            "windows": 0,
            "probes": 0,
            "probes_failed": 0,
            "cuts": 0,
            "remeasures": 0,
            "rebaselines": 0,
            "error_cuts": 0,
            "s_grew": 0,
            "verifies": 0,
        }

    # -- reading --------------------------------------------------------------------------------

    @property
    def limit(self) -> int:
        """The concurrency limit in force."""
        return self._limit

    @property
    def baseline(self) -> float | None:
        """The baseline (unqueued) round trip in seconds, once measured."""
        return self._baseline

    def snapshot(self) -> dict[str, Any]:
        """The policy's state for logs and benchmarks."""
        return {
            "limit": self._limit,
            "mode": self._mode.value,
            "baseline_rtt": self._baseline,
            "recent_rtt": self._last_center,
            "rtt_noise": self._spread,
            **self.counts,
        }

    # -- feeding --------------------------------------------------------------------------------

    def on_sample(
        self,
        now: float,
        rtt: float,
        signal: Signal,
        in_flight: int,
        sent_at: float | None = None,
    ) -> int:
        """Account one finished call; returns the (possibly new) limit.

        `in_flight` is the number of calls in flight when this one was sent, itself included;
        `sent_at` defaults to ``now - rtt``.
        """
        if sent_at is None:
            sent_at = now - rtt
        if signal in (Signal.IGNORE, Signal.CONNECT_FAILED):
            return self._limit
        if signal is Signal.OVERLOAD:
            # A 109 can come back after a minute in the server's queue, long after the limit
            # it was sent under: cut at most once per round trip, whenever it was sent.
            if now - self._last_error_cut >= 2.0 * (self._last_center or self._baseline or 0.1):
                self._error_cut(now, self.overload_backoff)
            return self._limit
        if sent_at < self._epoch:
            return self._limit  # sent under an older limit: says nothing about this one
        if signal is Signal.ERROR:
            # One 103 can be a fault unrelated to load; a cluster of them is not.
            self._errors += 1
            if self._errors >= 2 and self._errors * 10 >= self._errors + self._oks:
                self._error_cut(now, self.error_backoff)
            return self._limit
        self._oks += 1
        if not rtt > 0:
            return self._limit
        self._rtts.append(rtt)
        self._used.append(in_flight)
        n = len(self._rtts)
        if n >= self._target() or (self._checkpoint(n) and self._gross(n)):
            self._close(now)
        return self._limit

    def resume(self, now: float) -> None:
        """Start a fresh window (after an outage): nothing sent before `now` counts.

        A re-measurement that fell due meanwhile waits a little: first, back to full speed.
        """
        self._new_window(now, changed=True)
        self._next_remeasure = max(self._next_remeasure, now + self.first_remeasure)

    # -- windows --------------------------------------------------------------------------------

    def _clamp(self, limit: int) -> int:
        return max(self.min_limit, min(self.max_limit, limit))

    def _window_for(self, level: int) -> int:
        """Samples needed to tell `level` from `level + 1` (a queue of one) at `confidence`."""
        n = 2.0 * (self.confidence * self._spread * 2.0 * level) ** 2
        # At least `min_rounds` round trips of every caller: in-step callers cover every phase.
        floor = max(self.min_window, self.min_rounds * level)
        return max(floor, min(self.max_window, math.ceil(n)))

    def _backoff_windows(self) -> int:
        """Windows to hold after a failed probe: the back-off, capped at `probe_backoff_rounds`
        round trips of the level held (but never under half of `probe_backoff_max` windows)."""
        rounds = self._window_for(self._level) / max(1, self._level)
        cap = max(self.probe_backoff_max // 2, int(self.probe_backoff_rounds / rounds))
        return max(1, min(self._backoff, cap))

    def _target(self) -> int:
        if self._mode is _Mode.START:
            return self.start_window
        if self._mode is _Mode.SLOW_START:
            # Slow start only needs to see gross inflation; an overshoot is cut in one step.
            return max(self.min_window // 2, self._limit, self._window_for(self._limit) // 4)
        if self._mode is _Mode.REMEASURE:
            # The baseline must be good to a quarter of the step a probe makes at the level.
            n = math.ceil((4.0 * self._level * self._spread) ** 2)
            floor = max(self.min_window, self.min_rounds * self._limit)
            return max(floor, min(self.max_window, n))
        return self._window_for(self._limit)

    def _checkpoint(self, n: int) -> bool:
        """n is one, two, four .. rounds of the limit: worth an early look."""
        k, rest = divmod(n, max(self.min_window, self._limit))
        return rest == 0 and k & (k - 1) == 0

    def _new_window(self, now: float, *, changed: bool) -> None:
        self._rtts = []
        self._used = []
        if changed:
            self._epoch = now
            self._oks = self._errors = 0

    def _set(self, now: float, limit: int, mode: _Mode) -> None:
        limit = self._clamp(limit)
        changed = limit != self._limit
        self._limit = limit
        self._mode = mode
        if mode is not _Mode.REMEASURE:
            self._verifying = False
        self._new_window(now, changed=changed)

    def _usage(self) -> tuple[float, bool]:
        """(concurrency used, whether the limit was the bottleneck) over the window.

        Callers often move in step (a burst of replies, then a burst of sends at 1, 2 .. L in
        flight), so the limit counts as reached when a quarter of the rounds reached it.
        """
        at_limit = sum(1 for u in self._used if u >= self._limit)
        if at_limit * self._limit * 4 >= len(self._used):
            return float(self._limit), True
        return float(min(self._limit, max(self._used))), False

    def _sigma(self, n: float, ref_n: float) -> float:
        """Standard deviation of the ratio of two window centers of `n` and `ref_n` samples."""
        return self._spread * math.sqrt(1.0 / n + 1.0 / ref_n)

    def _queue_estimate(
        self,
        center: float,
        used: float,
        ref: float,
        ref_n: float,
        n: int,
        z: float,
        tolerance: float | None = None,
    ) -> float | None:
        """The ideal concurrency if the window shows our own queue >= tolerance, else None.

        Vegas' rule: our share of the server queue is ``used * (1 - ref / center)``; it counts
        once the inflation is significant at `z` standard errors.
        """
        tolerance = self.queue_tolerance if tolerance is None else tolerance
        ratio = center / ref
        ideal = used / ratio
        if used - ideal >= tolerance and ratio - 1.0 >= z * self._sigma(n, ref_n):
            return ideal
        return None

    def _gross(self, n: int) -> bool:
        """Early close: the window is already clearly inflated."""
        if self._baseline is None or self._mode in (_Mode.START, _Mode.REMEASURE):
            return False
        center, _ = _summary(self._rtts, self.statistic)
        used, _ = self._usage()
        z = self.confidence + 1.0
        tol = self.hold_tolerance if self._mode is _Mode.HOLD else None
        est = self._queue_estimate(center, used, self._baseline, self._baseline_n, n, z, tol)
        return est is not None

    def _close(self, now: float) -> None:
        n = len(self._rtts)
        center, spread = _summary(self._rtts, self.statistic)
        used, saturated = self._usage()
        self._last_center = center
        self.counts["windows"] += 1
        mode = self._mode
        if mode is _Mode.START or self._baseline is None:
            self._rebaseline(now, center, n)
            self._learn_spread(spread)
            self._ref = (center, n)
            # The first baseline comes from one call at a time, possibly on a server others
            # keep busy: check it soon, at the level slow start finds.
            self._next_remeasure = now + self.first_remeasure
            self._level = self._limit
            self._set(now, self._limit * 2 if saturated else self._limit, _Mode.SLOW_START)
            return
        if mode is _Mode.REMEASURE:
            self._close_remeasure(now, center, n, spread)
            return

        z = self.confidence
        # At a level already held the tolerance may differ from a probe's (see the class doc).
        tol = self.hold_tolerance if mode is _Mode.HOLD else None
        est_abs = self._queue_estimate(center, used, self._baseline, self._baseline_n, n, z, tol)
        est_rel = None
        step = True  # a significant rise from the window before
        if self._ref is not None:
            ref, ref_n = self._ref
            est_rel = self._queue_estimate(center, used, ref, ref_n, n, z)
            step = center / ref - 1.0 > z * self._sigma(n, ref_n)
        if mode is _Mode.SLOW_START:
            ests = [e for e in (est_abs, est_rel) if e is not None]
            self._close_slow_start(now, center, n, spread, min(ests, default=None), saturated)
        elif mode is _Mode.PROBE:
            self._close_probe(now, center, n, spread, est_abs, est_rel, saturated)
        elif mode is _Mode.CHECK:
            self._close_check(now, center, n, spread, est_abs)
        else:
            queued = self._queue_estimate(
                center, used, self._baseline, self._baseline_n, n, z, self.quiet_tolerance
            )
            self._close_hold(now, center, n, spread, est_abs, step, saturated, queued is not None)

    def _close_slow_start(
        self, now: float, center: float, n: int, spread: float, est: float | None, saturated: bool
    ) -> None:
        if est is not None:
            self._ssthresh = self.max_limit
            self._successes = 0
            self._skip = 1
            self._cut(now, est, _Mode.HOLD)
            return
        self._learn(now, center, n, spread)
        self._ref = (center, n)
        self._level = self._limit
        if not saturated:
            self._new_window(now, changed=False)
        elif self._limit < min(self.max_limit, self._ssthresh):
            self._set(now, min(self._limit * 2, self._ssthresh), _Mode.SLOW_START)
        else:
            self._ssthresh = self.max_limit
            self._skip = 0
            self._set(now, self._limit, _Mode.HOLD)

    def _close_hold(
        self,
        now: float,
        center: float,
        n: int,
        spread: float,
        est: float | None,
        step: bool,
        saturated: bool,
        queued: bool,
    ) -> None:
        assert self._baseline is not None
        if est is None and queued:
            # A queue of ours under the tolerance (a neighbour's, mostly): too small to give up
            # a call for, too big to probe into or to learn the baseline from.
            self._set(now, self._limit, _Mode.HOLD)
        elif est is None:
            self._learn(now, center, n, spread)
            self._ref = (center, n)
            self._after_quiet(now, saturated)
        elif self._limit <= self.min_limit:
            # Nothing left to cut: what holds the round trip up is not our queue.
            self._rebaseline(now, center, n)
            self._ref = (center, n)
            self._new_window(now, changed=False)
        elif not step and center / self._baseline - 1.0 < self.drift_limit:
            # Above the baseline but no slower than the last window: S crept up (or the
            # baseline is stale), or a queue stands. Re-measure before cutting anything.
            self._start_remeasure(now, self.drift_fraction, queued_to=est)
        else:
            self._successes = 0
            self._first_cut(now, center, est)

    def _close_check(
        self, now: float, center: float, n: int, spread: float, est: float | None
    ) -> None:
        assert self._baseline is not None
        if est is None:
            # The round trip came down with the limit: it was a queue, and it is gone.
            self._learn(now, center, n, spread)
            self._ref = (center, n)
            self._skip = 0
            self._after_quiet(now, saturated=True)
            return
        if not self._dropped(center):
            # Had the cut removed a queue of ours, the round trip would have fallen with the
            # limit: up to C it is S whatever the limit, above C it scales with it. It did not:
            # the round trip is S (it grew). The window that caused the cut may straddle the
            # change, though (C fell during it, say), so this needs two windows after it.
            self._flat += 1
            if self._flat >= 2 or self._limit <= self.min_limit:
                self._level = max(self._level, self._chain_from)
                self._s_grew(now, center, n, spread)
                return
        else:
            self._flat = 0
        if self._limit <= self.min_limit:
            self._rebaseline(now, center, n)
            self._ref = (center, n)
            self._set(now, self._limit, _Mode.HOLD)
        else:
            self._cut_center = center
            self._cut_from = self._limit
            self._cut(now, est, _Mode.CHECK)

    def _close_probe(
        self,
        now: float,
        center: float,
        n: int,
        spread: float,
        est_abs: float | None,
        est_rel: float | None,
        saturated: bool,
    ) -> None:
        if est_abs is not None and est_rel is None and self._ref:
            # Inflated against the baseline, yet with no queue against the window before the
            # probe: the baseline is stale (S grew), not the probe too much. Re-measure; if
            # the round trip stays where the probe had it, the probe level is kept.
            self._start_remeasure(now, self.drift_fraction)
            return
        ests = [e for e in (est_abs, est_rel) if e is not None]
        if ests:
            self.counts["probes_failed"] += 1
            self._successes = 0
            self._backoff = min(self.probe_backoff_max, self._backoff * 2)
            self._skip = self._backoff_windows()
            # Back to somewhere between the level held before and the probe: an estimate just
            # under the level is the probe's own noise, and whether the level itself is too high
            # is for the windows at that level to say; one far under it is news (C dropped).
            est = min(ests)
            if est > self._level - 1:
                self._cut(now, max(self._level, est), _Mode.HOLD)
                return
            # Far under the level: C fell, or S grew during the probe. The windows after the
            # cut tell which (see `_close_check`).
            self._first_cut(now, center, est)
            return
        if not saturated:
            # The application did not use the extra slot: the probe proved nothing.
            self._skip = self._backoff_windows()
            self._set(now, self._level, _Mode.HOLD)
            return
        self._learn(now, center, n, spread)
        self._ref = (center, n)
        self._successes += 1
        self._backoff = max(1, self._backoff // 2)
        self._skip = self.probe_rest
        self._after_quiet(now, saturated)

    def _close_remeasure(self, now: float, center: float, n: int, spread: float) -> None:
        assert self._baseline is not None
        if not self._dropped(center):
            # No faster at the reduced limit than at the level: the round trip is S, all of it
            # (a queue of ours would have shrunk with the limit).
            self._s_grew(now, center, n, spread)
            return
        if center > self._baseline * (1.0 + self.remeasure_jump) and self._limit > self.min_limit:
            # Much slower even at the reduced level, but falling with it: more likely a queue
            # than S; go lower.
            self._cut_center = center
            self._cut_from = self._limit
            self._set(now, self._limit // 2, _Mode.REMEASURE)
            return
        self._rebaseline(now, center, n)
        self._learn_spread(spread)
        self._ref = None
        self._schedule_next_remeasure(now)
        if self._queued_to is not None:
            # The baseline held, so the standing rise at the level was a queue: shed it.
            self.counts["cuts"] += 1
            self._level = self._clamp(min(self._level - 1, _round(self._queued_to)))
        self._set(now, self._level, _Mode.HOLD)

    # -- moves ----------------------------------------------------------------------------------

    def _first_cut(self, now: float, center: float, ideal: float) -> None:
        """The first of a run of cuts for a queue: remember the window that caused it and the
        level held before it (`_close_check` compares the windows after with them)."""
        self._cut_center = center
        self._cut_from = self._limit
        self._chain_from = self._level
        self._flat = 0
        self._cut(now, ideal, _Mode.CHECK)

    def _cut(self, now: float, ideal: float, mode: _Mode) -> None:
        """Down to the ideal level (at least one less), as the new accepted level."""
        self.counts["cuts"] += 1
        new = self._clamp(min(self._limit - 1, _round(ideal)))
        self._level = new
        self._set(now, new, mode)

    def _after_quiet(self, now: float, saturated: bool) -> None:
        """A quiet window at the accepted level: re-measure, probe, or keep holding."""
        self._level = self._limit
        if now >= self._next_remeasure and self._limit < self.remeasure_min_limit:
            # 3/4 (or half) of 1 or 2 is one call at a time: a window at half speed. Up to C
            # the round trip is S at any limit, and a rise that a cut does not shrink is taken
            # for S (`_close_check`), so skip it.
            self._next_remeasure = now + self._remeasure_delay()
        if now >= self._next_remeasure:
            self._next_remeasure = math.inf
            self._start_remeasure(now, 0.5 if self._verify_due else self.remeasure_fraction)
            self._verifying = self._verify_due
            self._verify_due = False
        elif saturated and self._skip <= 0 and self._limit < self.max_limit:
            step = 1 if self._successes < 2 else 2 ** (self._successes - 1)
            self.counts["probes"] += 1
            self._set(now, self._limit + step, _Mode.PROBE)
        else:
            if saturated:
                self._skip -= 1
            self._set(now, self._limit, _Mode.HOLD)

    def _start_remeasure(self, now: float, fraction: float, queued_to: float | None = None) -> None:
        """One window at `fraction` of the level. `queued_to`: the level the window before
        asked for, if the re-measurement finds the baseline right (the queue was real)."""
        self.counts["remeasures"] += 1
        self._queued_to = queued_to
        # The window just closed is what the re-measurement's round trip is compared with.
        self._cut_center = self._last_center or self._baseline or 1.0
        self._cut_from = self._limit
        # Not under 2 from a level above it: half of 3 is 2, not 1. A window at a third of the
        # pace is dear when calls are long (8 calls of 250 ms one at a time), and 2 of 3
        # already shows a queue of one going.
        reduced = max(math.floor(self._level * fraction), min(self._level - 1, 2))
        self._set(now, reduced, _Mode.REMEASURE)

    def _dropped(self, center: float) -> bool:
        """Whether the round trip fell with the limit since the window at `_cut_from`.

        A queue of ours scales the round trip with the limit (to limit / cut_from of what it
        was); this asks for at least half of that fall.
        """
        if self._limit >= self._cut_from:
            return True
        # It cannot fall under the baseline, though: a queue of one call at L = 5 takes the
        # round trip from 9/8 S to S at any limit up to C, not to 3/5 of 9/8 S at 3.
        floor = self._baseline or 0.0
        expected = max(floor, self._cut_center * self._limit / self._cut_from)
        return center < self._cut_center - 0.5 * (self._cut_center - expected)

    def _s_grew(self, now: float, center: float, n: int, spread: float) -> None:
        """A lower limit left the round trip where it was: it is S. Take it as the baseline
        (no drift cap: this is a measurement, not a guess) and go back to the level held."""
        self.counts["s_grew"] += 1
        assert self._baseline is not None
        rose = center > self._baseline * (1.0 + self.verify_rise)
        self._rebaseline(now, center, n, capped=False)
        self._learn_spread(spread)
        self._ref = None
        self._level = max(self._level, self._cut_from)
        if rose and not self._verifying:
            # A neighbour ramping up fills the room a lower limit makes, which looks just like
            # S growing. Check soon, at half the level: a queue shows as a round trip falling
            # with the limit.
            self._verify_wait = self.verify_after
            self._schedule_verify(now)
        else:
            self._schedule_next_remeasure(now)
        self._set(now, self._level, _Mode.HOLD)

    def _schedule_next_remeasure(self, now: float) -> None:
        """After a re-measurement (or a cut) that settled the baseline. One that checked a risen
        baseline and found it right is checked again, twice as late, up to the regular interval:
        a neighbour may have been filling every slot we freed all the same."""
        if self._verifying:
            self._verify_wait *= 2.0
            if self._verify_wait < self.remeasure_interval:
                self._schedule_verify(now)
                return
            self._next_remeasure = now + self._remeasure_delay()
        elif self._next_remeasure == math.inf:
            self._next_remeasure = now + self._remeasure_delay()

    def _schedule_verify(self, now: float) -> None:
        self.counts["verifies"] += 1
        self._next_remeasure = now + self._verify_wait * self._rng.uniform(0.9, 1.1)
        self._verify_due = True

    def _error_cut(self, now: float, factor: float) -> None:
        self.counts["error_cuts"] += 1
        self._last_error_cut = now
        if self._mode is not _Mode.SLOW_START:
            # Remember the level: errors say "not now", not "less capacity".
            self._ssthresh = self._level
        self._successes = 0
        new = self._clamp(math.floor(self._limit * factor))
        self._level = new
        self._set(now, new, _Mode.START if self._baseline is None else _Mode.SLOW_START)
        self._new_window(now, changed=True)  # even when the limit could not go lower

    # -- learning -------------------------------------------------------------------------------

    def _remeasure_delay(self) -> float:
        return self.remeasure_interval * self._rng.uniform(0.9, 1.1)

    def _learn_spread(self, spread: float) -> None:
        spread = max(_MIN_SPREAD, min(_MAX_SPREAD, spread))
        self._spread += _SPREAD_GAIN * (spread - self._spread)

    def _learn(self, now: float, center: float, n: int, spread: float) -> None:
        """Fold a quiet window into the baseline and the noise estimate.

        A window more than `learn_z` standard errors above the baseline is left out, and a
        faster one counts for at most that much: a queue (ours or a neighbour's) must not slide
        into the baseline, and one fast window must not drag it down.
        """
        assert self._baseline is not None
        g = self.baseline_gain
        limit = self.learn_z * self._sigma(n, self._baseline_n) * self._baseline
        if center - self._baseline <= limit:
            self._move_baseline(now, self._baseline + g * max(-limit, center - self._baseline))
            self._baseline_n = min(_MAX_BASELINE_WEIGHT, self._baseline_n * (1.0 - g) + n)
        self._learn_spread(spread)

    def _rebaseline(self, now: float, center: float, n: int, *, capped: bool = True) -> None:
        self.counts["rebaselines"] += 1
        self._move_baseline(now, center, capped=capped)
        self._baseline_n = float(n)

    def _move_baseline(self, now: float, value: float, *, capped: bool = True) -> None:
        """Set the baseline; a rise is capped at `max_drift` per second since the last move.

        S grows slowly as the database grows; a faster rise is a queue (a neighbour filling the
        room a re-measurement made), and a baseline that swallowed it would stop us yielding.
        """
        if self._baseline is None or not capped:
            self._baseline = value
        else:
            elapsed = max(0.0, now - self._baseline_at)
            self._baseline = min(value, self._baseline * (1.0 + self.max_drift * elapsed))
        self._baseline_at = now


class FixedPolicy:
    """The rule for a pinned `concurrency` setting: the limit never moves."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self._limit = limit
        self._last_rtt: float | None = None

    @property
    def limit(self) -> int:
        """The pinned limit."""
        return self._limit

    def on_sample(
        self,
        now: float,
        rtt: float,
        signal: Signal,
        in_flight: int,
        sent_at: float | None = None,
    ) -> int:
        """Remember the round trip for `snapshot`; the limit stays."""
        if signal is Signal.OK:
            self._last_rtt = rtt
        return self._limit

    def resume(self, now: float) -> None:
        """Nothing to reset."""

    def snapshot(self) -> dict[str, Any]:
        """The pinned limit and the last round trip."""
        return {
            "limit": self._limit,
            "mode": "fixed",
            "baseline_rtt": None,
            "recent_rtt": self._last_rtt,
        }


class _Policy(Protocol):
    @property
    def limit(self) -> int: ...

    def on_sample(
        self, now: float, rtt: float, signal: Signal, in_flight: int, sent_at: float | None = None
    ) -> int: ...

    def resume(self, now: float) -> None: ...

    def snapshot(self) -> dict[str, Any]: ...


class Breaker:
    """Circuit breaker on connection failures. Pure: every method takes the time.

    After `failures_to_open` consecutive CONNECT_FAILED results it opens: one probe call at a
    time, each after a wait drawn uniformly from [0, min(max_wait, base_wait * 2**attempt)].
    The first answer of any kind (OK, OVERLOAD, ERROR) closes it.
    """

    def __init__(
        self,
        *,
        failures_to_open: int = 3,
        base_wait: float = 0.25,
        max_wait: float = 2.0,
        rng: random.Random | None = None,
    ) -> None:
        if failures_to_open < 1:
            raise ValueError("failures_to_open must be at least 1")
        self.failures_to_open = failures_to_open
        self.base_wait = base_wait
        self.max_wait = max_wait
        self._rng = rng or random.Random()
        self._failures = 0
        self._open = False
        self._attempt = 0
        self._probe_out = False
        self._next_probe = 0.0
        self.opened = 0  # how many times it opened

    @property
    def is_open(self) -> bool:
        """True while calls are held back."""
        return self._open

    @property
    def state(self) -> str:
        """One of "closed", "open" (waiting to probe) and "probing"."""
        if not self._open:
            return "closed"
        return "probing" if self._probe_out else "open"

    @property
    def next_probe_at(self) -> float | None:
        """When the next probe may go, while open."""
        return self._next_probe if self._open else None

    def admit(self, now: float) -> tuple[bool, float | None]:
        """While open: (True, None) makes the caller the probe; else (False, time to retry or None
        to wait for a release). Always (True, None) when closed."""
        if not self._open:
            return True, None
        if self._probe_out:
            return False, None
        if now < self._next_probe:
            return False, self._next_probe
        self._probe_out = True
        return True, None

    def on_result(self, now: float, signal: Signal, probe: bool) -> bool:
        """Account a finished call; True if this closed the breaker."""
        if probe:
            self._probe_out = False
        if signal is Signal.IGNORE:
            return False
        if signal is Signal.CONNECT_FAILED:
            self._failures += 1
            if self._open:
                if probe:
                    self._attempt += 1
                    self._next_probe = now + self._wait()
            elif self._failures >= self.failures_to_open:
                self._open = True
                self.opened += 1
                self._attempt = 0
                self._next_probe = now + self._wait()
            return False
        self._failures = 0
        if self._open:
            self._open = False
            return True
        return False

    def _wait(self) -> float:
        cap = min(self.max_wait, self.base_wait * 2.0 ** min(self._attempt, 60))
        return self._rng.uniform(0.0, cap)


class LimiterCore:
    """Policy + breaker + in-flight count, without threads or a clock of its own."""

    def __init__(self, policy: _Policy, breaker: Breaker | None = None) -> None:
        self.policy = policy
        self.breaker = breaker or Breaker()
        self._in_flight = 0
        self._ids = itertools.count(1)
        self._outstanding: set[int] = set()

    @property
    def limit(self) -> int:
        """The concurrency limit in force."""
        return self.policy.limit

    @property
    def in_flight(self) -> int:
        """Calls admitted and not yet released."""
        return self._in_flight

    def try_acquire(self, now: float) -> Permit | float | None:
        """A Permit if a call may start now; else the time to try again (breaker wait) or None
        (wait for a release)."""
        if self._in_flight >= self.policy.limit:
            return None
        admitted, retry_at = self.breaker.admit(now)
        if not admitted:
            return retry_at
        self._in_flight += 1
        permit = Permit(next(self._ids), now, self._in_flight, probe=self.breaker.is_open)
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
            self.policy.resume(now)
        self.policy.on_sample(now, rtt_s, signal, permit.in_flight, permit.sent_at)

    def snapshot(self) -> dict[str, Any]:
        """The policy's snapshot plus in-flight count and breaker state."""
        return {
            **self.policy.snapshot(),
            "in_flight": self._in_flight,
            "breaker": self.breaker.state,
        }


class _ThreadSafeLimiter:
    """A `LimiterCore` behind a condition variable: safe to share between threads."""

    def __init__(self, core: LimiterCore, clock: Callable[[], float]) -> None:
        self._core = core
        self._clock = clock
        self._cond = threading.Condition()

    def acquire(self, timeout: float | None = None) -> Permit | None:
        """Block until a call may start (under the limit; the one probe if the breaker is open);
        None if `timeout` seconds pass first."""
        with self._cond:
            deadline = None if timeout is None else self._clock() + timeout
            while True:
                now = self._clock()
                got = self._core.try_acquire(now)
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
        """Report how the call admitted by `permit` ended; wakes waiting callers."""
        with self._cond:
            self._core.release(self._clock(), permit, rtt_s, signal)
            self._cond.notify_all()

    @property
    def limit(self) -> int:
        """The current concurrency limit."""
        with self._cond:
            return self._core.limit

    @property
    def in_flight(self) -> int:
        """Calls admitted and not yet released."""
        with self._cond:
            return self._core.in_flight

    def snapshot(self) -> dict[str, Any]:
        """Limit, in-flight, baseline and recent round trip, mode, breaker state and counters."""
        with self._cond:
            return self._core.snapshot()


class AdaptiveLimiter(_ThreadSafeLimiter):
    """The thread-safe adaptive limiter: one per PBX, shared by every stream and endpoint."""

    def __init__(
        self,
        *,
        max_limit: int = 32,
        min_limit: int = 1,
        initial_limit: int = 1,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        failures_to_open: int = 3,
        breaker_base_wait: float = 0.25,
        breaker_max_wait: float = 2.0,
        **policy_knobs: Any,
    ) -> None:
        rng = rng or random.Random()
        policy = GradientPolicy(
            max_limit=max_limit,
            min_limit=min_limit,
            initial_limit=initial_limit,
            rng=rng,
            **policy_knobs,
        )
        breaker = Breaker(
            failures_to_open=failures_to_open,
            base_wait=breaker_base_wait,
            max_wait=breaker_max_wait,
            rng=rng,
        )
        super().__init__(LimiterCore(policy, breaker), clock)


class FixedLimiter(_ThreadSafeLimiter):
    """A pinned concurrency limit (the `concurrency` setting); still has the circuit breaker."""

    def __init__(
        self,
        limit: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        failures_to_open: int = 3,
        breaker_base_wait: float = 0.25,
        breaker_max_wait: float = 2.0,
    ) -> None:
        breaker = Breaker(
            failures_to_open=failures_to_open,
            base_wait=breaker_base_wait,
            max_wait=breaker_max_wait,
            rng=rng,
        )
        super().__init__(LimiterCore(FixedPolicy(limit), breaker), clock)


_BREAKER_KNOBS = ("clock", "rng", "failures_to_open", "breaker_base_wait", "breaker_max_wait")


def make_limiter(
    max_concurrency: int = 32, concurrency: int | None = None, **kw: Any
) -> AdaptiveLimiter | FixedLimiter:
    """The limiter for the settings: fixed at `concurrency` if set, else adaptive up to
    `max_concurrency`. Extra keywords go to the limiter (fixed ones take only breaker knobs)."""
    if concurrency is not None:
        fixed_kw = {k: v for k, v in kw.items() if k in _BREAKER_KNOBS}
        return FixedLimiter(concurrency, **fixed_kw)
    return AdaptiveLimiter(max_limit=max_concurrency, **kw)
