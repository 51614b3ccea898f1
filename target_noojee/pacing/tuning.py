"""The adaptive limiter's few named parameters, in one frozen dataclass."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tuning:
    """How the limiter trades throughput for server queue. The README's Performance section
    says what the defaults measured."""

    initial_limit: int = 2  # the first round: safe on any PBX (C >= 1)
    target_queue: float = 0.5  # calls of ours waiting at the PBX, on average
    gain: float = 0.5  # the share of a window's error (queue less target) corrected at once
    confidence: float = 2.0  # standard errors before a difference counts as real
    max_rounds: int = 8  # a window holds at most this many rounds of the limit
    remeasure_s: float = 10.0  # the baseline is re-measured this often (sooner early in a run)
    remeasure_fraction: float = 0.75  # of the limit: under the knee, yet a quarter of the pace
    error_cut: float = 0.75  # the limit's factor when the error rate rises
    overload_cut: float = 0.5  # the limit's factor on a 109 (at most once per round trip)

    def __post_init__(self) -> None:
        if self.initial_limit < 1:
            raise ValueError("initial_limit must be at least 1")
        if self.target_queue <= 0 or self.confidence <= 0 or self.max_rounds < 2:
            raise ValueError("target_queue and confidence must be > 0, max_rounds >= 2")
        if not 0 < self.gain <= 1 or not 0 < self.remeasure_fraction < 1:
            raise ValueError("gain must be within (0, 1], remeasure_fraction within (0, 1)")
        if not (0 < self.error_cut < 1 and 0 < self.overload_cut < 1):
            raise ValueError("error_cut and overload_cut must be within (0, 1)")
