"""Delivery: a bounded window of leads, per-lead ordering, paced calls, retries, settlement.

The main thread submits jobs (blocking when the window is full: backpressure on stdin). Worker
threads take due jobs in order, wait for a permit from the shared limiter, make one call, feed
the round trip to the limiter and act on the answer through `policy.next_step`. Two jobs for the
same lead are never in flight at once: a later one waits behind the earlier one, so it wins.
Every job ends settled (delivered, or durably rejected) or the run stops (`DeliveryStopped`).

A *foreign* answer (not the CampaignAPI's: a gateway's page, a WAF's block) may be the lead's
fault (its content tripped a rule) or the way's (everything is blocked). The job is parked until
the answers around it tell: an answer of the CampaignAPI settles every parked job as rejected
(`foreign`); three foreign answers with none of the CampaignAPI's between them stop the run, the
parked jobs unsettled. When nothing else is left to send, an update without a lead (answered 113
by the CampaignAPI, and touching no lead) asks the way. Undocumented codes reject their lead; too
many of them in one run mean the PBX speaks another API and stop it.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import backoff

from target_noojee import codes
from target_noojee.client import Outcome
from target_noojee.codes import COULDNT_FIND_THE_LEAD, DUPLICATE, Kind
from target_noojee.pacing import Limiter, Permit, Signal
from target_noojee.policy import INSERT, UPDATE, Attempt, next_step
from target_noojee.rejects import RejectStore, reject_entry
from target_noojee.report import CLOSE_UNKNOWN, DELIVERED, REJECTED, RETRIED, UNCHANGED, RunStats

LOGGER = logging.getLogger("target_noojee.delivery")

FOREIGN = "foreign"  # the reject code of a lead whose own answer was not the CampaignAPI's
FOREIGN_IN_A_ROW = 3  # foreign answers with no CampaignAPI answer between them: the run stops
UNDOCUMENTED_PER_RUN = 20  # undocumented codes in one run: the run stops
_ASK_PAUSE_S = 1.0  # between two questions to the way, when the first got a foreign answer


class Sender(Protocol):
    """What delivery needs of the client."""

    def send_lead(
        self,
        endpoint: str,
        ids: Mapping[str, int],
        body: Mapping[str, str],
        *,
        allow_duplicates: bool = False,
    ) -> Outcome:
        """One lead call."""
        ...


class DeliveryStopped(Exception):
    """The run cannot go on; str() is one operator-facing line."""

    def __init__(self, message: str, *, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


class Interrupted(Exception):
    """A stop was requested (a signal) while the main thread waited on delivery."""


@dataclass(eq=False)
class Job:
    """One lead on its way to the PBX."""

    seq: int  # the watermark number of the record it came from
    stream: str
    key: Any  # the record's key, for the reject file and logs
    lead_key: Hashable  # what identifies the lead on the PBX: jobs with one key go in order
    ids: Mapping[str, int]  # fTemplateId / fCampaignId / fAllocationId
    operation: str
    endpoint: str
    render: Callable[[str, bool], dict[str, str]]  # (endpoint, use_fallback) -> body
    allow_duplicates: bool = False
    has_fallback_disposition: bool = False
    has_external_id: bool = False  # only then can a lost insert be resolved by an update
    fallback_used: bool = False
    lost_insert: bool = False  # this very lead may have been inserted (a reply lost)
    maybe_inserted: bool = False  # a run that died may have inserted an earlier version of it
    duplicate: tuple[Outcome, dict[str, str]] | None = field(default=None, repr=False)  # a 105
    queued_at: float = 0.0  # when it became due first: a resend keeps its place in line
    first_failure: float | None = None
    backing_off: bool = False  # waiting in the heap for its retry
    last_error: str = ""
    waits: Iterator[float] | None = field(default=None, repr=False)
    external_id: str | None = None
    fingerprint: str = ""  # of the mapped lead, for the ledger
    delivered_as: str = DELIVERED  # what a 0 counts as: delivered, closed, reopened ...
    redelivery: bool = False  # a reject sent again (README "Re-delivering rejects")
    version: int | None = None  # the full-table version its record belongs to
    reason: str = ""  # why a close closes: deleted, close_field, not in version N
    last_body: dict[str, str] | None = field(default=None, repr=False)  # as last sent


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff with full jitter (python-backoff's wait generators), bounded per record."""

    max_retry_time_s: float = 1800.0
    base_wait_s: float = 0.5
    max_wait_s: float = 60.0
    overload_pause_s: float = 0.0  # minimum pause after a 109 (a manual import may be running)

    def waits(self) -> Iterator[float]:
        """A fresh generator of waits before jitter."""
        gen = backoff.expo(base=2, factor=self.base_wait_s, max_value=self.max_wait_s)
        next(gen)  # python-backoff generators are primed with one next()
        return gen


