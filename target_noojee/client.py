"""One HTTP call to the Noojee CampaignAPI -> one Outcome. No retry loops here.

The API key travels in the URL, and HTTP client exceptions carry the URL: nothing from an
exception's text ever leaves this module; outcomes carry our own short descriptions only.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from target_noojee.codes import API_PREFIX, Kind, lookup

USER_AGENT = "target-noojee"
_KEY_IN_URL = re.compile(r"(apiKey=)[^&\s\"']+", re.IGNORECASE)


class RedactApiKey(logging.Filter):
    """urllib3 logs request lines (with the query string) at DEBUG: blank the key out."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "apikey=" in message.lower():
            record.msg, record.args = _KEY_IN_URL.sub(r"\1***", message), ()
        return True


for _name in ("urllib3.connectionpool", "urllib3.connection", "urllib3.util.retry", "requests"):
    logging.getLogger(_name).addFilter(RedactApiKey())


@dataclass(frozen=True)
class Outcome:
    """What one call came to, classified for delivery."""

    kind: Kind
    code: int | None  # the PBX's code; None when it gave none (transport error, bare HTTP error)
    http_status: int | None
    message: str  # short, operator-facing, never holds the URL or the key
    rtt_s: float
    connect_failed: bool = False  # never reached the PBX: nothing was applied
    maybe_applied: bool = False  # the request went out but no reply came back
    retry_after_s: float | None = None
    setting: str | None = None  # for Kind.CONFIG: the setting to fix

    @property
    def answered(self) -> bool:
        """Whether the PBX itself replied (any HTTP status)."""
        return self.http_status is not None

    @property
    def label(self) -> str:
        """A short name for summaries: the code, the HTTP status, or the transport error."""
        if self.code is not None:
            return str(self.code)
        if self.http_status is not None:
            return f"HTTP {self.http_status}"
        return "connection"


