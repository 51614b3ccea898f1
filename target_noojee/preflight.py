"""Preflight: before the first lead goes out, check that the PBX answers, that it accepts the key,
and that every template, campaign and allocation id a stream uses exists on it.

Rules where the issue is silent:

- A PBX that does not answer (connection refused or reset, timeout, HTTP 429/5xx, 103) is
  retried with backoff and full jitter for up to ``preflight_timeout_s`` (default 60 s, or
  ``max_retry_time_s`` when that is shorter: a record would not wait longer either) — a PBX
  restarting for maintenance must not fail a scheduled run at once — then ``PreflightError``
  (exit 1). A refused key (HTTP 401/403), a wrong ``base_url`` (HTTP 404, not an http(s) URL)
  and a wrong id are ``ConfigError``s (exit 2): retrying cannot fix them.
- A wrong id's message names the setting as the operator wrote it (``campaign_id``, or
  ``streams.renewals.campaign_id`` when the stream overrides it) and lists the valid ids.
- The PBX's lists are fetched once per run and each (template, campaign, allocation) is checked
  once, so a stream that shares its ids with one already checked costs no call.
- Messages name the PBX by host (and port) only: never the URL, never the key.
- While it waits for the PBX, a stop request (``should_stop()``, set by a signal) ends the wait
  at once with ``delivery.Interrupted``, so SIGTERM is honoured as it is while delivering.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import backoff

from target_noojee.client import ClientError, NoojeeClient, Outcome
from target_noojee.codes import Kind
from target_noojee.delivery import DeliveryStopped, Interrupted
from target_noojee.settings import ConfigError, LeadSettings

LOGGER = logging.getLogger("target_noojee")

DEFAULT_TIMEOUT_S = 60.0
MAX_LISTED = 20  # valid ids shown in an error message; noojee-list shows them all
_FIRST_WAIT_S = 0.5
_LONGEST_WAIT_S = 10.0

StreamSettings = tuple[str, LeadSettings]  # (stream name, its lead settings)


class PreflightError(DeliveryStopped):
    """The PBX did not answer within the preflight bound: str() is one safe line (exit 1)."""


def pbx_host(base_url: str) -> str:
    """The host (and port) of ``base_url``, for messages; ConfigError when it is not http(s)."""
    try:
        parts = urlsplit(base_url.strip())
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port, parts = None, None, None
    if parts is None or parts.scheme not in ("http", "https") or not host:
        raise ConfigError(
            "base_url",
            "setting `base_url` must be an http(s) URL such as https://pbx.example.com.au",
        )
    shown = f"[{host}]" if ":" in host else host
    return f"{shown}:{port}" if port else shown


class RetryBound:
    """How long transient failures may go on: started by the first one, shared by several calls."""

    def __init__(self, seconds: float, knob: str = "preflight_timeout_s") -> None:
        self.seconds = seconds
        self.knob = knob  # what the operator sets to wait longer, for the message
        self._until: float | None = None

    def remaining(self) -> float:
        """Seconds left (the clock starts at the first call of this method)."""
        now = time.monotonic()
        if self._until is None:
            self._until = now + self.seconds
        return self._until - now


def fetch(
    call: Callable[[], list[dict[str, Any]]],
    *,
    host: str,
    what: str,
    bound: RetryBound,
    should_stop: Callable[[], bool] | None = None,
) -> list[dict[str, Any]]:
    """Run one list call, retrying transient failures with backoff while ``bound`` lasts.

    Raises ConfigError for a refused key or a wrong base_url, PreflightError when the PBX does
    not answer within the bound, delivery.Interrupted as soon as ``should_stop()`` (a signal).
    """
    waits = backoff.expo(base=2, factor=_FIRST_WAIT_S, max_value=_LONGEST_WAIT_S)
    next(waits)  # python-backoff generators are primed with one next()
    warned = False
    while True:
        try:
            return call()
        except ClientError as exc:
            outcome = exc.outcome
        if outcome.kind is not Kind.TRANSIENT:
            raise _refusal(outcome, host, what)
        remaining = bound.remaining()
        if remaining <= 0:
            raise PreflightError(
                f"cannot reach the PBX at {host}: {outcome.message} "
                f"(still failing after {bound.seconds:g} s; {bound.knob} sets how long to wait)"
            )
        if not warned:
            LOGGER.warning(
                "preflight: the PBX at %s does not answer (%s); retrying for up to %.0f s",
                host,
                outcome.message,
                remaining,
            )
            warned = True
        wait = backoff.full_jitter(next(waits))
        if outcome.retry_after_s is not None:
            wait = max(wait, outcome.retry_after_s)
        _sleep(max(0.0, min(wait, remaining)), should_stop)


def _sleep(seconds: float, should_stop: Callable[[], bool] | None) -> None:
    """Sleep, in short slices when a stop may be requested (a signal must not wait a minute)."""
    until = time.monotonic() + seconds
    while True:
        if should_stop is not None and should_stop():
            raise Interrupted
        left = until - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.2) if should_stop is not None else left)


def _refusal(outcome: Outcome, host: str, what: str) -> Exception:
    """The error for an answer that retrying cannot change."""
    if outcome.setting == "api_key":
        return ConfigError("api_key", f"the PBX at {host}: {outcome.message}")
    if outcome.http_status == 404:
        # Whatever the body says: the list endpoints exist on every CampaignAPI.
        return ConfigError(
            "base_url",
            f"setting `base_url`: no Noojee CampaignAPI at {host} (HTTP 404 for {what}); "
            "give the PBX root, e.g. https://pbx.example.com.au",
        )
    if outcome.setting == "base_url":
        return ConfigError("base_url", f"setting `base_url` (PBX at {host}): {outcome.message}")
    if outcome.setting is not None and not outcome.answered:
        return ConfigError(outcome.setting, f"the PBX at {host}: {outcome.message}")
    if outcome.setting is not None:
        return ConfigError(
            outcome.setting,
            f"the PBX at {host} answered {what} with {outcome.message}: "
            f"check setting `{outcome.setting}`",
        )
    return PreflightError(f"the PBX at {host} answered {what} with {outcome.message}")


def catalogue(entities: Iterable[Mapping[str, Any]]) -> dict[int, str]:
    """id -> name from a list reply; entries without an integer id are skipped."""
    found: dict[int, str] = {}
    for entity in entities:
        ident = entity.get("id")
        if isinstance(ident, str) and ident.strip().isdigit():
            ident = int(ident)
        if isinstance(ident, int) and not isinstance(ident, bool):
            name = entity.get("name")
            found[ident] = " ".join(str(name).split()) if name is not None else ""
    return found


def _valid(catalogue: Mapping[int, str], empty: str) -> str:
    """'41 (Outbound sales), 42 (Renewals)', at most MAX_LISTED of them."""
    if not catalogue:
        return f"none ({empty})"
    shown = []
    for ident in sorted(catalogue)[:MAX_LISTED]:
        name = catalogue[ident]
        if len(name) > 40:
            name = name[:37] + "..."
        shown.append(f"{ident} ({name})" if name else str(ident))
    more = len(catalogue) - MAX_LISTED
    return ", ".join(shown) + (f" and {more} more (noojee-list shows them all)" if more > 0 else "")


def setting_source(config: Mapping[str, Any], stream: str, name: str) -> str:
    """Where a stream's setting comes from: ``streams.<stream>.<name>`` when overridden."""
    streams = config.get("streams")
    overrides = streams.get(stream) if isinstance(streams, Mapping) else None
    if isinstance(overrides, Mapping) and overrides.get(name) is not None:
        return f"streams.{stream}.{name}"
    return name


