"""The lifecycle of a lead: which leads a run closes, and when it must refuse to.

Three things close a lead (README "Closing leads"): a soft delete (`_sdc_deleted_at` on the
incoming RECORD message), a true `close_field`, and a full-table sync (`mirror`) that no longer
contains it. Closes are planned while the input is read and sent once it ended, so the guard
(`max_close_ratio`) can count every close of a stream before any goes out: a run that would close
too many closes none of them, and the records that asked for them stay unsettled.

Full-table versions: a version is *complete* at an ACTIVATE_VERSION that follows its records (the
singer-io convention); a version announced only before its records (SDK taps) is never proven
complete, so a lead is closed there only once it is missing from two consecutive versions that
each reached the end of input. Nothing here calls the PBX; the pipeline sends what it plans.
"""

from __future__ import annotations

import logging
import numbers
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from target_noojee.ledger import Ledger

LOGGER = logging.getLogger("target_noojee")

GUARD_FLOOR = 10  # a run may always close this many leads of a stream, whatever its share
_SEEN_BATCH = 500

_TRUE = frozenset({"true", "yes", "y", "1"})
_FALSE = frozenset({"false", "no", "n", "0", ""})


class NotABoolean(ValueError):
    """A close_field value that is neither true nor false."""


def is_true(value: Any) -> bool:
    """A close_field value: JSON booleans, true/yes/y/1 and false/no/n/0/empty/null."""
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, numbers.Number) and value in (0, 1):  # int, float, Decimal
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise NotABoolean(repr(value)[:60])


@dataclass
class Close:
    """One lead to close, and why."""

    stream: str
    external_id: str
    reason: str  # "deleted" | "close_field" | "not in version N"
    seq: int  # the watermark number it holds until it is sent
    key: Any = None


@dataclass
class _Versions:
    """What one stream's full-table versions did in this run."""

    current: int | None = None
    records: int = 0  # records of the current version seen so far
    complete: int | None = None  # a version proven complete by a trailing ACTIVATE_VERSION
    complete_seq: int | None = None  # the watermark number held for its closes
    blind: bool = False  # some of its rows could not be identified: it closes nothing


@dataclass
class Refusal:
    """A stream whose closes the guard refused."""

    stream: str
    count: int
    open_leads: int
    ratio: float
    seqs: list[int] = field(default_factory=list)

    def message(self) -> str:
        """One line for the operator."""
        return (
            f"stream {self.stream!r}: this run would close {self.count} of its "
            f"{self.open_leads} open lead(s), more than max_close_ratio={self.ratio:g}: none "
            "was closed; if the source really lost them, raise max_close_ratio for one run"
        )


def guard_refuses(count: int, open_leads: int, ratio: float) -> bool:
    """Whether closing `count` of `open_leads` is more than the run may do unasked."""
    return count > GUARD_FLOOR and count > ratio * open_leads


