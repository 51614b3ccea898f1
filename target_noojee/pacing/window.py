"""Windowing: round trips grouped until their mean is precise enough to tell a queue from noise.

A window is a run of consecutive calls sent under one limit: a reply to a call sent under an
older limit describes that limit. Every reply counts for the error rate, whenever it was sent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from target_noojee.pacing.samples import Signal

_MIN_SAMPLES = 4


@dataclass(frozen=True)
class WindowStats:
    """One closed window: what the calls sent under one limit saw."""

    samples: int  # OK replies to calls sent since the epoch
    mean_rtt: float
    rel_sd: float  # the round trips' relative standard deviation (per call)
    in_flight: float  # mean calls in flight when those calls went out, themselves included
    peak: int  # the most calls in flight when one went out
    replies: int  # every reply in the window, errors included
    errors: int

    @property
    def rel_se(self) -> float:
        """Relative standard error of `mean_rtt`."""
        return self.rel_sd / math.sqrt(self.samples)


class Window:
    """One window: the calls with ids ``first_id .. first_id + size - 1``. It closes once all of
    them are back, so the slow ones count too (a window cut at its n-th reply would keep the
    fast calls and lose the slow, and read the round trip low). Pure: no clock."""

    def __init__(self, first_id: int, size: int) -> None:
        self.first_id = first_id
        self.size = max(1, size)
        self._back = 0
        self._n = 0
        self._sum = 0.0
        self._sum_sq = 0.0
        self._in_flight = 0
        self._peak = 0
        self.replies = 0
        self.errors = 0
        self.spill: list[tuple[int, float, int, Signal]] = []  # replies of later calls

    @property
    def end_id(self) -> int:
        """The first id after the window."""
        return self.first_id + self.size

    def add(self, permit_id: int, rtt: float, in_flight: int, signal: Signal) -> None:
        """Account one call's end (errors count whichever call they answer)."""
        ok = signal is Signal.OK
        if ok or signal is Signal.ERROR:
            self.replies += 1
            self.errors += not ok
        if permit_id >= self.end_id:
            self.spill.append((permit_id, rtt, in_flight, signal))
            return
        if permit_id < self.first_id:
            return
        self._back += 1
        if ok:
            self._n += 1
            self._sum += rtt
            self._sum_sq += rtt * rtt
            self._in_flight += in_flight
            self._peak = max(self._peak, in_flight)

    @property
    def complete(self) -> bool:
        """Every call of the window is back."""
        return self._back >= self.size

    @property
    def samples(self) -> int:
        """Round trips counted so far."""
        return self._n

    def stats(self) -> WindowStats:
        """The window's summary."""
        n = max(1, self._n)
        mean = self._sum / n
        var = max(0.0, self._sum_sq / n - mean * mean) * n / max(1, n - 1)
        rel_sd = math.sqrt(var) / mean if mean > 0 else 0.0
        return WindowStats(
            samples=self._n,
            mean_rtt=mean,
            rel_sd=rel_sd,
            in_flight=self._in_flight / n,
            peak=self._peak,
            replies=self.replies,
            errors=self.errors,
        )


def window_size(limit: int, rel_sd: float, confidence: float, rounds: int) -> int:
    """Calls in a window: enough that its mean's error, in calls of queue, is under half a call
    (q = n (1 - b / rtt): an error e in rtt is about n * e calls), but at most `rounds` rounds
    of the limit and at least one."""
    needed = (2.0 * confidence * rel_sd * limit) ** 2
    return max(_MIN_SAMPLES if rounds > 1 else 1, limit, min(math.ceil(needed), rounds * limit))


class ErrorRate:
    """The background rate of 103/5xx/lost replies, and whether a window's errors rise above it.

    A steady few percent of errors says nothing about capacity; a rise does. The background is
    a slow average over replies, starting from a prior, so one error in a short window is not a
    rise, and a lasting new rate becomes the background after a few hundred replies.
    """

    def __init__(self, prior: float = 0.02, memory: float = 400.0) -> None:
        self.rate = prior
        self._memory = memory

    def is_rise(self, errors: int, replies: int, confidence: float) -> bool:
        """Whether `errors` of `replies` are clearly more than the background gives."""
        expected = self.rate * replies
        spread = math.sqrt(max(expected * (1.0 - self.rate), 0.25))
        return errors >= 3 and errors > expected + 1.5 * confidence * spread + 1.0

    def learn(self, errors: int, replies: int) -> None:
        """Fold a window's errors into the background."""
        if replies:
            gain = min(1.0, replies / self._memory)
            self.rate += gain * (errors / replies - self.rate)