class ClientError(Exception):
    """A list call failed; str() is safe to show (no URL, no key)."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.message)
        self.outcome = outcome


class NoojeeClient:
    """A thread-safe client for one PBX. Calls read like the API's own table."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout_s: float = 90.0,
        connect_timeout_s: float = 10.0,
        pool_size: int = 32,
    ) -> None:
        self._root = base_url.rstrip("/") + API_PREFIX
        self._api_key = api_key
        self._timeout = (connect_timeout_s, timeout_s)
        self._session = requests.Session()
        self._session.headers["User-Agent"] = USER_AGENT
        self._session.trust_env = False  # a proxy from the environment must not see the key
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=max(pool_size, 1), max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    def close(self) -> None:
        """Release pooled connections."""
        self._session.close()

    def send_lead(
        self,
        endpoint: str,
        ids: Mapping[str, int],
        body: Mapping[str, str],
        *,
        allow_duplicates: bool = False,
    ) -> Outcome:
        """POST one lead to updateLeadFast or insertLeadFast."""
        params: dict[str, Any] = {"apiKey": self._api_key, **ids}
        if endpoint == "insertLeadFast":
            params["allowDuplicates"] = "true" if allow_duplicates else "false"
        return self._call("POST", endpoint, params, json.dumps(body, separators=(",", ":")))

    def update_lead(self, ids: Mapping[str, int], body: Mapping[str, str]) -> Outcome:
        """updateLeadFast."""
        return self.send_lead("updateLeadFast", ids, body)

    def insert_lead(
        self, ids: Mapping[str, int], body: Mapping[str, str], *, allow_duplicates: bool = False
    ) -> Outcome:
        """insertLeadFast."""
        return self.send_lead("insertLeadFast", ids, body, allow_duplicates=allow_duplicates)

    def templates(self) -> list[dict[str, Any]]:
        """getCampaignTemplateList: [{"id": .., "name": ..}]."""
        return self._entities("getCampaignTemplateList", {})

    def campaigns(self, template_id: int) -> list[dict[str, Any]]:
        """getCampaignList for one template."""
        return self._entities("getCampaignList", {"fTemplateId": template_id})

    def allocations(self, campaign_id: int) -> list[dict[str, Any]]:
        """getAllocationList for one campaign."""
        return self._entities("getAllocationList", {"fCampaignId": campaign_id})

    def _entities(self, method: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        outcome, payload = self._request("GET", method, {"apiKey": self._api_key, **params}, None)
        if outcome.kind is not Kind.OK:
            raise ClientError(outcome)
        entities = payload.get("entities") if isinstance(payload, dict) else None
        return [e for e in entities if isinstance(e, dict)] if isinstance(entities, list) else []

    def _call(self, verb: str, method: str, params: dict[str, Any], data: str | None) -> Outcome:
        return self._request(verb, method, params, data)[0]

    def _request(
        self, verb: str, method: str, params: dict[str, Any], data: str | None
    ) -> tuple[Outcome, Any]:
        started = time.monotonic()
        headers = {"Content-Type": "application/json"} if data is not None else None
        try:
            response = self._session.request(
                verb,
                self._root + method,
                params=params,
                data=data.encode() if data is not None else None,
                headers=headers,
                timeout=self._timeout,
            )
        except requests.exceptions.RequestException as exc:
            return _transport_outcome(exc, time.monotonic() - started), None
        rtt = time.monotonic() - started
        payload: Any = None
        try:
            payload = response.json()
        except ValueError:
            payload = None
        return classify(response.status_code, payload, rtt, response.headers.get("Retry-After")), (
            payload
        )


def classify(
    http_status: int, payload: Any, rtt_s: float, retry_after: str | None = None
) -> Outcome:
    """Turn an HTTP reply into an Outcome using the code table."""
    retry_after_s = _parse_retry_after(retry_after)
    if http_status in (401, 403):
        return Outcome(
            Kind.CONFIG,
            None,
            http_status,
            f"the PBX refused the API key (HTTP {http_status})",
            rtt_s,
            retry_after_s=retry_after_s,
            setting="api_key",
        )
    if http_status == 404:
        return Outcome(
            Kind.CONFIG,
            None,
            404,
            "HTTP 404: no Noojee CampaignAPI at this address",
            rtt_s,
            retry_after_s=retry_after_s,
            setting="base_url",
        )
    code = payload.get("code") if isinstance(payload, dict) else None
    if isinstance(code, int) and not isinstance(code, bool):
        row = lookup(code)
        if row is not None:
            kind = row.kind
            message = f"{row.code} {row.name}: {row.meaning}"
            return Outcome(
                kind,
                code,
                http_status,
                message,
                rtt_s,
                retry_after_s=retry_after_s,
                setting=row.setting,
            )
        # A code the vendor does not document: the HTTP status decides.
        kind = Kind.TRANSIENT if http_status >= 500 else Kind.PERMANENT
        return Outcome(
            kind,
            code,
            http_status,
            f"undocumented code {code} (HTTP {http_status})",
            rtt_s,
            retry_after_s=retry_after_s,
        )
    if http_status == 429 or http_status >= 500:
        return Outcome(
            Kind.TRANSIENT,
            None,
            http_status,
            f"HTTP {http_status} from the PBX",
            rtt_s,
            retry_after_s=retry_after_s,
        )
    if http_status == 200:
        return Outcome(Kind.TRANSIENT, None, 200, "HTTP 200 without a code in the reply", rtt_s)
    return Outcome(Kind.PERMANENT, None, http_status, f"HTTP {http_status} without a code", rtt_s)


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP-date: rare enough from a PBX to ignore


def _transport_outcome(exc: requests.exceptions.RequestException, rtt_s: float) -> Outcome:
    """Describe a transport failure without the exception's text (it holds the URL)."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return Outcome(Kind.TRANSIENT, None, None, "connect timeout", rtt_s, connect_failed=True)
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return Outcome(
            Kind.TRANSIENT,
            None,
            None,
            "no reply before request_timeout_s",
            rtt_s,
            maybe_applied=True,
        )
    if isinstance(exc, requests.exceptions.ConnectionError):
        if _never_connected(exc):
            return Outcome(
                Kind.TRANSIENT,
                None,
                None,
                "connection refused or unreachable",
                rtt_s,
                connect_failed=True,
            )
        return Outcome(
            Kind.TRANSIENT,
            None,
            None,
            "connection lost before the reply",
            rtt_s,
            maybe_applied=True,
        )
    if isinstance(
        exc,
        (
            requests.exceptions.InvalidURL,
            requests.exceptions.MissingSchema,
            requests.exceptions.InvalidSchema,
        ),
    ):
        return Outcome(
            Kind.CONFIG,
            None,
            None,
            "base_url is not a valid http(s) URL",
            rtt_s,
            setting="base_url",
        )
    return Outcome(
        Kind.TRANSIENT,
        None,
        None,
        f"transport error ({type(exc).__name__})",
        rtt_s,
        maybe_applied=True,
    )


def _never_connected(exc: BaseException) -> bool:
    """True when the chain shows the TCP connection was never made (so nothing was sent)."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        name = type(current).__name__
        if name in (
            "NewConnectionError",
            "ConnectionRefusedError",
            "NameResolutionError",
            "gaierror",
            "ConnectTimeoutError",
        ):
            return True
        stack.extend([current.__cause__, current.__context__])
        stack.extend(a for a in getattr(current, "args", ()) if isinstance(a, BaseException))
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException):
            stack.append(reason)
    return False
