"""The run: record -> lead -> delivery or dry-run file -> settlement -> STATE watermark.

Everything below the SDK glue meets here: one Pipeline per run, shared by every stream, holding
the client, the limiter, the delivery window, the reject file, the counters and the watermark.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from target_noojee.client import client_from_config
from target_noojee.codes import lookup
from target_noojee.delivery import Delivery, DeliveryStopped, Job, RetryPolicy
from target_noojee.ledger import (
    DELIVERED,
    Ledger,
    default_ledger_path,
    fingerprint,
    pbx_identity,
)
from target_noojee.mapping import LeadMapper, LeadValues, LocalRejection
from target_noojee.pacing import make_limiter
from target_noojee.policy import INSERT, UPDATE
from target_noojee.preflight import Preflight
from target_noojee.rejects import JsonLinesFile, reject_entry
from target_noojee.report import DRY_RUN, REJECTED, UNCHANGED, RunStats
from target_noojee.settings import LeadSettings, resolve_stream_settings
from target_noojee.watermark import Watermark

LOGGER = logging.getLogger("target_noojee")

DEFAULTS: dict[str, Any] = {
    "reject_file": "noojee-rejects.jsonl",
    "dry_run_file": "noojee-dry-run.jsonl",
    "max_concurrency": 32,
    "request_timeout_s": 90.0,
    "max_retry_time_s": 1800.0,
    "overload_pause_s": 120.0,
    "progress_interval_s": 10.0,
    "shutdown_grace_s": 30.0,
}
REJECT_BUDGET_MIN_RECORDS = 100  # the reject budget stops a run early only after this many


class RejectBudgetExceeded(DeliveryStopped):
    """More than max_reject_ratio of the run's records were rejected."""


def setting(config: Mapping[str, Any], name: str) -> Any:
    """A run-level setting, or its default when unset or null."""
    value = config.get(name)
    return DEFAULTS.get(name) if value is None else value


@dataclass(frozen=True)
class Lane:
    """One stream's way to the PBX: its settings, its mapper and its key properties."""

    stream: str
    settings: LeadSettings
    mapper: LeadMapper
    key_properties: tuple[str, ...]

    @property
    def ids(self) -> dict[str, int]:
        """The query ids of every lead call of this stream."""
        s = self.settings
        return {
            "fTemplateId": s.template_id,
            "fCampaignId": s.campaign_id,
            "fAllocationId": s.allocation_id,
        }

    @property
    def first_endpoint(self) -> str:
        """update updates; insert inserts; upsert inserts unless the ledger knows the lead."""
        return UPDATE if self.settings.operation == "update" else INSERT

    def record_key(self, record: Mapping[str, Any], values: LeadValues | None) -> Any:
        """The record's key for reject lines: key properties, else the external id."""
        if self.key_properties:
            keys = [record.get(k) for k in self.key_properties]
            return keys[0] if len(keys) == 1 else keys
        return (values or {}).get("njExternalLeadId")


