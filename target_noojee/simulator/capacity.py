"""The PBX's concurrency limit: N slots shared by all lead calls, a server queue, its statistics.

Two queue disciplines, since the vendor does not say which the PBX uses:

- ``fifo``: a call takes a free slot at once when nobody is queued; otherwise it joins the back
  of the queue and is handed a slot by the call that releases one.
- ``barging``: Java's default (non-fair) `Semaphore`. A released slot is not handed over: it
  becomes free and the head of the queue is woken to try for it, and a call arriving meanwhile
  takes it first (the woken one goes back to waiting at the head). Waiters are otherwise served
  in order.

The PBX's own dialer work may hold some slots (`set_reserved`); lead calls get the rest. A call
still queued after its timeout leaves the queue without a slot (the server then answers 109).
The queue length is integrated over time so that `mean_queue_length` is the time-weighted mean
since start or since the last `reset_stats`.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable

QUEUE_KINDS = ("fifo", "barging")


class _Waiter:
    __slots__ = ("event", "granted")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.granted = False


class Capacity:
    """Slots + server queue; thread-safe; the clock is injectable for tests."""

    def __init__(
        self, slots: int, clock: Callable[[], float] = time.monotonic, *, queue: str = "fifo"
    ) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        if queue not in QUEUE_KINDS:
            raise ValueError(f"queue must be one of {QUEUE_KINDS}")
        self._clock = clock
        self._lock = threading.Lock()
        self._slots = slots
        self._reserved = 0
        self._barging = queue == "barging"
        self._in_service = 0
        self._queue: deque[_Waiter] = deque()
        self._closed = False
        self._peak = 0
        now = clock()
        self._since = now
        self._last_change = now
        self._queue_area = 0.0

    # -- admission --------------------------------------------------------------------------

    def acquire(self, timeout: float) -> bool:
        """Take a slot, waiting in the queue for at most `timeout` seconds; False on timeout."""
        deadline = self._clock() + max(0.0, timeout)
        with self._lock:
            if self._closed:
                return False
            if self._free() and (self._barging or not self._queue):
                self._start_service()
                return True
            waiter = _Waiter()
            self._account()
            self._queue.append(waiter)
        while True:
            waiter.event.wait(max(0.0, deadline - self._clock()))
            with self._lock:
                if waiter.granted:
                    return True
                if self._barging and waiter.event.is_set() and not self._closed:
                    # Woken for a free slot: take it unless a newer call barged in first.
                    waiter.event.clear()
                    if self._free():
                        self._leave(waiter)
                        self._start_service()
                        return True
                    if self._clock() < deadline:
                        continue
                self._leave(waiter)
                return False

    def release(self) -> None:
        """Give a slot back; the queue's head gets it (fifo) or is woken to try for it."""
        with self._lock:
            self._in_service -= 1
            self._dispatch()

    def close(self) -> None:
        """Refuse new calls and send every queued call away (used when the simulator stops)."""
        with self._lock:
            self._closed = True
            self._account()
            while self._queue:
                self._queue.popleft().event.set()

    # -- settings ---------------------------------------------------------------------------

    @property
    def slots(self) -> int:
        """The concurrency limit."""
        return self._slots

    @property
    def queue_kind(self) -> str:
        """ "fifo" or "barging"."""
        return "barging" if self._barging else "fifo"

    @property
    def reserved(self) -> int:
        """Slots held by the PBX's own dialer work."""
        return self._reserved

    def set_slots(self, slots: int) -> None:
        """Change the limit while running; calls already in service finish normally."""
        if slots < 1:
            raise ValueError("slots must be at least 1")
        with self._lock:
            self._slots = slots
            self._dispatch()

    def set_reserved(self, reserved: int) -> None:
        """Let the dialer hold `reserved` slots (as they free up); lead calls get the rest."""
        if reserved < 0:
            raise ValueError("reserved slots must not be negative")
        with self._lock:
            self._reserved = reserved
            self._dispatch()

    # -- statistics -------------------------------------------------------------------------

    @property
    def in_service(self) -> int:
        """Calls holding a slot now."""
        return self._in_service

    @property
    def queue_length(self) -> int:
        """Calls waiting for a slot now."""
        return len(self._queue)

    @property
    def peak_in_service(self) -> int:
        """The most calls in service at once since start or the last reset."""
        return self._peak

    def mean_queue_length(self) -> float:
        """Time-weighted mean queue length since start or the last reset."""
        with self._lock:
            now = self._clock()
            area = self._queue_area + len(self._queue) * (now - self._last_change)
            elapsed = now - self._since
        return area / elapsed if elapsed > 0 else float(len(self._queue))

    def reset_stats(self) -> None:
        """Start the peak and the queue integral afresh."""
        with self._lock:
            now = self._clock()
            self._since = now
            self._last_change = now
            self._queue_area = 0.0
            self._peak = self._in_service

    # -- internals (lock held) --------------------------------------------------------------

    def _free(self) -> bool:
        return self._in_service < self._slots - self._reserved

    def _start_service(self) -> None:
        self._in_service += 1
        if self._in_service > self._peak:
            self._peak = self._in_service

    def _account(self) -> None:
        now = self._clock()
        self._queue_area += len(self._queue) * (now - self._last_change)
        self._last_change = now

    def _leave(self, waiter: _Waiter) -> None:
        self._account()
        with contextlib.suppress(ValueError):
            self._queue.remove(waiter)

    def _dispatch(self) -> None:
        if self._barging:
            # Wake as many waiters as there are free slots; whoever is first takes them.
            free = self._slots - self._reserved - self._in_service
            for waiter in self._queue:
                if free <= 0:
                    break
                if not waiter.event.is_set():
                    waiter.event.set()
                free -= 1
            return
        if self._queue and self._free():
            self._account()
        while self._queue and self._free():
            waiter = self._queue.popleft()
            waiter.granted = True
            self._start_service()
            waiter.event.set()


def parse_dialer_load(schedule: str) -> list[tuple[float, int]]:
    """``"2@0,4@10,0@20"`` -> [(0.0, 2), (10.0, 4), (20.0, 0)]: K slots held from second T."""
    steps: list[tuple[float, int]] = []
    for part in schedule.split(","):
        part = part.strip()
        if not part:
            continue
        slots, sep, at = part.partition("@")
        if not sep:
            raise ValueError(f"dialer load {part!r}: expected SLOTS@SECONDS, e.g. 2@0")
        k, t = int(slots), float(at)
        if k < 0 or t < 0:
            raise ValueError(f"dialer load {part!r}: slots and seconds must not be negative")
        steps.append((t, k))
    return sorted(steps)
