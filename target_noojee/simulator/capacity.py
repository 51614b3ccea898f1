"""The PBX's concurrency limit: N slots shared by all lead calls, a FIFO queue, and its statistics.

A call takes a free slot at once when nobody is queued; otherwise it joins the back of the queue
and is handed a slot by the call that releases one. A call still queued after its timeout leaves
the queue without a slot (the server then answers 109). The queue length is integrated over time
so that `mean_queue_length` is the time-weighted mean since start or since the last `reset_stats`.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable


class _Waiter:
    __slots__ = ("event", "granted")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.granted = False


class Capacity:
    """Slots + FIFO queue; thread-safe; the clock is injectable for tests."""

    def __init__(self, slots: int, clock: Callable[[], float] = time.monotonic) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self._clock = clock
        self._lock = threading.Lock()
        self._slots = slots
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
        """Take a slot, waiting in FIFO order for at most `timeout` seconds; False on timeout."""
        with self._lock:
            if self._closed:
                return False
            if self._in_service < self._slots and not self._queue:
                self._start_service()
                return True
            waiter = _Waiter()
            self._account()
            self._queue.append(waiter)
        waiter.event.wait(max(0.0, timeout))
        with self._lock:
            if waiter.granted:
                return True
            self._account()
            with contextlib.suppress(ValueError):
                self._queue.remove(waiter)
            return False

    def release(self) -> None:
        """Give a slot back; the head of the queue gets it if the limit allows."""
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

    def set_slots(self, slots: int) -> None:
        """Change the limit while running; calls already in service finish normally."""
        if slots < 1:
            raise ValueError("slots must be at least 1")
        with self._lock:
            self._slots = slots
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

    def _start_service(self) -> None:
        self._in_service += 1
        if self._in_service > self._peak:
            self._peak = self._in_service

    def _account(self) -> None:
        now = self._clock()
        self._queue_area += len(self._queue) * (now - self._last_change)
        self._last_change = now

    def _dispatch(self) -> None:
        if self._queue and self._in_service < self._slots:
            self._account()
        while self._queue and self._in_service < self._slots:
            waiter = self._queue.popleft()
            waiter.granted = True
            self._start_service()
            waiter.event.set()
