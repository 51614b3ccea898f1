"""The run report: counts per stream and code, the JSON report file, METRIC lines."""

from __future__ import annotations

import json
import logging
import os
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from singer_sdk import metrics

from target_noojee.policy import INSERT, UPDATE
from target_noojee.report import (
    CLOSE_UNKNOWN,
    CLOSED,
    DELIVERED,
    DRY_RUN,
    METRICS_LOGGER,
    REDELIVERED,
    REJECTED,
    REOPENED,
    RETRIED,
    UNCHANGED,
    LeadMetric,
    RunStats,
)
from target_noojee.simulator import Simulator
from target_noojee.target import TargetNoojee

from conftest import API_KEY, base_config, lead, record_msg, run_target, schema_msg, state_msg

T0 = datetime(2026, 11, 23, 9, 50, 29, tzinfo=timezone.utc)

NONE_CLOSED = {"closed": 0, "close_unknown": 0, "reopened": 0, "redelivered": 0}
NO_ENDPOINT = {"inserted": 0, "updated": 0}  # delivered counted without the call that did it


class Clocks:
    """A monotonic clock and a wall clock that move together, by hand."""

    def __init__(self) -> None:
        self.t = 100.0

    def mono(self) -> float:
        return self.t

    def wall(self) -> datetime:
        return T0 + timedelta(seconds=self.t - 100.0)


def sample(clocks: Clocks | None = None) -> RunStats:
    stats = RunStats(clock=clocks.mono, wall_clock=clocks.wall) if clocks else RunStats()
    for _ in range(3):
        stats.add("contacts", DELIVERED, 0)
    stats.add("contacts", RETRIED, 109)
    stats.add("contacts", RETRIED, "connection")
    stats.add("contacts", REJECTED, 104)
    stats.add("contacts", REJECTED, "local")
    stats.add("contacts", REJECTED, 104)
    stats.add("contacts", UNCHANGED)
    stats.add("renewals", DELIVERED, 0)
    stats.add("renewals", REJECTED, 110)
    return stats


def test_report_counts_per_stream_outcome_and_code() -> None:
    clocks = Clocks()
    stats = sample(clocks)
    clocks.t += 12.5
    report = stats.report()
    assert report == {
        "started": "2026-11-23T09:50:29+00:00",
        "finished": "2026-11-23T09:50:41+00:00",
        "elapsed_s": 12.5,
        "totals": {
            "delivered": 4,
            "unchanged": 1,
            "rejected": 4,
            "retried": 2,
            "dry_run": 0,
            **NONE_CLOSED,
            **NO_ENDPOINT,
        },
        "rejected_by_code": {"104": 2, "110": 1, "local": 1},
        "streams": {
            "contacts": {
                "delivered": 3,
                "unchanged": 1,
                "rejected": 3,
                "retried": 2,
                "dry_run": 0,
                **NONE_CLOSED,
                **NO_ENDPOINT,
                "rejected_by_code": {"104": 2, "local": 1},
            },
            "renewals": {
                "delivered": 1,
                "unchanged": 0,
                "rejected": 1,
                "retried": 0,
                "dry_run": 0,
                **NONE_CLOSED,
                **NO_ENDPOINT,
                "rejected_by_code": {"110": 1},
            },
        },
        "responses": {"0": 4, "104": 2, "109": 1, "110": 1, "connection": 1, "local": 1},
        "error": None,
    }
    assert json.loads(json.dumps(report)) == report
    assert stats.report(error="run failed: 3 of 4 rejected")["error"] == (
        "run failed: 3 of 4 rejected"
    )


def test_real_clocks_give_iso_times_with_an_offset() -> None:
    report = RunStats().report()
    started = datetime.fromisoformat(report["started"])
    assert started.tzinfo is not None and report["elapsed_s"] >= 0
    assert datetime.fromisoformat(report["finished"]) >= started


