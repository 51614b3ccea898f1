"""The circuit breaker on connection failures: while the PBX is away, one probe at a time."""

from __future__ import annotations

import random

from target_noojee.pacing.samples import Signal


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
