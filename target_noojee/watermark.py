"""The STATE watermark: a STATE goes out only once every record received before it is settled.

Records are numbered in arrival order. A record may fan out into several leads (stream maps can
split one record into several streams), so each number carries a count of open holds; it is
settled when its last hold is released. The lowest unsettled number is the watermark; every
STATE whose bound is at or below it is written, in arrival order, from this one place.
"""

from __future__ import annotations

import json
import sys
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, TextIO


class Watermark:
    """Thread-safe record settlement tracking and ordered STATE forwarding."""

    def __init__(
        self,
        *,
        before_emit: Callable[[], None] = lambda: None,
        out: TextIO | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._open: dict[int, int] = {}  # seq -> open holds
        self._next = 0  # the number the next record gets
        self._low = 0  # every seq below this is settled
        self._states: deque[tuple[int, Any]] = deque()  # (records received before it, state)
        self._before_emit = before_emit
        self._out = out
        self._last_written: str | None = None
        self.emitted = 0

    @property
    def lock(self) -> threading.Lock:
        """Held while a STATE line is written (a hard exit waits for it)."""
        return self._lock

    def open_record(self) -> int:
        """Number the next record and hold it open until release()."""
        with self._lock:
            seq = self._next
            self._next += 1
            self._open[seq] = 1
            return seq

    def hold(self, seq: int) -> None:
        """Add one more hold on an open record (one per lead it produced)."""
        with self._lock:
            self._open[seq] += 1

    def release(self, seq: int) -> None:
        """Release one hold; the record is settled when none is left."""
        with self._lock:
            left = self._open[seq] - 1
            if left:
                self._open[seq] = left
                return
            del self._open[seq]
            if seq != self._low:
                return
            self._low = min(self._open) if self._open else self._next
            self._emit_ready()

    def add_state(self, state: Any) -> None:
        """Queue a STATE received now; it is written once all records before it are settled."""
        with self._lock:
            self._states.append((self._next, state))
            self._emit_ready()

    def settled(self, seq: int) -> bool:
        """Whether a record number was received and is settled."""
        with self._lock:
            return seq < self._next and seq not in self._open

    @property
    def unsettled(self) -> int:
        """Records received but not yet settled."""
        with self._lock:
            return len(self._open)

    def _emit_ready(self) -> None:
        # Called with the lock held. Invariant: _low is the lowest open seq, or _next if none.
        low = self._low if self._open else self._next
        ready: list[Any] = []
        while self._states and self._states[0][0] <= low:
            ready.append(self._states.popleft()[1])
        if not ready:
            return
        lines = []
        for state in ready:
            line = json.dumps(state, separators=(",", ":"), default=str)
            if line != self._last_written:
                lines.append(line)
                self._last_written = line
        if not lines:
            return
        self._before_emit()  # e.g. fsync the reject file: a STATE never precedes its rejects
        out = self._out or sys.stdout
        out.write("\n".join(lines) + "\n")
        out.flush()
        self.emitted += len(lines)
