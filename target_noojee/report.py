"""Run counters for operators: progress lines, METRIC lines, a summary and a JSON run report.

METRIC lines are singer-sdk metric points (``singer_sdk.metrics.Point``, logged through
``singer_sdk.metrics.log`` on the SDK's metrics logger), so they read
``METRIC: {"type":"counter","metric":...,"value":N,"tags":{...}}`` like the SDK's own, and the
SDK's structured logging (Meltano's ``structured-logging`` capability) carries each one as
``metric_info``. The names are the target's own (:class:`LeadMetric`, all ``lead_*_count``),
beside the SDK's ``record_count`` (records handed to a sink), never instead of it. Per stream:
``lead_inserted_count`` / ``lead_updated_count`` (the PBX took the lead through insertLeadFast /
updateLeadFast), ``lead_unchanged_count`` (settled by the ledger, no call),
``lead_rejected_count`` (tagged with the code or ``local``), ``lead_retried_count`` (transient
failures that will be tried again), and the lifecycle's ``lead_closed_count``,
``lead_close_unknown_count``, ``lead_reopened_count`` and ``lead_redelivered_count``. Like the
SDK's counters, each point carries the count since the previous point for the same metric and
tags, not a running total.
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

from singer_sdk import metrics

from target_noojee.policy import INSERT

DELIVERED = "delivered"
REJECTED = "rejected"
RETRIED = "retried"
UNCHANGED = "unchanged"
DRY_RUN = "dry_run"
CLOSED = "closed"
CLOSE_UNKNOWN = "close_unknown"
REOPENED = "reopened"
REDELIVERED = "redelivered"
INSERTED = "inserted"  # a delivery through insertLeadFast (part of DELIVERED)
UPDATED = "updated"  # a delivery through updateLeadFast (part of DELIVERED)
LIFECYCLE = (CLOSED, CLOSE_UNKNOWN, REOPENED, REDELIVERED)
OUTCOMES = (DELIVERED, UNCHANGED, REJECTED, RETRIED, DRY_RUN, *LIFECYCLE)
_SHOWN_WHEN_ZERO = (DELIVERED, UNCHANGED, REJECTED, RETRIED)
_DELIVERED_PARTS = (INSERTED, UPDATED)

METRICS_LOGGER = metrics.get_metrics_logger()  # the SDK's: Meltano reads what it logs


class LeadMetric(str, enum.Enum):
    """The target's metric names: a str enum like the SDK's ``Metric``, none of its names."""

    INSERTED = "lead_inserted_count"
    UPDATED = "lead_updated_count"
    UNCHANGED = "lead_unchanged_count"
    REJECTED = "lead_rejected_count"
    RETRIED = "lead_retried_count"
    CLOSED = "lead_closed_count"
    CLOSE_UNKNOWN = "lead_close_unknown_count"
    REOPENED = "lead_reopened_count"
    REDELIVERED = "lead_redelivered_count"


# Outcome counted per stream -> its metric (rejected: per code, below).
_METRIC_OF = {
    INSERTED: LeadMetric.INSERTED,
    UPDATED: LeadMetric.UPDATED,
    UNCHANGED: LeadMetric.UNCHANGED,
    RETRIED: LeadMetric.RETRIED,
    CLOSED: LeadMetric.CLOSED,
    CLOSE_UNKNOWN: LeadMetric.CLOSE_UNKNOWN,
    REOPENED: LeadMetric.REOPENED,
    REDELIVERED: LeadMetric.REDELIVERED,
}
# Reported at the end of every run for every stream, zeros included.
_FINAL_METRICS = (LeadMetric.INSERTED, LeadMetric.UPDATED, LeadMetric.UNCHANGED)


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _code_order(code: str) -> tuple[int, int, str]:
    """Numbers first, in numeric order, then labels (`local`, `HTTP 503`, `connection`)."""
    return (0, int(code), "") if code.isdigit() else (1, 0, code)


def _by_code(counts: Counter[str]) -> dict[str, int]:
    return {code: counts[code] for code in sorted(counts, key=_code_order) if counts[code]}


class RunStats:
    """Thread-safe counts per stream and outcome, and per response code."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._wall_clock = wall_clock
        self.started = clock()
        self.started_at = wall_clock()
        self._by_stream: dict[str, Counter[str]] = defaultdict(Counter)
        self._rejected: dict[str, Counter[str]] = defaultdict(Counter)  # stream -> code -> n
        self._codes: Counter[str] = Counter()
        self._last_progress = (self.started, 0)
        self._emit_lock = threading.Lock()  # one METRIC emitter at a time, lines in order
        self._emitted: Counter[tuple[LeadMetric, str, str]] = Counter()  # (metric, stream, code)

    def add(
        self,
        stream: str,
        outcome: str,
        code: int | str | None = None,
        *,
        endpoint: str | None = None,
    ) -> None:
        """Count one outcome for a stream; `code` is the PBX code, 'local', or a transport label.

        ``endpoint`` (the call that settled it) splits ``delivered`` into inserted and updated.
        """
        with self._lock:
            counter = self._by_stream[stream]
            counter[outcome] += 1
            if outcome == DELIVERED and endpoint is not None:
                counter[INSERTED if endpoint == INSERT else UPDATED] += 1
            if outcome == REJECTED and code is not None:
                counter[f"rejected {code}"] += 1
            if outcome == REJECTED:
                self._rejected[stream]["unknown" if code is None else str(code)] += 1
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
        report = self.report()
        lines = []
        for stream, counts in report["streams"].items():
            parts = []
            for outcome in OUTCOMES:
                if outcome not in _SHOWN_WHEN_ZERO and not counts[outcome]:
                    continue
                part = f"{outcome}={counts[outcome]}"
                if outcome == DELIVERED and (counts[INSERTED] or counts[UPDATED]):
                    part += f" (inserted={counts[INSERTED]} updated={counts[UPDATED]})"
                if outcome == REJECTED and counts["rejected_by_code"]:
                    codes = " ".join(f"{c}={n}" for c, n in counts["rejected_by_code"].items())
                    part += f" ({codes})"
                parts.append(part)
            lines.append(f"summary: stream {stream}: {' '.join(parts)}")
        codes = " ".join(f"{k}={v}" for k, v in report["responses"].items())
        lines.append(f"summary: responses: {codes or 'none'} in {report['elapsed_s']:.1f}s")
        return lines

    def report(self, *, error: str | None = None) -> dict[str, Any]:
        """The run report, JSON-ready: per stream and in total, outcomes and rejections by code.

        ``error`` is the one-line reason the run failed, if it did (never a secret).
        """
        with self._lock:
            streams: dict[str, Any] = {}
            totals: Counter[str] = Counter()
            rejected_total: Counter[str] = Counter()
            for stream in sorted(self._by_stream):
                counts = self._by_stream[stream]
                entry: dict[str, Any] = {outcome: counts[outcome] for outcome in OUTCOMES}
                entry.update({part: counts[part] for part in _DELIVERED_PARTS})
                entry["rejected_by_code"] = _by_code(self._rejected[stream])
                streams[stream] = entry
                totals.update({key: counts[key] for key in (*OUTCOMES, *_DELIVERED_PARTS)})
                rejected_total.update(self._rejected[stream])
            responses = _by_code(self._codes)
            elapsed = self._clock() - self.started
        return {
            "started": self.started_at.isoformat(timespec="seconds"),
            "finished": self._wall_clock().isoformat(timespec="seconds"),
            "elapsed_s": round(elapsed, 3),
            "totals": {key: totals[key] for key in (*OUTCOMES, *_DELIVERED_PARTS)},
            "rejected_by_code": _by_code(rejected_total),
            "streams": streams,
            "responses": responses,
            "error": error,
        }

    def write_report(self, path: str | os.PathLike[str], *, error: str | None = None) -> str:
        """Write the report as JSON to ``path``: a local file atomically (temp file, fsync,
        rename), or an object-storage URL (``s3://``, ``gs://``, ``az://``, any fsspec
        protocol) in one put, which object stores make atomic themselves."""
        text = json.dumps(self.report(error=error), indent=2, ensure_ascii=False) + "\n"
        if "://" in str(path):
            import fsspec  # a singer-sdk dependency; only an object-storage report needs it

            with fsspec.open(str(path), "w", encoding="utf-8") as remote:
                remote.write(text)
            return str(path)
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o644)  # mkstemp makes it 0600; the report holds no secret
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return str(target)

    def emit_metrics(self, *, final: bool = False) -> None:
        """Log a metric point for each count that grew since the last call.

        ``final`` (the end of the run) also logs the inserted, updated and unchanged counts of
        every stream when they are zero, so each run reports each of its streams.
        """
        with self._emit_lock:
            with self._lock:
                current: Counter[tuple[LeadMetric, str, str]] = Counter()
                for stream, counts in self._by_stream.items():
                    for outcome, metric in _METRIC_OF.items():
                        if counts[outcome] or (final and metric in _FINAL_METRICS):
                            current[(metric, stream, "")] = counts[outcome]
                for stream, codes in self._rejected.items():
                    for code, n in codes.items():
                        current[(LeadMetric.REJECTED, stream, code)] = n
            pid = os.getpid()
            for key in sorted(current, key=lambda k: (k[1], k[0].value, _code_order(k[2]))):
                delta = current[key] - self._emitted[key]
                metric, stream, code = key
                if delta <= 0 and not (final and metric in _FINAL_METRICS):
                    continue
                tags: dict[str, Any] = {metrics.Tag.STREAM.value: stream}
                if code:
                    tags["code"] = code
                tags[metrics.Tag.PID.value] = pid
                # Point is typed for the SDK's Metric; any str enum with .value serves it.
                name = cast(metrics.Metric, metric)
                metrics.log(METRICS_LOGGER, metrics.Point("counter", name, delta, tags))
                self._emitted[key] = current[key]