def test_summary_lines_and_the_existing_methods_keep_working() -> None:
    stats = sample()
    stats.add("contacts", DRY_RUN)
    assert stats.total(DELIVERED) == 4 and stats.total(REJECTED) == 4
    snapshot = stats.snapshot()
    assert snapshot["streams"]["contacts"]["rejected 104"] == 2
    lines = stats.summary_lines()
    assert lines[0] == (
        "summary: stream contacts: delivered=3 unchanged=1 rejected=3 (104=2 local=1) retried=2 "
        "dry_run=1"
    )
    assert (
        lines[1] == "summary: stream renewals: delivered=1 unchanged=0 rejected=1 (110=1) retried=0"
    )
    assert lines[2].startswith("summary: responses: 0=4 104=2 109=1 110=1 connection=1 local=1 in ")
    assert stats.progress_line(in_flight=2, retrying=1, limit=4).startswith(
        "progress: delivered=4 rejected=4 retrying=1 in_flight=2 limit=4 leads/s="
    )


def test_write_report_replaces_the_file_atomically(tmp_path: Path) -> None:
    path = tmp_path / "reports" / "run.json"  # the folder is created
    stats = sample()
    assert stats.write_report(path) == str(path)
    assert json.loads(path.read_text(encoding="utf-8"))["totals"]["delivered"] == 4
    first_inode = path.stat().st_ino
    stats.add("contacts", DELIVERED, 0)
    stats.write_report(path, error="stopped")
    again = json.loads(path.read_text(encoding="utf-8"))
    assert again["totals"]["delivered"] == 5 and again["error"] == "stopped"
    assert path.stat().st_ino != first_inode  # a new file renamed over the old one
    assert sorted(p.name for p in path.parent.iterdir()) == ["run.json"]  # no temp file left
    assert path.stat().st_mode & 0o777 == 0o644


def test_a_failed_write_leaves_no_temp_file(tmp_path: Path) -> None:
    taken = tmp_path / "report.json"
    taken.mkdir()  # a folder where the file should go: the rename fails
    (taken / "keep").write_text("x")
    with pytest.raises(OSError):
        sample().write_report(taken)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def metric_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    points = []
    for record in caplog.records:
        if record.name == metrics.METRICS_LOGGER_NAME:
            message = record.getMessage()
            assert message.startswith("METRIC: ")
            assert isinstance(record.args, tuple) and isinstance(record.args[0], metrics.Point)
            points.append(json.loads(message[len("METRIC: ") :]))
    caplog.clear()
    return points


def by_key(points: list[dict[str, Any]]) -> dict[tuple[str, str, str], int]:
    """(metric, stream, code) -> the value summed over the points."""
    sums: dict[tuple[str, str, str], int] = {}
    for point in points:
        key = (point["metric"], point["tags"]["stream"], point["tags"].get("code", ""))
        sums[key] = sums.get(key, 0) + point["value"]
    return sums


def lifecycle_sample() -> RunStats:
    stats = RunStats()
    stats.add("contacts", DELIVERED, 0, endpoint=INSERT)
    stats.add("contacts", DELIVERED, 0, endpoint=INSERT)
    stats.add("contacts", DELIVERED, 0, endpoint=UPDATE)
    stats.add("contacts", UNCHANGED)
    stats.add("contacts", RETRIED, 109)
    stats.add("contacts", RETRIED, "connection")
    stats.add("contacts", REJECTED, 104)
    stats.add("contacts", REJECTED, 104)
    stats.add("contacts", REJECTED, "local")
    stats.add("contacts", CLOSED, 0, endpoint=UPDATE)
    stats.add("contacts", CLOSE_UNKNOWN, 112)
    stats.add("contacts", REOPENED, 0, endpoint=UPDATE)
    stats.add("contacts", REDELIVERED, 0, endpoint=UPDATE)
    stats.add("renewals", DELIVERED, 0, endpoint=UPDATE)
    stats.add("renewals", REJECTED, 110)
    return stats


