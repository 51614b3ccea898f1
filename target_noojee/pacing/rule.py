"""The decision rule: a concurrency limit from closed windows, 109s and error-rate rises.

Our own calls waiting at the PBX follow from Little's law, whatever the queue order, the noise of
service times or the distance to the PBX: with n calls in flight and a mean round trip `rtt`
against a baseline `b` (the round trip of a call that does not wait),

    queue  =  throughput * (rtt - b)  =  n * (1 - b / rtt)

Filling C slots takes about C * (S + L) / S calls in flight (L: the network and the client's
own delay), and the estimate stays near zero all the way up to there. The rule holds that
queue at `target_queue`:

- start: double the limit every round trip while no queue shows, then cut to the knee (no
  lower than the calls a round carried without a queue);
- each window moves the limit by `gain` x (target - queue): a window's noise averages out over
  the next ones, and the queue averages the target. A window far over it (C fell) is cut to at
  once; quiet windows in a row grow faster each time (C rose);
- every `remeasure_s` (sooner at first) one window runs at `remeasure_fraction` of the limit,
  under the knee, to re-measure the baseline (S grows with the PBX's database); while sending
  fewer shortens the round trip a queue stood above, maybe another client's, and the next window
  goes a step lower: a baseline never rises on a reading that sending fewer sped up;
- a rise of the error rate (not its presence: a PBX may fail a few percent of calls for ever)
  cuts by `error_cut`, a 109 by `overload_cut` once per round trip; the limit then doubles back
  to where it was while the windows stay quiet.
"""

from __future__ import annotations

import math

from target_noojee.pacing.baseline import Baseline
from target_noojee.pacing.tuning import Tuning
from target_noojee.pacing.window import ErrorRate, WindowStats

_MAX_DEPTH = 2  # steps of a re-measurement under the limit (0.75 and 0.56 of it)


def _se(a: WindowStats, rel_sd: float, b: WindowStats) -> float:
    """Standard error of the difference of two windows' mean round trips, in seconds."""
    return rel_sd * math.sqrt(a.mean_rtt**2 / a.samples + b.mean_rtt**2 / b.samples)


