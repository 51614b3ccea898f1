"""The baseline: the round trip of a call that does not wait at the PBX (service time, network
and the client's own delay), the reference a queue is measured against.

It is measured where no call waits: the first rounds of a run, and now and then one window at
a reduced limit (`Rule`), whose round trips it pools while they agree (so its noise shrinks as
the run goes on) and takes afresh when they do not (S grew, or the network changed). Between
those it only falls, to a window clearly faster than itself: the old one held a queue.
"""

from __future__ import annotations

import math

from target_noojee.pacing.window import WindowStats

_MAX_WEIGHT = 4000.0  # samples: old windows fade, so the baseline follows a drifting S
_MIN_SD = 0.01  # scheduling noise never vanishes on a real machine
_PRIOR_SD, _PRIOR_WEIGHT = 0.3, 8.0


class Baseline:
    """The no-queue round trip and the relative noise of one round trip."""

    def __init__(self) -> None:
        self.value: float | None = None
        self._weight = 0.0
        # Relative variance of one round trip: a prior worth a few samples (a real PBX's
        # service times vary), so two lucky samples do not make the noise look small.
        self._var = _PRIOR_SD**2
        self._var_weight = _PRIOR_WEIGHT

    @property
    def rel_sd(self) -> float:
        """Relative standard deviation of one queue-free round trip."""
        return max(_MIN_SD, math.sqrt(self._var))

    def noise(self, samples: int) -> float:
        """Relative standard error of a queue-free window's mean less the baseline."""
        return self.rel_sd * math.sqrt(1.0 / max(1, samples) + 1.0 / max(1.0, self._weight))

    def measure(self, window: WindowStats, confidence: float) -> None:
        """A window where no call waited: pool it if it agrees, else start afresh from it."""
        if window.samples == 0:
            return
        # A slower window restarts the baseline at `confidence` standard errors (the rule only
        # measures one that sending fewer did not speed up: S grew); a faster one at twice that,
        # or the baseline would restart from the lucky windows of a noisy PBX and read low.
        if self.value is not None:
            diff = window.mean_rtt / self.value - 1.0
            allowed = confidence * self.noise(window.samples) * (1.0 if diff > 0 else 2.0)
        if self.value is not None and abs(diff) <= allowed:
            pooled = self._weight + window.samples
            self.value += window.samples / pooled * (window.mean_rtt - self.value)
            self._weight = min(_MAX_WEIGHT, pooled)
        else:
            self.value, self._weight = window.mean_rtt, float(window.samples)
        weight = min(_MAX_WEIGHT, self._var_weight + window.samples)
        self._var += window.samples / weight * (window.rel_sd**2 - self._var)
        self._var_weight = weight

    def observe(self, window: WindowStats, confidence: float) -> None:
        """Any other window: fall to it if it is clearly faster."""
        if self.value is None:
            self.measure(window, confidence)
        elif window.mean_rtt < self.value * (1.0 - 2.0 * confidence * self.noise(window.samples)):
            self.value, self._weight = window.mean_rtt, float(window.samples)