def test_metric_points_count_each_outcome_per_stream(caplog: pytest.LogCaptureFixture) -> None:
    assert METRICS_LOGGER is metrics.get_metrics_logger()  # the SDK's, so Meltano sees them
    caplog.set_level(logging.INFO, logger=metrics.METRICS_LOGGER_NAME)
    stats = lifecycle_sample()
    stats.emit_metrics()
    points = metric_lines(caplog)
    assert by_key(points) == {
        ("lead_inserted_count", "contacts", ""): 2,
        ("lead_updated_count", "contacts", ""): 1,  # closes, reopens, re-deliveries apart
        ("lead_unchanged_count", "contacts", ""): 1,
        ("lead_retried_count", "contacts", ""): 2,
        ("lead_rejected_count", "contacts", "104"): 2,
        ("lead_rejected_count", "contacts", "local"): 1,
        ("lead_closed_count", "contacts", ""): 1,
        ("lead_close_unknown_count", "contacts", ""): 1,
        ("lead_reopened_count", "contacts", ""): 1,
        ("lead_redelivered_count", "contacts", ""): 1,
        ("lead_updated_count", "renewals", ""): 1,
        ("lead_rejected_count", "renewals", "110"): 1,
    }
    assert len(points) == 12  # one point per metric, stream and code
    pid = os.getpid()
    assert {
        "type": "counter",
        "metric": "lead_rejected_count",
        "value": 2,
        "tags": {"stream": "contacts", "code": "104", "pid": pid},
    } in points
    assert all(
        p["tags"] == {"stream": p["tags"]["stream"], "pid": pid}
        for p in points
        if p["metric"] != "lead_rejected_count"
    )
    # The report agrees: delivered is inserted + updated.
    report = stats.report()
    assert report["streams"]["contacts"]["delivered"] == 3
    assert (report["totals"]["inserted"], report["totals"]["updated"]) == (2, 2)
    assert stats.summary_lines()[0].startswith(
        "summary: stream contacts: delivered=3 (inserted=2 updated=1) unchanged=1 rejected=3"
    )


def test_metric_points_carry_what_was_counted_since_the_last(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=metrics.METRICS_LOGGER_NAME)
    stats = lifecycle_sample()
    stats.emit_metrics()
    metric_lines(caplog)
    stats.emit_metrics()
    assert metric_lines(caplog) == []  # nothing grew
    stats.add("contacts", DELIVERED, 0, endpoint=UPDATE)
    stats.add("contacts", DELIVERED, 0, endpoint=UPDATE)
    stats.add("contacts", REJECTED, 104)
    stats.emit_metrics()
    assert by_key(metric_lines(caplog)) == {
        ("lead_updated_count", "contacts", ""): 2,
        ("lead_rejected_count", "contacts", "104"): 1,
    }
    stats.emit_metrics(final=True)  # the end of the run: every stream, zeros included
    assert by_key(metric_lines(caplog)) == {
        (metric, stream, ""): 0
        for stream in ("contacts", "renewals")
        for metric in ("lead_inserted_count", "lead_updated_count", "lead_unchanged_count")
    }


def test_a_stream_with_nothing_yet_reports_zeros_at_the_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=metrics.METRICS_LOGGER_NAME)
    stats = RunStats()
    stats.add("contacts", REJECTED, "local")
    stats.emit_metrics(final=True)
    assert by_key(metric_lines(caplog)) == {
        ("lead_inserted_count", "contacts", ""): 0,
        ("lead_updated_count", "contacts", ""): 0,
        ("lead_unchanged_count", "contacts", ""): 0,
        ("lead_rejected_count", "contacts", "local"): 1,
    }


def test_metric_names_are_the_targets_own() -> None:
    ours = {m.value for m in LeadMetric}
    assert not ours & {m.value for m in metrics.Metric}  # never record_count & co
    assert all(name.startswith("lead_") and name.endswith("_count") for name in ours)


def test_metric_lines_look_like_the_sdks_own(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=metrics.METRICS_LOGGER_NAME)
    stats = RunStats()
    stats.add("contacts", DELIVERED, 0, endpoint=INSERT)
    stats.emit_metrics()
    ours = caplog.records[-1].getMessage()
    sdk = "METRIC: " + str(metrics.Point("counter", metrics.Metric.RECORD_COUNT, 1, {}))
    assert list(json.loads(ours[8:])) == list(json.loads(sdk[8:]))  # same keys, same order
    assert ours.startswith('METRIC: {"type":"counter","metric":"lead_inserted_count","value":1,')


def test_structured_logging_carries_metric_info(caplog: pytest.LogCaptureFixture) -> None:
    """What the SDK's structured logging (Meltano's `structured-logging`) writes for a point."""
    from singer_sdk.logging import StructuredFormatter

    caplog.set_level(logging.INFO, logger=metrics.METRICS_LOGGER_NAME)
    stats = RunStats()
    stats.add("contacts", REJECTED, 104)
    stats.emit_metrics()
    line = json.loads(StructuredFormatter().format(caplog.records[-1]))
    assert line["message"] == "METRIC"
    assert line["logger_name"] == "singer_sdk.metrics"
    assert line["metric_info"] == {
        "type": "counter",
        "metric": "lead_rejected_count",
        "value": 1,
        "tags": {"stream": "contacts", "code": "104", "pid": os.getpid()},
    }