class Rule:
    """The adaptive limit. Pure and not thread-safe: the limiter feeds it closed windows."""

    def __init__(self, tuning: Tuning, *, max_limit: int, min_limit: int = 1) -> None:
        self.tuning = tuning
        self.max_limit = max_limit
        self.min_limit = min_limit
        self.value = self._clamp(float(tuning.initial_limit))
        self.baseline = Baseline()
        self.errors = ErrorRate()
        self.starting = True  # doubling every round trip
        self.remeasuring = False  # this window runs at the reduced limit
        self._depth = 0  # how many steps under the limit this re-measurement has gone
        self._above: WindowStats | None = None  # the window one step above this one
        self._next_remeasure: float | None = None
        self._remeasure_gap = 1.0
        self._quiet = 0  # windows under the target in a row
        self._quiet_peak = 0  # the start: the most calls in flight a round showed no queue at
        self._recover_to = 0.0  # where the limit stood before an error or overload cut
        self._last_overload = -math.inf
        self.last_queue: float | None = None
        self.counts = {"windows": 0, "remeasures": 0, "error_cuts": 0, "overload_cuts": 0}

    @property
    def limit(self) -> int:
        """The limit in calls."""
        limit = max(self.min_limit, min(self.max_limit, math.floor(self.value + 0.5)))
        if self.remeasuring:  # strictly under the limit, or it measures nothing new
            fraction = self.tuning.remeasure_fraction**self._depth
            reduced = math.floor(self.value * fraction + 0.5)
            return max(self.min_limit, min(limit - self._depth, reduced))
        return limit

    def _clamp(self, value: float) -> float:
        return max(float(self.min_limit), min(float(self.max_limit), value))

    def on_window(self, w: WindowStats, now: float) -> None:
        """Decide on a closed window."""
        t = self.tuning
        self.counts["windows"] += 1
        rise = self.errors.is_rise(w.errors, w.replies, t.confidence)
        self.errors.learn(w.errors, w.replies)
        if rise:
            self.on_error_rise()
            return
        if w.samples == 0:
            return  # nothing came back but errors, 109s or connection failures
        if self.remeasuring:
            self._remeasured(w)
            return
        if self.starting:
            if self._quiet_start(w):
                self.baseline.measure(w, t.confidence)
        else:
            self.baseline.observe(w, t.confidence)
        self._above = w
        b = self.baseline.value
        assert b is not None
        queue = w.in_flight * (1.0 - b / w.mean_rtt)
        self.last_queue = queue
        target = t.target_queue
        noise = w.in_flight * t.confidence * self.baseline.noise(w.samples)
        used = w.peak >= self.limit  # else the application sends fewer: nothing to learn
        if queue > target + max(1.0, noise, 0.25 * w.in_flight):
            # Far over: the in-flight count less the calls that waited is the knee.
            knee = w.in_flight - queue + target
            if self.starting:  # a round ago this many went out without a queue
                knee = max(knee, float(self._quiet_peak))
            else:  # C fell, or another client came: the baseline may have moved too
                self._next_remeasure, self._remeasure_gap = None, 1.0
            self.starting = False
            self._recover_to = 0.0
            self._quiet = 0
            self.value = self._clamp(knee)
        elif self.starting:
            if queue <= target:
                self._quiet_peak = max(self._quiet_peak, w.peak)
            if used:
                self.value = self._clamp(2.0 * self.value)
                self.starting = self.value < self.max_limit
        elif self.value < self._recover_to and queue < target + noise:
            self.value = self._clamp(min(2.0 * self.value, self._recover_to))
        elif used or queue > target:
            self._quiet = self._quiet + 1 if queue < target else 0
            step = t.gain * (target - queue) * 2.0 ** max(0, self._quiet - 2)
            self.value = self._clamp(self.value + min(step, max(1.0, self.value / 2.0)))
        self._schedule_remeasure(now)

    def _remeasured(self, w: WindowStats) -> None:
        """A window under the limit. If it is no faster than the window a step above it (less
        the target queue of ours that window held), sending fewer did not shorten the wait:
        its round trip is the baseline (S grew, the network changed, or a neighbour keeps a
        queue we cannot empty). If it is faster, a queue stood above and may stand here too
        (another client's, or ours at C = 1): one step further down tells; at the bottom the
        baseline may only fall."""
        above, confidence = self._above, self.tuning.confidence
        # Our own target queue above explains this much of a shorter round trip here.
        own = 1.0 - self.tuning.target_queue / above.in_flight if above is not None else 1.0
        shorter = above is not None and above.mean_rtt * own - w.mean_rtt > confidence * (
            _se(above, self.baseline.rel_sd, w)
        )
        if shorter and self._depth < _MAX_DEPTH and self.limit > self.min_limit:
            self._depth += 1
            self._above = w
            return
        self.remeasuring, self._depth = False, 0
        b = self.baseline.value
        if not shorter:
            self.baseline.measure(w, confidence)
        elif b is not None and w.mean_rtt < b:  # the least queue we could see: a fall only
            self.baseline.measure(w, confidence / 2.0)

    def _quiet_start(self, w: WindowStats) -> bool:
        """A round of the start that agrees with the baseline so far (or is the first)."""
        b = self.baseline.value
        if b is None:
            return True
        noise = self.tuning.confidence * self.baseline.noise(w.samples)
        return w.mean_rtt <= b * (1.0 + noise)

    def _schedule_remeasure(self, now: float) -> None:
        if self.starting or self.limit < 2:
            return
        if self._next_remeasure is None:
            self._next_remeasure = now + self._remeasure_gap
        elif now >= self._next_remeasure:
            self.remeasuring, self._depth = True, 1
            self.counts["remeasures"] += 1
            # Early re-measurements make a baseline of few samples precise quickly.
            self._remeasure_gap = min(self.tuning.remeasure_s, 2.0 * self._remeasure_gap)
            self._next_remeasure = now + self._remeasure_gap

    # -- error signals -----------------------------------------------------------------------

    def on_error_rise(self) -> None:
        """103s or lost replies above their background rate: the PBX is struggling."""
        self.counts["error_cuts"] += 1
        self._back_off(self.tuning.error_cut)

    def on_overload(self, now: float) -> None:
        """A 109: the server queue overflowed or an import runs. Once per round trip."""
        if now - self._last_overload < (self.baseline.value or 0.1):
            return
        self._last_overload = now
        self.counts["overload_cuts"] += 1
        self._back_off(self.tuning.overload_cut)

    def _back_off(self, factor: float) -> None:
        self._recover_to = max(self._recover_to, self.value)
        self.starting = self.remeasuring = False
        self._depth = 0
        self._quiet = 0
        self.value = self._clamp(self.value * factor)