class Lifecycle:
    """Closes planned during a run, per stream and campaign (main thread only, but for
    `flush_seen`, which the thread that writes a STATE calls first)."""

    def __init__(self, ledger: Ledger, *, dry_run: bool = False) -> None:
        self._ledger = ledger
        self._dry_run = dry_run  # nothing is written to the ledger; presence is kept in memory
        self._planned: dict[tuple[str, str], Close] = {}  # (stream, external id) -> close
        self._versions: dict[str, _Versions] = {}
        self._seen: dict[tuple[int, str, int], list[str]] = {}
        self._seen_lock = threading.Lock()  # marks are added on the main thread, flushed on any
        self._seen_now: dict[tuple[int, str], set[str]] = {}  # dry run: seen in this run

    # --- while reading ---------------------------------------------------------------------

    def record_version(self, stream: str, version: int | None) -> tuple[int | None, int | None]:
        """A record of a stream arrived with this message version: the version it belongs to,
        and the watermark number of a complete version that a newer one replaces."""
        state = self._versions.setdefault(stream, _Versions())
        if version is None:
            version = state.current
        if version is None:
            return None, None
        dropped = None
        if version != state.current:
            dropped = self._begin(state, version)
        state.records += 1
        return version, dropped

    def activate_version(self, stream: str, version: int, seq: int) -> tuple[bool, int | None]:
        """An ACTIVATE_VERSION arrived: whether it completes a version (which then holds `seq`),
        and the watermark number of an earlier complete version it replaces."""
        state = self._versions.setdefault(stream, _Versions())
        if state.current == version and state.records:
            replaced = state.complete_seq
            state.complete, state.complete_seq = version, seq
            return True, replaced
        return False, self._begin(state, version) if version != state.current else None

    @staticmethod
    def _begin(state: _Versions, version: int) -> int | None:
        """A new version begins; a complete one of this run is superseded by it (its seq)."""
        dropped = state.complete_seq if state.complete is not None else None
        state.current, state.records = version, 0
        state.complete, state.complete_seq, state.blind = None, None, False
        return dropped

    def blind(self, stream: str) -> None:
        """A row of the current version was filtered out before its lead id could be read."""
        self._versions.setdefault(stream, _Versions()).blind = True

    def seen(self, campaign_id: int, stream: str, version: int | None, external_id: Any) -> None:
        """A row of the source was present in a version (sent, unchanged, filtered or not)."""
        if version is None or not isinstance(external_id, str) or not external_id:
            return
        with self._seen_lock:
            batch = self._seen.setdefault((campaign_id, stream, version), [])
            batch.append(external_id)
            full = len(batch) >= _SEEN_BATCH
        if full:
            self.flush_seen()

    def flush_seen(self) -> None:
        """Write the buffered presence marks to the ledger (a dry run keeps them in memory).
        Before any STATE goes out: a mark left in memory when the run dies would let the next
        run's mirror close a row the source still holds, behind a STATE that skips it."""
        with self._seen_lock:
            for (campaign_id, stream, version), ids in self._seen.items():
                if self._dry_run:
                    self._seen_now.setdefault((campaign_id, stream), set()).update(ids)
                else:
                    self._ledger.seen(campaign_id, stream, version, ids)
            self._seen.clear()

    def plan(self, close: Close) -> Close | None:
        """Plan a close; returns the close it replaces (a later record of the lead wins)."""
        previous = self._planned.pop((close.stream, close.external_id), None)
        self._planned[(close.stream, close.external_id)] = close
        return previous

    def unplan(self, stream: str, external_id: str) -> Close | None:
        """A later record of the lead is open: drop its planned close (returned)."""
        return self._planned.pop((stream, external_id), None)

    # --- at the end of input ---------------------------------------------------------------

    def mirror_closes(
        self, stream: str, campaign_id: int, end_seq: int
    ) -> tuple[list[Close], int | None]:
        """The leads a stream's versions leave out; and the watermark number they hold."""
        state = self._versions.get(stream)
        if state is None or (state.current is None and state.complete is None):
            return [], None
        self.flush_seen()
        present = self._seen_now.get((campaign_id, stream), set())
        open_leads = self._ledger.open_leads(campaign_id, stream)
        if state.blind:
            LOGGER.warning(
                "stream %r: a stream map filtered out rows of version %s whose njExternalLeadId "
                "it computes: this version cannot tell which leads left the source; it closes "
                "none",
                stream,
                state.complete or state.current,
            )
            if state.complete is not None:
                return [], state.complete_seq
            return [], None
        if state.complete is not None:
            version, seq = state.complete, state.complete_seq
            missing = [e for e, v, _at in open_leads if v != version and e not in present]
        else:
            assert state.current is not None
            version, seq = state.current, end_seq
            before = self._ledger.version_before(campaign_id, stream, version)
            if not self._dry_run:
                self._ledger.end_version(campaign_id, stream, version)
            if before is None:
                LOGGER.info(
                    "stream %r: version %s reached the end of input; a lead missing from it and "
                    "from the next one is closed then",
                    stream,
                    version,
                )
                return [], None
            previous, ended_at = before
            # Missing from both: last seen before the previous version, or never seen in one
            # though the ledger held it when the previous version ended.
            missing = [
                e
                for e, v, at in open_leads
                if e not in present and (v < previous if v is not None else at < ended_at)
            ]
        if not open_leads:
            LOGGER.warning(
                "stream %r: mirror can close nothing: the ledger knows no lead of this stream "
                "(a new or lost ledger)",
                stream,
            )
        reason = f"not in version {version}"
        planned = {c.external_id for c in self._planned.values() if c.stream == stream}
        assert seq is not None
        closes = [Close(stream, e, reason, seq, e) for e in missing if e not in planned]
        return closes, seq

    def planned(self, stream: str) -> list[Close]:
        """The closes records asked for in a stream."""
        return [c for c in self._planned.values() if c.stream == stream]

    def streams(self) -> Iterable[str]:
        """Every stream with a planned close or a version."""
        return sorted({c.stream for c in self._planned.values()} | set(self._versions))