def test_metrics_from_several_threads_add_up(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=metrics.METRICS_LOGGER_NAME)
    stats = RunStats()
    stop = threading.Event()

    def work(stream: str) -> None:
        for i in range(2000):
            if i % 4:
                stats.add(stream, DELIVERED, 0, endpoint=INSERT if i % 2 else UPDATE)
            else:
                stats.add(stream, REJECTED, 104)

    def tick() -> None:
        while not stop.is_set():
            stats.emit_metrics()

    ticker = threading.Thread(target=tick)
    ticker.start()
    workers = [threading.Thread(target=work, args=(s,)) for s in ("a", "b", "a", "b")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    stop.set()
    ticker.join()
    stats.emit_metrics(final=True)
    assert by_key(metric_lines(caplog)) == {
        ("lead_inserted_count", "a", ""): 2000,
        ("lead_updated_count", "a", ""): 1000,
        ("lead_unchanged_count", "a", ""): 0,
        ("lead_rejected_count", "a", "104"): 1000,
        ("lead_inserted_count", "b", ""): 2000,
        ("lead_updated_count", "b", ""): 1000,
        ("lead_unchanged_count", "b", ""): 0,
        ("lead_rejected_count", "b", "104"): 1000,
    }


# --- in a real run (once report_file is wired into the target) -------------------------------

WIRED = "report_file" in TargetNoojee.config_jsonschema["properties"]


@pytest.mark.skipif(not WIRED, reason="report_file is not wired into the target yet")
def test_a_run_writes_its_report_and_metric_lines(sim: Simulator, tmp_path: Path) -> None:
    report_path = tmp_path / "out" / "report.json"
    config = base_config(sim, tmp_path, report_file=str(report_path))
    messages = [schema_msg()]
    messages += [record_msg(lead(i)) for i in range(5)]
    messages += [record_msg(lead(5, phone="0390000000")), record_msg(lead(6, phone="nope"))]
    messages.append(state_msg(7))
    result = run_target(config, messages, tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert report["streams"]["contacts"]["delivered"] == 5
    assert report["rejected_by_code"] == {"104": 1, "local": 1}
    assert report["error"] is None
    assert API_KEY not in report_path.read_text(encoding="utf-8")
    points = [
        json.loads(line.split("METRIC: ", 1)[1])
        for line in result.stderr.splitlines()
        if "METRIC: " in line and '"metric":"lead_' in line
    ]
    sums = by_key(points)
    # upsert, an empty ledger: each lead is inserted
    assert sums[("lead_inserted_count", "contacts", "")] == 5
    assert sums[("lead_updated_count", "contacts", "")] == 0
    assert sums[("lead_rejected_count", "contacts", "104")] == 1
    assert sums[("lead_rejected_count", "contacts", "local")] == 1


def test_the_report_goes_to_an_object_storage_url() -> None:
    import fsspec

    sample().write_report("memory://noojee-reports/run.json")
    with fsspec.open("memory://noojee-reports/run.json", "r") as handle:
        assert json.load(handle)["totals"]["delivered"] == sample().report()["totals"]["delivered"]


def test_a_run_writes_its_report_to_a_url_and_names_a_url_it_cannot_use(
    sim: Simulator, tmp_path: Path
) -> None:
    target = tmp_path / "reports" / "run.json"
    config = base_config(sim, tmp_path, report_file=target.as_uri())
    result = run_target(config, [schema_msg(), record_msg(lead(1))], tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(target.read_text())["totals"]["delivered"] == 1
    bad = base_config(sim, tmp_path, report_file="nosuchstore://user:secret@bucket/run.json")
    result = run_target(bad, [schema_msg(), record_msg(lead(2))], tmp_path)
    assert result.returncode == 0
    assert "cannot write report_file nosuchstore://bucket/run.json" in result.stderr
    assert "secret" not in result.stderr
