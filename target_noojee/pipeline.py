"""The run: record -> lead -> delivery or dry-run file -> settlement -> STATE watermark.

Everything below the SDK glue meets here: one Pipeline per run, shared by every stream, holding
the client, the limiter, the delivery window, the reject file, the counters and the watermark.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO
from urllib.parse import urlsplit

from target_noojee.client import client_from_config
from target_noojee.codes import EXTERNAL_ID_FIELD, NO_CHANGE, lookup
from target_noojee.delivery import Delivery, DeliveryStopped, Job, RetryPolicy
from target_noojee.input import InputError
from target_noojee.ledger import (
    CLOSED_OUTCOMES,
    DELIVERED,
    LOCAL,
    Entry,
    fingerprint,
    open_ledger,
)
from target_noojee.lifecycle import Close, Lifecycle, NotABoolean, Refusal, guard_refuses, is_true
from target_noojee.mapping import DISPOSITION, LeadMapper, LeadValues, LocalRejection, extract
from target_noojee.pacing import make_limiter
from target_noojee.policy import CLOSE, INSERT, UPDATE
from target_noojee.preflight import Preflight
from target_noojee.rejects import JsonLinesFile, RejectStore, reject_entry, resolve_lines
from target_noojee.report import (
    CLOSED,
    DRY_RUN,
    REDELIVERED,
    REJECTED,
    REOPENED,
    UNCHANGED,
    RunStats,
)
from target_noojee.settings import ConfigError, LeadSettings, resolve_stream_settings
from target_noojee.watermark import Watermark

LOGGER = logging.getLogger("target_noojee")

DEFAULTS: dict[str, Any] = {
    "reject_file": "noojee-rejects.jsonl",
    "dry_run_file": "noojee-dry-run.jsonl",
    "max_concurrency": 128,
    "request_timeout_s": 90.0,
    "max_retry_time_s": 1800.0,
    "overload_pause_s": 120.0,
    "progress_interval_s": 10.0,
    "shutdown_grace_s": 30.0,
    "lock_wait_s": 60.0,
}
STAGED_RECORDS = 256  # records looked up in the ledger together (one query, not 256)
REJECT_BUDGET_MIN_RECORDS = 100  # the reject budget stops a run early only after this many


class RejectBudgetExceeded(DeliveryStopped):
    """More than max_reject_ratio of the run's records were rejected."""