def limiter_signal(outcome: Outcome) -> Signal:
    """What one answer says about the PBX's capacity."""
    if outcome.connect_failed:
        return Signal.CONNECT_FAILED
    if outcome.code == codes.TOO_MANY_CONCURRENT:
        return Signal.OVERLOAD
    if outcome.kind is Kind.TRANSIENT:
        return Signal.ERROR
    return Signal.OK


class Delivery:
    """The in-flight window and its worker threads, shared by every stream of one PBX."""

    def __init__(
        self,
        sender: Sender,
        limiter: Limiter,
        *,
        settle: Callable[[int], None],
        on_outcome: Callable[[Job, str, int | str | None], None] = lambda job, outcome, code: None,
        on_insert: Callable[[Job], None] = lambda job: None,
        rejects: RejectStore,
        stats: RunStats,
        retry: RetryPolicy,
        workers: int,
        window: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sender = sender
        self._limiter = limiter
        self._settle = settle
        self._on_outcome = on_outcome  # e.g. the ledger: called before the job settles
        self._on_insert = on_insert  # e.g. the ledger: called before an insert's call goes out
        self._rejects = rejects
        self._stats = stats
        self._retry = retry
        self._clock = clock
        self._window = max(window, 1)
        self._n_workers = max(workers, 1)
        self._cond = threading.Condition()
        # Jobs that may go now, in their place in line (when each first became due), and jobs
        # backing off, by when they may go: a retry, once due, goes before jobs queued after
        # its record, so one lost reply does not hold STATE back behind the whole window.
        self._heap: list[tuple[float, int, Job]] = []
        self._later: list[tuple[float, int, Job]] = []
        self._tiebreak = itertools.count()
        self._waiting: dict[Hashable, deque[Job]] = {}  # lead_key -> later jobs for that lead
        self._unsettled = 0
        self._sending = 0
        self._retrying = 0
        self._stopping = False
        self._interrupted = False  # set from a signal handler: no lock may be taken there
        self._failure: DeliveryStopped | None = None
        self._threads: list[threading.Thread] = []
        self._parked: list[tuple[Job, dict[str, str], Outcome]] = []  # foreign answers
        self._foreign_in_a_row = 0
        self._undocumented = 0
        self._asking = False  # a worker is asking the way (see _ask_the_way_if_idle)

    # --- the main thread's side -------------------------------------------------------------

    def submit(self, job: Job) -> None:
        """Queue a job; blocks while the window is full. Raises DeliveryStopped."""
        self._start_workers()
        with self._cond:
            while self._unsettled >= self._window and not self._stopping:
                self._check_interrupt()
                self._cond.wait(0.2)
            self._raise_failure()
            self._check_interrupt()
            if self._stopping:
                raise DeliveryStopped("delivery is shutting down")
            self._unsettled += 1
            later = self._waiting.get(job.lead_key)
            if later is not None:
                later.append(job)
                return
            self._waiting[job.lead_key] = deque()
            job.queued_at = self._clock()
            self._schedule(job, job.queued_at)

    def wait_settled(self, timeout_s: float | None = None) -> bool:
        """Wait until every submitted job is settled; raises DeliveryStopped on a failure."""
        deadline = None if timeout_s is None else self._clock() + timeout_s
        with self._cond:
            while self._unsettled and self._failure is None:
                self._check_interrupt()
                remaining = None if deadline is None else deadline - self._clock()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.2) if remaining is not None else 0.2)
            self._raise_failure()
            return True

    def is_pending(self, lead_key: Hashable) -> bool:
        """Whether a job for this lead is queued or in flight (its ledger row may be stale)."""
        with self._cond:
            return lead_key in self._waiting

    @property
    def interrupted(self) -> bool:
        """Whether a stop was requested (a signal)."""
        return self._interrupted

    def interrupt(self) -> None:
        """Ask the main thread's waits to give up (safe to call from a signal handler)."""
        self._interrupted = True

    def _check_interrupt(self) -> None:
        if self._interrupted:
            raise Interrupted

    def stop(self, grace_s: float) -> int:
        """No new calls; wait up to grace_s for calls in flight. Returns jobs left unsettled."""
        deadline = self._clock() + grace_s
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            while self._sending and self._clock() < deadline:
                self._cond.wait(max(0.0, min(0.2, deadline - self._clock())))
            return self._unsettled

    def close(self) -> None:
        """Stop the workers (after wait_settled or stop)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=0.5)

    @property
    def failure(self) -> DeliveryStopped | None:
        """The error that stopped delivery, if any."""
        return self._failure

    def progress(self) -> dict[str, int]:
        """Counts for the progress line."""
        with self._cond:
            return {
                "unsettled": self._unsettled,
                "in_flight": self._sending,
                "retrying": self._retrying,
            }

    # --- worker side ------------------------------------------------------------------------

    def _start_workers(self) -> None:
        if self._threads:
            return
        for n in range(self._n_workers):
            thread = threading.Thread(target=self._work, name=f"noojee-send-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _schedule(self, job: Job, due: float) -> None:
        # Called with the lock held.
        if due > self._clock():
            heapq.heappush(self._later, (due, next(self._tiebreak), job))
        else:
            heapq.heappush(self._heap, (job.queued_at, next(self._tiebreak), job))
        self._cond.notify()

    def _promote_due(self) -> None:
        # Called with the lock held: backed-off jobs whose wait is over join the line.
        now = self._clock()
        while self._later and self._later[0][0] <= now:
            job = heapq.heappop(self._later)[2]
            heapq.heappush(self._heap, (job.queued_at, next(self._tiebreak), job))

    def _wait_for_due_job(self) -> bool:
        """Block until some job is due; False when stopping."""
        with self._cond:
            while not self._stopping:
                self._promote_due()
                if self._heap:
                    return True
                wait = self._later[0][0] - self._clock() if self._later else None
                self._cond.wait(wait)
            return False

    def _take_due_job(self) -> Job | None:
        """Pop the first due job in line (another worker may have taken it meanwhile)."""
        with self._cond:
            self._promote_due()
            if self._stopping or not self._heap:
                return None
            job = heapq.heappop(self._heap)[2]
            if job.backing_off:
                job.backing_off = False
                self._retrying -= 1
            self._sending += 1
            return job

    def _work(self) -> None:
        # Permit first, job second: the job that goes out is always the earliest due when a
        # slot frees up, so no job starves behind others waiting for the limiter.
        while self._wait_for_due_job():
            permit = self._limiter.acquire(timeout=0.2)
            if permit is None:
                continue
            job = self._take_due_job()
            if job is None:
                self._limiter.release(permit, 0.0, Signal.IGNORE)
                continue
            try:
                self._attempt(job, permit)
            except Exception as exc:  # a bug must stop the run, not hang it
                LOGGER.debug("delivery worker failed", exc_info=True)
                self._fail(DeliveryStopped(f"internal error in delivery: {type(exc).__name__}"))
            finally:
                with self._cond:
                    self._sending -= 1
                    self._cond.notify_all()
            self._ask_the_way_if_idle()

    def _attempt(self, job: Job, permit: Permit) -> None:
        try:
            body = job.render(job.endpoint, job.fallback_used)
            if job.endpoint == INSERT and job.external_id is not None:
                self._on_insert(job)
            outcome = self._sender.send_lead(
                job.endpoint, job.ids, body, allow_duplicates=job.allow_duplicates
            )
        except BaseException:
            self._limiter.release(permit, 0.0, Signal.IGNORE)
            raise
        self._limiter.release(permit, outcome.rtt_s, limiter_signal(outcome))
        self._act(job, body, outcome)

    def _act(self, job: Job, body: dict[str, str], outcome: Outcome) -> None:
        job.last_body = body
        if outcome.campaign_api:
            self._settle_parked(outcome)
        if outcome.maybe_applied and job.endpoint == INSERT and job.has_external_id:
            job.lost_insert = True
        if outcome.code == COULDNT_FIND_THE_LEAD:  # the PBX does not hold it: no insert landed
            job.lost_insert = job.maybe_inserted = False
            if job.duplicate is not None and job.operation == "insert":
                # So the 105 that sent it to an update was the PBX's own answer: another lead
                # holds the number. Rejected as that, the insert's body and endpoint kept.
                outcome, body = job.duplicate
                job.endpoint = INSERT
        attempt = Attempt(
            operation=job.operation,
            endpoint=job.endpoint,
            has_fallback_disposition=job.has_fallback_disposition,
            fallback_used=job.fallback_used,
            lost_insert=job.lost_insert,
            maybe_inserted=job.maybe_inserted,
        )
        step = next_step(attempt, outcome)
        if step.action == "delivered":
            self._on_outcome(job, job.delivered_as, outcome.code)
            self._stats.add(job.stream, job.delivered_as, outcome.label, endpoint=job.endpoint)
            self._finish(job, landed=True)
        elif step.action == "close_unknown":
            self._on_outcome(job, CLOSE_UNKNOWN, outcome.code)
            self._stats.add(job.stream, CLOSE_UNKNOWN, outcome.label)
            self._finish(job)
        elif step.action == "retry":
            self._stats.add(job.stream, RETRIED, outcome.label)
            self._retry_later(job, outcome)
        elif step.action == "resend":
            if outcome.code == DUPLICATE and step.endpoint == UPDATE:
                job.duplicate = (outcome, body)
            job.endpoint = step.endpoint or job.endpoint
            job.fallback_used = job.fallback_used or step.use_fallback_disposition
            with self._cond:
                self._schedule(job, job.queued_at)
        elif step.action == "stop":
            setting = step.setting or outcome.setting
            self._fail(DeliveryStopped(_stop_message(outcome, setting), setting=setting))
        elif step.action == "foreign":
            with self._cond:
                self._parked.append((job, body, outcome))
            self._count_foreign(outcome)
        else:
            code = outcome.code if outcome.code is not None else outcome.label
            self._write_reject(job, code, outcome.message, body, endpoint=job.endpoint)
            self._on_outcome(job, REJECTED, code)
            self._finish(job)
            if outcome.undocumented:
                self._count_undocumented(outcome)

    # --- answers that are not the CampaignAPI's ----------------------------------------------

    def _count_foreign(self, outcome: Outcome) -> None:
        with self._cond:
            self._foreign_in_a_row += 1
            in_a_row = self._foreign_in_a_row
        if in_a_row >= FOREIGN_IN_A_ROW:
            self._fail(
                DeliveryStopped(
                    f"the PBX could not be used: {in_a_row} answers in a row were not the "
                    f"Noojee CampaignAPI's (last: {outcome.message}); something between this "
                    "machine and the PBX (a gateway, WAF or proxy) answers instead. No lead was "
                    "rejected for it: the next run sends them again"
                )
            )

    def _count_undocumented(self, outcome: Outcome) -> None:
        with self._cond:
            self._undocumented += 1
            count = self._undocumented
        if count >= UNDOCUMENTED_PER_RUN:
            self._fail(
                DeliveryStopped(
                    f"the PBX could not be used: {count} answers with codes the vendor does not "
                    f"document (last: {outcome.message}); is it another version of the API?"
                )
            )

    def _settle_parked(self, proof: Outcome) -> None:
        """The CampaignAPI answers: each parked foreign answer was about its own lead."""
        with self._cond:
            self._foreign_in_a_row = 0
            parked, self._parked = self._parked, []
        for job, body, outcome in parked:
            self._write_reject(job, FOREIGN, outcome.message, body, endpoint=job.endpoint)
            self._on_outcome(job, REJECTED, FOREIGN)
            self._finish(job)

    def _ask_the_way_if_idle(self) -> None:
        """With only parked jobs left, one update without a lead tells the lead from the way.

        Called by a worker once it no longer counts as sending, so the last one to finish sees
        the others gone; one worker asks at a time.
        """
        with self._cond:
            if self._asking:
                return
            self._asking = True
        try:
            while True:
                with self._cond:
                    idle = bool(self._parked) and not (self._heap or self._later or self._sending)
                    if not idle or self._stopping:
                        return
                    ids = self._parked[0][0].ids
                permit = self._limiter.acquire(timeout=0.2)
                if permit is None:
                    continue
                outcome = self._sender.send_lead(UPDATE, ids, {})
                self._limiter.release(permit, outcome.rtt_s, limiter_signal(outcome))
                if outcome.campaign_api:
                    self._settle_parked(outcome)
                    return
                if outcome.kind is Kind.FOREIGN:
                    self._count_foreign(outcome)
                    time.sleep(_ASK_PAUSE_S)
                    continue
                with self._cond:  # the PBX does not answer at all: parked jobs wait their turn
                    parked, self._parked = self._parked, []
                for waiting, _body, _outcome in parked:
                    self._retry_later(waiting, outcome)
                return
        finally:
            with self._cond:
                self._asking = False

    def _retry_later(self, job: Job, outcome: Outcome) -> None:
        now = self._clock()
        if job.first_failure is None:
            job.first_failure = now
            job.waits = self._retry.waits()
        job.last_error = outcome.message
        elapsed = now - job.first_failure
        if elapsed > self._retry.max_retry_time_s:
            self._fail(
                DeliveryStopped(
                    f"lead {job.key!r} of stream {job.stream!r} kept failing for "
                    f"{elapsed:.0f}s (max_retry_time_s={self._retry.max_retry_time_s:g}); "
                    f"last error: {outcome.message}"
                )
            )
            return
        assert job.waits is not None
        wait = backoff.full_jitter(next(job.waits))
        if outcome.code == codes.TOO_MANY_CONCURRENT:
            wait = max(wait, self._retry.overload_pause_s)
        if outcome.retry_after_s is not None:
            wait = max(wait, outcome.retry_after_s)
        wait = min(wait, max(0.0, self._retry.max_retry_time_s - elapsed) + 0.01)
        with self._cond:
            job.backing_off = True
            self._retrying += 1
            self._schedule(job, now + wait)

    def _write_reject(
        self,
        job: Job,
        code: int | str,
        message: str,
        lead: Mapping[str, Any],
        *,
        endpoint: str | None,
    ) -> None:
        self._rejects.write(
            reject_entry(
                stream=job.stream,
                key=job.key,
                code=code,
                message=message,
                lead=lead,
                endpoint=endpoint,
                ids=job.ids,
                fingerprint=job.fingerprint or None,
            )
        )
        self._stats.add(job.stream, REJECTED, code)

    def _finish(self, job: Job, *, landed: bool = False) -> None:
        """A job is settled: the next one of its lead becomes due. When it `landed` (the PBX
        holds its lead), the next ones that carry that very lead settle as unchanged without a
        call (a record sent twice), and an upsert's next one is an update."""
        self._settle(job.seq)
        twins: list[Job] = []
        with self._cond:
            later = self._waiting.get(job.lead_key)
            while landed and later and _same_lead(job, later[0]):
                twins.append(later.popleft())
        for twin in twins:  # settled before they stop counting as unsettled
            self._stats.add(twin.stream, UNCHANGED)
            self._settle(twin.seq)
        with self._cond:
            self._unsettled -= 1 + len(twins)
            later = self._waiting.get(job.lead_key)
            if later:
                successor = later.popleft()
                if landed and successor.operation == "upsert" and successor.endpoint == INSERT:
                    successor.endpoint = UPDATE
                successor.queued_at = self._clock()
                self._schedule(successor, successor.queued_at)
            else:
                self._waiting.pop(job.lead_key, None)
            self._cond.notify_all()

    def _fail(self, error: DeliveryStopped) -> None:
        with self._cond:
            if self._failure is None:
                self._failure = error
            self._stopping = True
            self._cond.notify_all()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure


def _same_lead(done: Job, later: Job) -> bool:
    """Whether `later` would send the PBX the lead `done` just delivered, unchanged."""
    plain = done.delivered_as == DELIVERED and later.delivered_as == DELIVERED
    return (
        plain
        and not later.redelivery
        and bool(done.fingerprint)
        and (later.fingerprint == done.fingerprint)
    )


def _stop_message(outcome: Outcome, setting: str | None) -> str:
    check = f"; check the setting `{setting}`" if setting else ""
    return f"the PBX answered {outcome.message}{check}"
