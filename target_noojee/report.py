"""Run counters for operators: progress lines while sending and a summary at the end."""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

DELIVERED = "delivered"
REJECTED = "rejected"
RETRIED = "retried"
UNCHANGED = "unchanged"
DRY_RUN = "dry_run"


class RunStats:
    """Thread-safe counts per stream and outcome, and per response code."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self.started = clock()
        self._by_stream: dict[str, Counter[str]] = defaultdict(Counter)
        self._codes: Counter[str] = Counter()
        self._last_progress = (self.started, 0)

    def add(self, stream: str, outcome: str, code: int | str | None = None) -> None:
        """Count one outcome for a stream; `code` is the PBX code, 'local', or a transport label."""
        with self._lock:
            counter = self._by_stream[stream]
            counter[outcome] += 1
            if outcome == REJECTED and code is not None:
                counter[f"rejected {code}"] += 1
            if code is not None:
                self._codes[str(code)] += 1

    def total(self, outcome: str) -> int:
        """The count of one outcome over all streams."""
        with self._lock:
            return sum(c[outcome] for c in self._by_stream.values())

    def snapshot(self) -> dict[str, Any]:
        """Counts per stream and per code, for the report and tests."""
        with self._lock:
            return {
                "streams": {s: dict(c) for s, c in sorted(self._by_stream.items())},
                "codes": dict(sorted(self._codes.items())),
                "elapsed_s": round(self._clock() - self.started, 3),
            }

    def progress_line(self, *, in_flight: int, retrying: int, limit: int | None = None) -> str:
        """One line: delivered, rejected, retrying, in flight, leads/s since the last line."""
        now = self._clock()
        delivered = self.total(DELIVERED)
        rejected = self.total(REJECTED)
        last_at, last_delivered = self._last_progress
        rate = (delivered - last_delivered) / max(now - last_at, 1e-9)
        self._last_progress = (now, delivered)
        pace = f" limit={limit}" if limit is not None else ""
        return (
            f"progress: delivered={delivered} rejected={rejected} retrying={retrying} "
            f"in_flight={in_flight}{pace} leads/s={rate:.1f}"
        )

    def summary_lines(self) -> list[str]:
        """Lines for the end of the run: one per stream, one for response codes."""
        snap = self.snapshot()
        lines = []
        for stream, counts in snap["streams"].items():
            parts = " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
            lines.append(f"summary: stream {stream}: {parts}")
        codes = " ".join(f"{k}={v}" for k, v in snap["codes"].items())
        lines.append(f"summary: responses: {codes or 'none'} in {snap['elapsed_s']:.1f}s")
        return lines