class Preflight:
    """Checks a run's ids against the PBX once each; thread-safe, lists cached for the run."""

    def __init__(
        self,
        client: NoojeeClient,
        config: Mapping[str, Any],
        *,
        max_wait_s: float | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        self._client = client
        self._config = config
        self._should_stop = should_stop
        self._host: str | None = None  # base_url is checked at the first check, not here
        self.max_wait_s, self._knob = _bound(config, max_wait_s)
        self._lock = threading.Lock()
        self._templates: dict[int, str] | None = None
        self._campaigns: dict[int, dict[int, str]] = {}
        self._allocations: dict[int, dict[int, str]] = {}
        self._checked: set[tuple[int, int, int]] = set()

    def check(self, lanes: Iterable[StreamSettings]) -> None:
        """Check every lane whose ids were not checked yet; raises ConfigError or PreflightError."""
        with self._lock:
            bound = RetryBound(self.max_wait_s, self._knob)  # one bound for all these calls
            for stream, settings in lanes:
                if _ids(settings) not in self._checked:
                    self._check_lane(stream, settings, bound)

    @property
    def host(self) -> str:
        """The PBX's host (and port), for messages; ConfigError when base_url is not http(s)."""
        if self._host is None:
            self._host = pbx_host(str(self._config.get("base_url") or ""))
        return self._host

    def _fetch(
        self, call: Callable[[], list[dict[str, Any]]], what: str, bound: RetryBound
    ) -> dict[int, str]:
        found = fetch(call, host=self.host, what=what, bound=bound, should_stop=self._should_stop)
        return catalogue(found)

    def _check_lane(self, stream: str, settings: LeadSettings, bound: RetryBound) -> None:
        template, campaign, allocation = _ids(settings)
        if self._templates is None:
            self._templates = self._fetch(self._client.templates, "getCampaignTemplateList", bound)
            LOGGER.info(
                "preflight: the PBX at %s answered and accepted the key (%d template(s))",
                self.host,
                len(self._templates),
            )
        if template not in self._templates:
            raise self._wrong(
                stream,
                "template_id",
                template,
                "not a campaign template on the PBX",
                _valid(self._templates, "the PBX lists no templates"),
            )
        if template not in self._campaigns:
            self._campaigns[template] = self._fetch(
                lambda: self._client.campaigns(template),
                f"getCampaignList for template {template}",
                bound,
            )
        campaigns = self._campaigns[template]
        if campaign not in campaigns:
            raise self._wrong(
                stream,
                "campaign_id",
                campaign,
                f"not a campaign of template {template}",
                _valid(campaigns, "the template has no campaigns"),
            )
        if campaign not in self._allocations:
            self._allocations[campaign] = self._fetch(
                lambda: self._client.allocations(campaign),
                f"getAllocationList for campaign {campaign}",
                bound,
            )
        allocations = self._allocations[campaign]
        if allocation not in allocations:
            raise self._wrong(
                stream,
                "allocation_id",
                allocation,
                f"not an allocation of campaign {campaign}",
                _valid(allocations, "the campaign has no allocations"),
            )
        self._checked.add((template, campaign, allocation))
        LOGGER.info(
            "preflight: stream %r: template %d, campaign %d and allocation %d exist",
            stream,
            template,
            campaign,
            allocation,
        )

    def _wrong(self, stream: str, name: str, value: int, problem: str, valid: str) -> ConfigError:
        where = setting_source(self._config, stream, name)
        return ConfigError(
            where, f"setting `{where}` is {value}, {problem} (stream '{stream}'); valid: {valid}"
        )


def preflight(
    client: NoojeeClient,
    config: Mapping[str, Any],
    lanes: Iterable[StreamSettings],
    *,
    max_wait_s: float | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> None:
    """Check once, without a cache: the PBX answers, the key works, every lane's ids exist."""
    Preflight(client, config, max_wait_s=max_wait_s, should_stop=should_stop).check(lanes)


def _bound(config: Mapping[str, Any], max_wait_s: float | None) -> tuple[float, str]:
    """How long to wait for the PBX, and the setting that says so (for the message)."""
    if max_wait_s is not None:
        return max_wait_s, "preflight_timeout_s"
    if config.get("preflight_timeout_s") is not None:
        return float(config["preflight_timeout_s"]), "preflight_timeout_s"
    # Never longer than a record may keep failing: the operator who set that wants the run
    # to give up that soon.
    record_bound = config.get("max_retry_time_s")
    if record_bound is not None and float(record_bound) < DEFAULT_TIMEOUT_S:
        return float(record_bound), "max_retry_time_s"
    return DEFAULT_TIMEOUT_S, "preflight_timeout_s"


def _ids(settings: LeadSettings) -> tuple[int, int, int]:
    return settings.template_id, settings.campaign_id, settings.allocation_id