class ClosesRefused(DeliveryStopped):
    """The guard refused a stream's closes (more than max_close_ratio of its open leads)."""


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

    def source_id(self, record: Mapping[str, Any]) -> str | None:
        """The record's njExternalLeadId read straight from its source field (no conversion)."""
        path = self.settings.mapping.get(EXTERNAL_ID_FIELD)
        value = extract(record, path) if path is not None else None
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)  # as the mapping sends it
        return value if isinstance(value, str) and value.strip() else None

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
        self.dry_run = bool(config.get("dry_run"))
        self.ledger = open_ledger(config)
        self.rejects = RejectStore(
            JsonLinesFile(setting(config, "reject_file"), shared_lock=True),
            None if self.dry_run else self.ledger,
        )
        self.watermark = Watermark(before_emit=self._before_state, out=out)
        self.dry_run_file = JsonLinesFile(setting(config, "dry_run_file"))
        self.full_resend = bool(config.get("full_resend"))
        ratio = config.get("max_reject_ratio")
        self.max_reject_ratio = None if ratio is None else float(ratio)
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
            on_insert=self._note_insert,
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
        self._accepting = False  # `accept` is running (an error escaping it is ours)
        self.records = 0  # records of the input (the watermark also numbers closes and versions)
        self._rejected_records = 0  # of those, rejected (not re-deliveries, not closes)
        self._rejected_lock = threading.Lock()  # delivery workers count too
        self._lanes: dict[str, Lane] = {}
        self._staged: list[tuple[Lane, Job, LeadValues]] = []  # waiting for one ledger look-up
        self._reached_lanes: set[str] = set()  # streams the current record reached
        self.lifecycle = Lifecycle(self.ledger, dry_run=self.dry_run)
        self._incoming: tuple[bool, int | None] = (False, None)  # (soft-deleted, version)
        self._warned_deletes: set[str] = set()
        self._redelivering: set[str] = set()  # streams whose due rejects were sent
        self._resolved: set[tuple[int, str]] = set()  # re-delivered rejects that landed
        self._refusals: list[Refusal] = []
        self._started = time.time()  # rejects written before this are the ones re-delivered
        self._closed = False
        self._error: BaseException | None = None  # what stopped the run, for its report
        self._stop_note: str | None = None  # a signal's stop with records left unsent
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
        self._lock(lane)
        self._lanes[stream] = lane
        self._redeliver(lane)
        return lane

    def _lock(self, lane: Lane) -> None:
        """Two runs never send one stream of one campaign to one PBX at once."""
        if self.dry_run or lane.stream in self._lanes:
            return
        wait = float(setting(self.config, "lock_wait_s"))
        if not self.ledger.lock_stream(lane.settings.campaign_id, lane.stream, wait):
            raise DeliveryStopped(
                f"another target-noojee run is sending stream {lane.stream!r} of campaign "
                f"{lane.settings.campaign_id} to this PBX; waited {wait:g} s (lock_wait_s) for "
                "it to finish"
            )

    def open_record(self) -> int:
        """A record arrived: number it and hold the watermark until its leads settle."""
        self._seq = self.watermark.open_record()
        self.records += 1
        self._reached_lanes = set()
        self._accepting = False
        return self._seq

    def close_record(self, seq: int) -> None:
        """The SDK is done with the record (its leads, if any, hold it open)."""
        self.watermark.release(seq)

    def _before_state(self) -> None:
        """What a STATE must find on disk before it goes out: the rejects it covers and the
        presence marks of its records (mirror)."""
        self.rejects.sync()
        self.lifecycle.flush_seen()

    def add_state(self, state: Any) -> None:
        """A STATE arrived: it goes out once everything before it is settled."""
        self.watermark.add_state(state)
        self.flush()  # a tap's checkpoint: what came before it goes out now

    def incoming(self, *, deleted: bool, version: int | None) -> None:
        """What the next record's message says beyond its record: a soft delete, a version."""
        self._incoming = (deleted, version)

    def accept(self, lane: Lane, record: Mapping[str, Any], invalid: str | None = None) -> None:
        """Map one record of a stream and hand its lead on; `invalid` rejects it locally."""
        self._accepting = True
        self._accept(lane, record, invalid)
        self._accepting = False  # not in a `finally`: a failure inside leaves it set

    def _accept(self, lane: Lane, record: Mapping[str, Any], invalid: str | None) -> None:
        seq = self._seq
        if seq % 50 == 49:
            self._check_reject_budget(final=False)
        self.watermark.hold(seq)
        self._reached_lanes.add(lane.stream)
        deleted, message_version = self._incoming
        settings = lane.settings
        version = self._record_version(lane, message_version)
        values: LeadValues | None = None
        try:
            # A close needs the lead's id only: a delete marker or an opt-out closes even when
            # the rest of the record would not map.
            closing = self._close_reason(lane, record, deleted)
            if closing is not None:
                external_id = lane.source_id(record)
                self.lifecycle.seen(settings.campaign_id, lane.stream, version, external_id)
                self._plan_close(lane, seq, lane.record_key(record, None), external_id, closing)
                return
            if invalid is not None:
                raise LocalRejection(invalid, {})
            values = lane.mapper.values(record)
        except LocalRejection as rejection:
            external_id = rejection.lead.get(EXTERNAL_ID_FIELD) or lane.source_id(record)
            self.lifecycle.seen(settings.campaign_id, lane.stream, version, external_id)
            key = lane.record_key(record, values)
            self._reject_local(lane, seq, key, rejection, external_id=external_id)
            return
        external_id = values.get(EXTERNAL_ID_FIELD)
        self.lifecycle.seen(settings.campaign_id, lane.stream, version, external_id)
        if deleted:
            self._skip_delete(lane, seq)
            return
        if external_id:
            superseded = self.lifecycle.unplan(lane.stream, external_id)
            if superseded is not None:
                self.watermark.release(superseded.seq)  # a later record of the lead wins
        job = self._job(lane, seq, record, values)
        job.version = version
        self._staged.append((lane, job, values))
        if len(self._staged) >= STAGED_RECORDS:
            self.flush()

    def flush(self) -> None:
        """Look the staged leads up in the ledger in one query per campaign, then send them."""
        staged, self._staged = self._staged, []
        # Leads with a job on its way now: the rows read below may be overtaken by its outcome
        # before they are used, so they cannot say "unchanged" (read before the rows).
        busy = {job.lead_key for _l, job, _v in staged if self.delivery.is_pending(job.lead_key)}
        wanted: dict[int, list[str]] = {}
        for _lane, job, _values in staged:
            if job.external_id is not None:
                wanted.setdefault(job.ids["fCampaignId"], []).append(job.external_id)
        known = {c: self.ledger.get_many(c, ids) for c, ids in wanted.items()}
        in_doubt = {
            c: self.ledger.inserts_unsettled(c, ids, before=self._started)
            for c, ids in wanted.items()
        }
        for lane, job, values in staged:
            entry = None
            if job.external_id is not None:
                entry = known[job.ids["fCampaignId"]].get(job.external_id)
                self._inserted_before(job, in_doubt[job.ids["fCampaignId"]].get(job.external_id))
            self._decide(lane, job, values, entry, stale=job.lead_key in busy)

    @staticmethod
    def _inserted_before(job: Job, sent: str | None) -> None:
        """An earlier run died with an insert of this lead in flight (`sent`: the fingerprint
        it carried): the PBX may hold it, this very lead or an earlier version."""
        if sent is not None:
            job.lost_insert = sent == job.fingerprint
            job.maybe_inserted = sent != job.fingerprint

    def _decide(
        self, lane: Lane, job: Job, values: LeadValues, entry: Entry | None, *, stale: bool
    ) -> None:
        """Send a lead, or settle it at once: unchanged (unless its row may be `stale`), or a
        reopen that cannot be sent."""
        if job.operation == "upsert" and entry is not None and entry.on_pbx:
            job.endpoint = UPDATE  # a known lead: one update, no 112 first
        if entry is not None and entry.closed:
            try:
                self._reopen(lane, job, values)
            except LocalRejection as rejection:
                self._reject_local(lane, job.seq, job.key, rejection, external_id=job.external_id)
                return
        elif not stale and self._unchanged(job, entry):
            self.stats.add(lane.stream, UNCHANGED)
            self.watermark.release(job.seq)
            return
        self._send(lane, job)

    def _send(self, lane: Lane, job: Job, action: str | None = None) -> None:
        if self.dry_run:
            self._write_dry_run(job, action)
            return
        self.preflight.check([(lane.stream, lane.settings)])  # calls the PBX once per ids
        self._start_progress()
        self.delivery.submit(job)

    def _record_version(self, lane: Lane, message_version: int | None) -> int | None:
        """The full-table version a record of a mirrored stream belongs to."""
        if not lane.settings.mirror:
            return None
        version, dropped = self.lifecycle.record_version(lane.stream, message_version)
        if dropped is not None:
            self.watermark.release(dropped)  # a newer version replaces a complete one
        return version

    def filtered(self, streams: Sequence[str], record: Any) -> None:
        """Streams whose stream map filtered the record out: its row still exists (mirror)."""
        for stream in streams:
            lane = self._lanes.get(stream)
            if lane is None or stream in self._reached_lanes or not lane.settings.mirror:
                continue
            version = self._record_version(lane, self._incoming[1])
            external_id = lane.source_id(record) if isinstance(record, Mapping) else None
            if external_id is None:
                # Its id is computed by the map that dropped it: the version cannot say which
                # leads it holds, so it closes none.
                self.lifecycle.blind(stream)
            self.lifecycle.seen(lane.settings.campaign_id, stream, version, external_id)

    def activate_version(self, streams: Sequence[str], version: int) -> None:
        """An ACTIVATE_VERSION for the streams a tap stream maps to."""
        for stream in streams:
            lane = self._lanes.get(stream)
            if lane is None or not lane.settings.mirror:
                continue
            seq = self.watermark.open_record()
            complete, replaced = self.lifecycle.activate_version(stream, version, seq)
            if replaced is not None:
                self.watermark.release(replaced)  # an earlier complete version's hold
            if not complete:
                self.watermark.release(seq)

    # --- closing and reopening ---------------------------------------------------------------

    def _close_reason(self, lane: Lane, record: Mapping[str, Any], deleted: bool) -> str | None:
        settings = lane.settings
        if settings.close_disposition is None:
            return None
        if deleted:
            return "deleted"
        if settings.close_field is not None:
            try:
                if is_true(extract(record, settings.close_field)):
                    return "close_field"
            except NotABoolean as exc:
                raise LocalRejection(
                    f"close_field `{settings.close_field}` is {exc}: expected true/yes/y/1 or "
                    "false/no/n/0/empty",
                    {},
                ) from None
        return None

    def _plan_close(
        self, lane: Lane, seq: int, key: Any, external_id: str | None, reason: str
    ) -> None:
        if not external_id:
            self._reject_local(
                lane, seq, key, LocalRejection("cannot close a lead without njExternalLeadId")
            )
            return
        entry = self.ledger.get(lane.settings.campaign_id, external_id)
        on_its_way = self._on_its_way((lane.settings.campaign_id, external_id))
        if entry is not None and entry.closed and not self.full_resend and not on_its_way:
            self.stats.add(lane.stream, UNCHANGED)  # closed already: no call
            self.watermark.release(seq)
            return
        replaced = self.lifecycle.plan(Close(lane.stream, external_id, reason, seq, key))
        if replaced is not None:
            self.watermark.release(replaced.seq)

    def _on_its_way(self, lead_key: Any) -> bool:
        """A job for this lead is staged or with delivery (a reopen, say): the ledger's row
        does not say yet what the PBX will hold."""
        return self.delivery.is_pending(lead_key) or any(
            job.lead_key == lead_key for _lane, job, _values in self._staged
        )

    def _skip_delete(self, lane: Lane, seq: int) -> None:
        if lane.stream not in self._warned_deletes:
            self._warned_deletes.add(lane.stream)
            LOGGER.warning(
                "stream %r: records deleted at the source are not sent and their leads are not "
                "closed: set close_disposition to close them",
                lane.stream,
            )
        self.stats.add(lane.stream, UNCHANGED)
        self.watermark.release(seq)

    def _reopen(self, lane: Lane, job: Job, values: LeadValues) -> None:
        """A closed lead comes back open: it needs a disposition that opens it."""
        reopen = lane.settings.reopen_disposition
        if values.get(DISPOSITION) is None:
            if reopen is None:
                raise LocalRejection(
                    "the lead was closed and its record is open again: map njDisposition or "
                    "set reopen_disposition to reopen it",
                    lane.mapper.render(values, UPDATE),
                )
            job.render = lambda endpoint, _fallback: lane.mapper.render(
                {**values, DISPOSITION: reopen}, endpoint
            )
        job.delivered_as = REOPENED

    def _close_job(self, lane: Lane, close: Close) -> Job:
        settings = lane.settings
        body = {f: NO_CHANGE for f in settings.mapping if f != DISPOSITION}
        body[EXTERNAL_ID_FIELD] = close.external_id
        body[DISPOSITION] = str(settings.close_disposition)
        return Job(
            seq=close.seq,
            stream=lane.stream,
            key=close.key,
            lead_key=(settings.campaign_id, close.external_id),
            ids=lane.ids,
            operation=CLOSE,
            endpoint=UPDATE,
            render=lambda _endpoint, _fallback: dict(body),
            has_external_id=True,
            external_id=close.external_id,
            fingerprint=CLOSED,
            delivered_as=CLOSED,
            reason=close.reason,
        )

    def _send_closes(self) -> None:
        """End of input: every stream's planned and mirror closes, unless the guard refuses."""
        end_seq = self.watermark.open_record()  # holds mirror closes decided only now
        try:
            for stream in self.lifecycle.streams():
                lane = self._lanes.get(stream)
                if lane is not None:
                    self._close_stream(lane, end_seq)
        finally:
            self.watermark.release(end_seq)

    def _close_stream(self, lane: Lane, end_seq: int) -> None:
        settings = lane.settings
        closes = self.lifecycle.planned(lane.stream)
        held: int | None = None
        if settings.mirror:
            mirrored, held = self.lifecycle.mirror_closes(
                lane.stream, settings.campaign_id, end_seq
            )
            closes = closes + mirrored
        refused = False
        if closes:
            open_leads = len(self.ledger.open_leads(settings.campaign_id, lane.stream))
            refused = guard_refuses(len(closes), open_leads, settings.max_close_ratio)
        if refused:
            refusal = Refusal(lane.stream, len(closes), open_leads, settings.max_close_ratio)
            LOGGER.error("%s%s", "dry run: " if self.dry_run else "", refusal.message())
            if not self.dry_run:
                self._refusals.append(refusal)  # their records stay unsettled: no STATE passes
                return
        for close in closes:
            if close.seq in (held, end_seq):
                self.watermark.hold(close.seq)
            job = self._close_job(lane, close)
            if refused:
                self._write_dry_run(job, "close", refused=True)
            else:
                self._send(lane, job, "close")
        if held is not None and held != end_seq:
            self.watermark.release(held)  # the ACTIVATE_VERSION's own hold

    # --- re-delivery -----------------------------------------------------------------------

    def _redeliver(self, lane: Lane) -> None:
        """At a stream's start: send again the rejects of its campaign whose wait is over."""
        settings = lane.settings
        if not settings.redeliver_after_s or lane.stream in self._redelivering:
            return
        self._redelivering.add(lane.stream)
        due = self.ledger.due_rejects(
            settings.campaign_id, lane.stream, settings.redeliver_after_s, settings.max_redeliveries
        )
        if not due:
            return
        LOGGER.info(
            "stream %r: re-delivering %d rejected lead(s) whose wait is over", lane.stream, len(due)
        )
        in_doubt = self.ledger.inserts_unsettled(
            settings.campaign_id, [r.external_id for r in due], before=self._started
        )
        for reject in due:
            entry = {
                "stream": lane.stream,
                "key": reject.external_id,
                "lead": reject.lead,
                "ids": lane.ids,  # today's ids: an allocation may have changed since
                "endpoint": reject.endpoint,
                "fingerprint": reject.fingerprint,
            }
            job = self.reject_job(entry, settings.fallback_disposition)
            is_close = reject.fingerprint == CLOSED
            job.operation = CLOSE if is_close else settings.operation
            job.delivered_as = CLOSED if is_close else REDELIVERED
            job.redelivery = True
            self._inserted_before(job, in_doubt.get(reject.external_id))
            self._send(lane, job, "redeliver")

    def reject_job(self, entry: Mapping[str, Any], fallback: str | None) -> Job:
        """A job that sends a reject line's lead again, exactly as it was sent."""
        lead = {str(k): str(v) for k, v in dict(entry.get("lead") or {}).items()}
        ids = {str(k): int(v) for k, v in dict(entry.get("ids") or {}).items()}

        def render(endpoint: str, use_fallback: bool) -> dict[str, str]:
            # The body as sent; an insert never carries <No Change> (an update keeps fields so).
            body = {k: v for k, v in lead.items() if endpoint != INSERT or v != NO_CHANGE}
            if use_fallback and fallback:
                body[DISPOSITION] = fallback
            return body

        external_id = lead.get(EXTERNAL_ID_FIELD) or None
        seq = self.watermark.open_record()  # held until it settles; not a record of the input
        return Job(
            seq=seq,
            stream=str(entry.get("stream")),
            key=entry.get("key"),
            lead_key=(ids.get("fCampaignId"), external_id) if external_id else ("record", seq),
            ids=ids,
            operation="upsert",
            endpoint=str(entry.get("endpoint") or INSERT),
            render=render,
            has_fallback_disposition=bool(fallback),
            has_external_id=bool(external_id),
            external_id=external_id,
            fingerprint=str(entry.get("fingerprint") or ""),
        )

    def failed_inside(self) -> bool:
        """Whether the error the current record raised came out of `accept` (ours, not the
        data's)."""
        return self._accepting

    def reject_unread(
        self, stream: str, record: Any, reason: str, *, id_known: bool = True
    ) -> None:
        """The SDK failed on a record before it reached this stream: rejected locally, the run
        goes on. A mirrored stream counts its row as present, so the failure closes nothing;
        without a known id (`id_known`: a failed stream map may compute it) the version closes
        none."""
        lane = self._lanes.get(stream)
        if lane is None or not isinstance(record, Mapping):
            self._write_local_reject(stream, None, reason, {}, lane.ids if lane else None)
            self._count_rejected_record()
            return
        external_id = lane.source_id(record) if id_known else None
        if lane.settings.mirror:
            if external_id is None:
                self.lifecycle.blind(stream)  # its id may be the failed map's to compute
            version = self._record_version(lane, self._incoming[1])
            self.lifecycle.seen(lane.settings.campaign_id, stream, version, external_id)
        self.watermark.hold(self._seq)
        self._reject_local(
            lane,
            self._seq,
            lane.record_key(record, None),
            LocalRejection(reason),
            external_id=external_id,
        )

    def _unchanged(self, job: Job, entry: Entry | None) -> bool:
        """The ledger holds this very lead as it reached the PBX, and nothing is on its way."""
        if self.full_resend or entry is None or entry.fingerprint != job.fingerprint:
            return False
        return not self.delivery.is_pending(job.lead_key)

    def _note_insert(self, job: Job) -> None:
        """Before an insert's call (a delivery worker): a run that dies with it in flight
        leaves the note for the next one (README "The ledger")."""
        if job.external_id is not None and not self.dry_run:
            self.ledger.insert_sent(job.ids["fCampaignId"], job.external_id, job.fingerprint)

    def _remember(self, job: Job, outcome: str, code: int | str | None) -> None:
        if outcome == REJECTED and not job.redelivery and job.operation != CLOSE:
            self._count_rejected_record()
        if outcome == REJECTED and not (isinstance(code, int) and lookup(code) is not None):
            return  # a foreign answer or an undocumented code: send the lead again next run
        if job.external_id is None or self.dry_run:
            return
        campaign_id = job.ids["fCampaignId"]
        mark = job.fingerprint
        extra: dict[str, Any] = {"stream": job.stream}
        if outcome in CLOSED_OUTCOMES:
            mark = CLOSED  # whatever the lead held: any later record of it reopens it
        else:
            extra["version"] = job.version
        if outcome == REJECTED:  # kept to be re-delivered as it was sent
            extra.update(
                rejected_lead=job.last_body,
                endpoint=job.endpoint,
                ids=job.ids,
                redelivery=job.redelivery,
            )
        kept = outcome if outcome in CLOSED_OUTCOMES or outcome == REJECTED else DELIVERED
        self.ledger.record(campaign_id, job.external_id, mark, kept, code, **extra)
        if kept == DELIVERED and job.redelivery:
            self._resolved.add((campaign_id, job.external_id))
            self.ledger.resolve_lead(campaign_id, job.external_id, self._started)

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

    def _reject_local(
        self,
        lane: Lane,
        seq: int,
        key: Any,
        rejection: LocalRejection,
        *,
        external_id: Any = None,
    ) -> None:
        """Reject a record before sending; an unchanged one the ledger remembers: no new line."""
        campaign_id = lane.settings.campaign_id
        remembered = isinstance(external_id, str) and external_id and not self.dry_run
        mark = fingerprint({"reason": rejection.reason, "lead": rejection.lead})
        if remembered and not self.full_resend:
            entry = self.ledger.get(campaign_id, external_id)
            if entry is not None and entry.outcome == LOCAL and entry.fingerprint == mark:
                self.stats.add(lane.stream, UNCHANGED)
                self.watermark.release(seq)
                return
        self._write_local_reject(lane.stream, key, rejection.reason, rejection.lead, lane.ids)
        self._count_rejected_record()
        if remembered:
            # The reject's own row is committed in the same database by the write above, so
            # the ledger never remembers a reject that is not kept.
            self.ledger.record(campaign_id, external_id, mark, LOCAL, "local", stream=lane.stream)
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

    def _write_dry_run(self, job: Job, action: str | None = None, *, refused: bool = False) -> None:
        line: dict[str, Any] = {
            "stream": job.stream,
            "key": job.key,
            "endpoint": job.endpoint,
            "ids": job.ids,
            "lead": job.render(job.endpoint, False),
        }
        if action is not None:
            line["action"] = action
        if job.reason:
            line["reason"] = job.reason
        if action == "close":
            line["guard"] = "would refuse" if refused else "would allow"
        self.dry_run_file.write(line)
        self.stats.add(job.stream, DRY_RUN)
        self.watermark.release(job.seq)

    # --- the end of the run ---------------------------------------------------------------

    def finish(self) -> None:
        """End of input: wait for every lead to settle (raises DeliveryStopped on failure).

        On a failure or a signal the caller shuts down: calls in flight get their grace period
        before the client is closed under them.
        """
        self.flush()
        self._send_closes()
        self._warn_unused_stream_settings()
        self.delivery.wait_settled()
        if self._refusals:
            raise ClosesRefused(
                "; ".join(r.message() for r in self._refusals), setting="max_close_ratio"
            )
        self._check_reject_budget(final=True)
        self.close()

    def _warn_unused_stream_settings(self) -> None:
        """`streams` entries no stream of the input matched: a misspelt name (Meltano's
        `schema-table` stream ids) silently falls back to the top-level settings."""
        configured = self.config.get("streams")
        if not isinstance(configured, Mapping) or not self._lanes:
            return
        unused = sorted(str(name) for name in configured if name not in self._lanes)
        if unused:
            LOGGER.warning(
                "setting `streams` names %s, which the input did not have (its streams: %s)",
                ", ".join(repr(n) for n in unused),
                ", ".join(repr(n) for n in sorted(self._lanes)),
            )

    def _count_rejected_record(self) -> None:
        with self._rejected_lock:
            self._rejected_records += 1

    def _check_reject_budget(self, *, final: bool) -> None:
        """Stop when more than max_reject_ratio of the records so far were rejected."""
        received = self.records
        if self.max_reject_ratio is None or not received:
            return
        if not final and received < REJECT_BUDGET_MIN_RECORDS:
            return
        rejected = self._rejected_records
        if rejected > self.max_reject_ratio * received:
            raise RejectBudgetExceeded(
                f"{rejected} of {received} records rejected, more than max_reject_ratio="
                f"{self.max_reject_ratio:g}: check the mapping and the campaign; the reject file "
                f"{self.rejects.path} says why"
            )

    def shutdown(
        self,
        grace_s: float | None = None,
        *,
        error: BaseException | None = None,
        stopped_by: Callable[[int], str] | None = None,
    ) -> int:
        """On a signal or a failure: no new calls, wait for calls in flight; returns records
        left unsent. The run report gives `error`, or what `stopped_by` makes of the unsent
        count when records are left."""
        grace = float(setting(self.config, "shutdown_grace_s") if grace_s is None else grace_s)
        left = self.delivery.stop(grace)
        unsent = left if left else self.watermark.unsettled
        self._error = error
        if stopped_by is not None and unsent:
            self._stop_note = stopped_by(unsent)
        self.close()
        return unsent

    def close(self) -> None:
        """Stop workers and the progress thread, sync files, log the summary, write the run
        report (once)."""
        if self._closed:
            return
        self._closed = True
        self._stop_progress.set()
        self.delivery.close()
        self.rejects.close()
        if self._resolved:
            resolve_lines(self.rejects.path, self._resolved, before=self.stats.started_at)
        self.dry_run_file.close()
        self.client.close()
        self.ledger.close()
        for line in self.stats.summary_lines():
            LOGGER.info(line)
        self.stats.emit_metrics(final=True)
        report_file = self.config.get("report_file")
        if report_file:
            try:
                self.stats.write_report(report_file, error=self._error_line())
            except Exception as exc:  # object stores raise their own (no s3fs, credentials)
                LOGGER.error(
                    "cannot write report_file %s: %s", _shown(str(report_file)), _reason(exc)
                )

    def _error_line(self) -> str | None:
        """Why the run failed, for its report: our own messages whole, anything else by its
        kind only (it never passed our checks for secrets)."""
        error = self._error or self.delivery.failure
        if error is None:
            return self._stop_note
        if isinstance(error, (DeliveryStopped, ConfigError, InputError)):
            return str(error)
        return type(error).__name__

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


def _shown(location: str) -> str:
    """A file or URL for a message, without any user or password in it."""
    parts = urlsplit(location)
    if not parts.scheme or "@" not in parts.netloc:
        return location
    return parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]).geturl()


def _reason(exc: Exception) -> str:
    """An error in one short line."""
    text = getattr(exc, "strerror", None) or str(exc)
    line = text.splitlines()[0][:200] if text else ""
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__