class Pipeline:
    """One run of the target (thread-safe where the workers meet it)."""

    def __init__(self, config: Mapping[str, Any], *, out: TextIO | None = None) -> None:
        self.config = config
        self.stats = RunStats()
        self.rejects = JsonLinesFile(setting(config, "reject_file"), shared_lock=True)
        self.watermark = Watermark(before_emit=self.rejects.sync, out=out)
        self.dry_run = bool(config.get("dry_run"))
        self.dry_run_file = JsonLinesFile(setting(config, "dry_run_file"))
        self.full_resend = bool(config.get("full_resend"))
        ratio = config.get("max_reject_ratio")
        self.max_reject_ratio = None if ratio is None else float(ratio)
        self.ledger = Ledger(
            config.get("ledger_path") or default_ledger_path(),
            pbx_identity(str(config.get("base_url", ""))),
        )
        max_concurrency = int(setting(config, "max_concurrency"))
        self.limiter = make_limiter(
            max_concurrency=max_concurrency, concurrency=config.get("concurrency")
        )
        self.client = client_from_config(
            config,
            timeout_s=float(setting(config, "request_timeout_s")),
            pool_size=max_concurrency + 2,
        )
        self.delivery = Delivery(
            self.client,
            self.limiter,
            settle=self.watermark.release,
            on_outcome=self._remember,
            rejects=self.rejects,
            stats=self.stats,
            retry=RetryPolicy(
                max_retry_time_s=float(setting(config, "max_retry_time_s")),
                overload_pause_s=float(setting(config, "overload_pause_s")),
            ),
            workers=int(config.get("concurrency") or max_concurrency),
            window=max(256, 8 * max_concurrency),
        )
        self.preflight = Preflight(
            self.client, config, should_stop=lambda: self.delivery.interrupted
        )
        self._seq = -1
        self._reached = -1  # the last record number the pipeline took in
        self._lanes: dict[str, Lane] = {}
        self._closed = False
        self._stop_progress = threading.Event()
        self._progress: threading.Thread | None = None

    # --- records and STATE, from the SDK's main loop --------------------------------------

    def lane(self, stream: str, key_properties: Sequence[str] | None) -> Lane:
        """Resolve a stream's settings (raises settings.ConfigError naming the setting)."""
        settings = resolve_stream_settings(self.config, stream)
        if (
            settings.operation != "insert"
            and not settings.fallback_disposition
            and "njDisposition" not in settings.mapping
        ):
            LOGGER.warning(
                "stream %r: updates keep the disposition (<No Change>), which the PBX refuses "
                "(107) for leads never dialed; set fallback_disposition to send those anyway",
                stream,
            )
        lane = Lane(stream, settings, LeadMapper(settings), tuple(key_properties or ()))
        self._lanes[stream] = lane
        return lane

    def open_record(self) -> int:
        """A record arrived: number it and hold the watermark until its leads settle."""
        self._seq = self.watermark.open_record()
        return self._seq

    def close_record(self, seq: int) -> None:
        """The SDK is done with the record (its leads, if any, hold it open)."""
        self.watermark.release(seq)

    def add_state(self, state: Any) -> None:
        """A STATE arrived: it goes out once everything before it is settled."""
        self.watermark.add_state(state)

    def accept(self, lane: Lane, record: Mapping[str, Any], invalid: str | None = None) -> None:
        """Map one record of a stream and hand its lead on; `invalid` rejects it locally."""
        seq = self._reached = self._seq
        if seq % 50 == 49:
            self._check_reject_budget(final=False)
        self.watermark.hold(seq)
        values: LeadValues | None = None
        try:
            if invalid is not None:
                raise LocalRejection(invalid, {})
            values = lane.mapper.values(record)
        except LocalRejection as rejection:
            self._reject_local(lane, seq, lane.record_key(record, values), rejection)
            return
        job = self._job(lane, seq, record, values)
        if self._consult_ledger(job):
            self.stats.add(lane.stream, UNCHANGED)
            self.watermark.release(seq)
            return
        if self.dry_run:
            self._write_dry_run(job)
            return
        self.preflight.check([(lane.stream, lane.settings)])  # calls the PBX once per ids
        self._start_progress()
        self.delivery.submit(job)

    def reached(self, seq: int) -> bool:
        """Whether record `seq` was taken in by `accept` (an error after that is ours)."""
        return self._reached == seq

    def reject_unread(self, stream: str, record: Any, reason: str) -> None:
        """A record the SDK failed on before it reached us: rejected locally, the run goes on."""
        lane = self._lanes.get(stream)
        key = lane.record_key(record, None) if lane and isinstance(record, Mapping) else None
        self._write_local_reject(stream, key, reason, {}, lane.ids if lane else None)

    def _consult_ledger(self, job: Job) -> bool:
        """Pick upsert's endpoint; True when the lead is unchanged since it last reached the PBX.

        Unchanged means: the ledger holds this very lead, and nothing for it is on its way.
        """
        if job.external_id is None:
            return False
        entry = self.ledger.get(job.ids["fCampaignId"], job.external_id)
        if job.operation == "upsert" and entry is not None and entry.outcome == DELIVERED:
            job.endpoint = UPDATE  # a known lead: one call, no 112 first
        if self.full_resend or entry is None or entry.fingerprint != job.fingerprint:
            return False
        return not self.delivery.is_pending(job.lead_key)

    def _remember(self, job: Job, outcome: str, code: int | str | None) -> None:
        if outcome == REJECTED and not (isinstance(code, int) and lookup(code) is not None):
            return  # a foreign answer or an undocumented code: send the lead again next run
        if job.external_id is not None and not self.dry_run:
            self.ledger.record(
                job.ids["fCampaignId"], job.external_id, job.fingerprint, outcome, code
            )

    def _job(self, lane: Lane, seq: int, record: Mapping[str, Any], values: LeadValues) -> Job:
        settings = lane.settings
        external_id = values.get("njExternalLeadId")
        fallback = settings.fallback_disposition

        def render(endpoint: str, use_fallback: bool) -> dict[str, str]:
            if use_fallback and fallback:
                return lane.mapper.render({**values, "njDisposition": fallback}, endpoint)
            return lane.mapper.render(values, endpoint)

        return Job(
            seq=seq,
            stream=lane.stream,
            key=lane.record_key(record, values),
            lead_key=(settings.campaign_id, external_id) if external_id else ("record", seq),
            ids=lane.ids,
            operation=settings.operation,
            endpoint=lane.first_endpoint,
            render=render,
            allow_duplicates=settings.allow_duplicates,
            has_fallback_disposition=bool(fallback),
            has_external_id=bool(external_id),
            external_id=external_id or None,
            fingerprint=fingerprint(values),
        )

    def _reject_local(self, lane: Lane, seq: int, key: Any, rejection: LocalRejection) -> None:
        self._write_local_reject(lane.stream, key, rejection.reason, rejection.lead, lane.ids)
        self.watermark.release(seq)

    def _write_local_reject(
        self,
        stream: str,
        key: Any,
        reason: str,
        lead: Mapping[str, Any],
        ids: Mapping[str, int] | None,
    ) -> None:
        self.rejects.write(
            reject_entry(stream=stream, key=key, code="local", message=reason, lead=lead, ids=ids)
        )
        self.stats.add(stream, REJECTED, "local")

    def _write_dry_run(self, job: Job) -> None:
        body = job.render(job.endpoint, False)
        self.dry_run_file.write(
            {
                "stream": job.stream,
                "key": job.key,
                "endpoint": job.endpoint,
                "ids": job.ids,
                "lead": body,
            }
        )
        self.stats.add(job.stream, DRY_RUN)
        self.watermark.release(job.seq)

    # --- the end of the run ---------------------------------------------------------------

    def finish(self) -> None:
        """End of input: wait for every lead to settle (raises DeliveryStopped on failure).

        On a failure or a signal the caller shuts down: calls in flight get their grace period
        before the client is closed under them.
        """
        self.delivery.wait_settled()
        self._check_reject_budget(final=True)
        self.close()

    def _check_reject_budget(self, *, final: bool) -> None:
        """Stop when more than max_reject_ratio of the records so far were rejected."""
        received = self.watermark.received
        if self.max_reject_ratio is None or not received:
            return
        if not final and received < REJECT_BUDGET_MIN_RECORDS:
            return
        rejected = self.stats.total(REJECTED)
        if rejected > self.max_reject_ratio * received:
            raise RejectBudgetExceeded(
                f"{rejected} of {received} records rejected, more than max_reject_ratio="
                f"{self.max_reject_ratio:g}: check the mapping and the campaign; the reject file "
                f"{self.rejects.path} says why"
            )

    def shutdown(self, grace_s: float | None = None) -> int:
        """On a signal: no new calls, wait for calls in flight; returns records left unsent."""
        grace = float(setting(self.config, "shutdown_grace_s") if grace_s is None else grace_s)
        left = self.delivery.stop(grace)
        self.close()
        return left if left else self.watermark.unsettled

    def close(self) -> None:
        """Stop workers and the progress thread, sync files, log the summary (once)."""
        if self._closed:
            return
        self._closed = True
        self._stop_progress.set()
        self.delivery.close()
        self.rejects.close()
        self.dry_run_file.close()
        self.client.close()
        self.ledger.close()
        for line in self.stats.summary_lines():
            LOGGER.info(line)
        self.stats.emit_metrics(final=True)
        report_file = self.config.get("report_file")
        if report_file:
            failure = self.delivery.failure
            try:
                self.stats.write_report(report_file, error=str(failure) if failure else None)
            except OSError as exc:
                LOGGER.error("cannot write report_file %s: %s", report_file, exc.strerror)

    @property
    def failure(self) -> DeliveryStopped | None:
        """Why delivery stopped, if it did."""
        return self.delivery.failure

    def _start_progress(self) -> None:
        if self._progress is not None:
            return
        interval = float(setting(self.config, "progress_interval_s"))
        self._progress = threading.Thread(
            target=self._report_progress, args=(interval,), name="noojee-progress", daemon=True
        )
        self._progress.start()

    def _report_progress(self, interval: float) -> None:
        while not self._stop_progress.wait(interval):
            counts = self.delivery.progress()
            LOGGER.info(
                self.stats.progress_line(
                    in_flight=counts["in_flight"],
                    retrying=counts["retrying"],
                    limit=self.limiter.limit,
                )
            )
            self.stats.emit_metrics()
