"""One HTTP call to the Noojee CampaignAPI -> one Outcome. No retry loops here.

The API key travels in the URL, and HTTP client exceptions carry the URL: nothing from an
exception's text ever leaves this module; outcomes carry our own short descriptions only.

Network environment: the session never reads the environment by itself (`trust_env` is off, so
no `.netrc`, no `HTTP_PROXY`). For an ``https://`` PBX only, `HTTPS_PROXY` / `NO_PROXY` are
honoured (through CONNECT a proxy sees the host name, never the URL with its key) and
`REQUESTS_CA_BUNDLE` names the CAs to trust unless `ca_bundle` does. An ``http://`` PBX is never
reached through a proxy: the key would travel in the clear to it.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter

from target_noojee.codes import API_PREFIX, EXTERNAL_ID_FIELD, NO_CHANGE, Kind, lookup
from target_noojee.settings import ConfigError

LOGGER = logging.getLogger("target_noojee")
USER_AGENT = "target-noojee"
_KEY_IN_URL = re.compile(r"(apiKey(?:=|%3D))[^&\s\"'<>]+", re.IGNORECASE)
_TAG = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]*>", re.IGNORECASE | re.DOTALL)
_PAGE_WORDS = 16  # how much of a foreign page a message quotes
_PAGE_CHARS = 120


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
    def undocumented(self) -> bool:
        """A code in the CampaignAPI's JSON that the vendor's table does not list."""
        return self.code is not None and lookup(self.code) is None

    @property
    def campaign_api(self) -> bool:
        """Whether the CampaignAPI itself answered with a documented code (the PBX is there)."""
        return self.code is not None and lookup(self.code) is not None

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
        ca_bundle: str | None = None,
        tls_verify: bool = True,
    ) -> None:
        self._root = base_url.rstrip("/") + API_PREFIX
        self._api_key = api_key
        self._timeout = (connect_timeout_s, timeout_s)
        self._session = requests.Session()
        self._session.headers["User-Agent"] = USER_AGENT
        self._session.trust_env = False  # the environment is read below, and only what is safe
        if urlsplit(base_url.strip()).scheme == "https":
            self._session.proxies = https_proxy(self._root)
            self._session.verify = tls_trust(ca_bundle, tls_verify)
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
        else:
            # Early builds of updateLeadFast read the lead's id from the URL only; it is an id,
            # not a secret, so it goes in both places.
            external_id = body.get(EXTERNAL_ID_FIELD)
            if external_id and external_id != NO_CHANGE:
                params[EXTERNAL_ID_FIELD] = external_id
        return self._call("POST", endpoint, params, json.dumps(body, separators=(",", ":")))

    def check(self) -> Outcome:
        """One cheap call (getCampaignTemplateList) that tells whether the CampaignAPI answers."""
        return self._request("GET", "getCampaignTemplateList", {"apiKey": self._api_key}, None)[0]

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
                allow_redirects=False,  # a redirect is not the CampaignAPI's answer
            )
        except requests.exceptions.RequestException as exc:
            return _transport_outcome(exc, time.monotonic() - started), None
        rtt = time.monotonic() - started
        payload: Any = None
        try:
            payload = response.json()
        except ValueError:
            payload = None
        outcome = classify(
            response.status_code,
            payload,
            rtt,
            response.headers.get("Retry-After"),
            page=lambda: describe_page(
                response.headers.get("Content-Type"), response.text, self._api_key
            ),
        )
        return outcome, payload


def client_from_config(
    config: Mapping[str, Any], *, timeout_s: float, pool_size: int
) -> NoojeeClient:
    """The client for the PBX a config names, its TLS settings checked and warnings logged."""
    base_url = str(config.get("base_url") or "")
    ca_bundle = config.get("ca_bundle") or None
    if ca_bundle is not None and not os.path.isfile(str(ca_bundle)):
        raise ConfigError(
            "ca_bundle", f"setting `ca_bundle` is not a readable PEM file: {ca_bundle}"
        )
    tls_verify = config.get("tls_verify") is not False
    for warning in transport_warnings(base_url, tls_verify):
        LOGGER.warning("%s", warning)
    return NoojeeClient(
        base_url,
        str(config.get("api_key") or ""),
        timeout_s=timeout_s,
        pool_size=pool_size,
        ca_bundle=str(ca_bundle) if ca_bundle else None,
        tls_verify=tls_verify,
    )


def https_proxy(url: str) -> dict[str, str]:
    """The `HTTPS_PROXY` for an https URL (none when `NO_PROXY` covers its host), never more."""
    proxy = requests.utils.get_environ_proxies(url).get("https")
    return {"https": proxy} if proxy else {}


def tls_trust(ca_bundle: str | None, tls_verify: bool) -> bool | str:
    """What requests' `verify` gets: `ca_bundle`, else `REQUESTS_CA_BUNDLE`, else system CAs."""
    if not tls_verify:
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)  # warned once, above
        return False
    return ca_bundle or os.environ.get("REQUESTS_CA_BUNDLE") or True


def transport_warnings(base_url: str, tls_verify: bool) -> list[str]:
    """What an operator must know about how the key will travel to this PBX."""
    parts = urlsplit(base_url.strip())
    warnings = []
    if parts.scheme == "http" and not _loopback(parts.hostname or ""):
        warnings.append(
            f"base_url is http:// to {parts.hostname}: the API key would travel unencrypted "
            "(the PBX's API accepts HTTPS only); use https://"
        )
    if parts.scheme == "https" and not tls_verify:
        warnings.append(
            "tls_verify is false: the PBX's certificate is not checked, so anyone on the way "
            "can pose as the PBX and read the API key; set ca_bundle instead"
        )
    return warnings


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def describe_page(content_type: str | None, text: str, api_key: str = "") -> str:
    """A reply that is not the CampaignAPI's, in a few words: its type and its first words."""
    kind = (content_type or "no content type").split(";")[0].strip() or "no content type"
    words = " ".join(_TAG.sub(" ", text).split())
    if api_key:
        for form in {api_key, quote(api_key, safe=""), quote_plus(api_key)}:
            words = words.replace(form, "***")
    words = _KEY_IN_URL.sub(r"\1***", words)
    if not words:
        return f"{kind}, empty body"
    shown = " ".join(words.split(" ")[:_PAGE_WORDS])
    if len(shown) > _PAGE_CHARS:
        shown = shown[: _PAGE_CHARS - 3] + "..."
    elif len(shown) < len(words):
        shown += " ..."
    return f"{kind}: {shown!r}"


def classify(
    http_status: int,
    payload: Any,
    rtt_s: float,
    retry_after: str | None = None,
    *,
    page: Callable[[], str] | None = None,
) -> Outcome:
    """Turn an HTTP reply into an Outcome using the code table.

    `page()` describes the reply's body for a message, when it is not the CampaignAPI's.
    """
    retry_after_s = _parse_retry_after(retry_after)
    if http_status == 401:
        return Outcome(
            Kind.CONFIG,
            None,
            401,
            "the PBX refused the API key (HTTP 401): check setting `api_key`",
            rtt_s,
            retry_after_s=retry_after_s,
            setting="api_key",
        )
    if http_status == 403:
        return Outcome(
            Kind.CONFIG,
            None,
            403,
            "HTTP 403: the PBX refused the API key or does not accept calls from this "
            "machine's IP address (its API whitelist): check `api_key`, or ask Noojee support "
            "to whitelist this machine's public IP address",
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
    if not isinstance(code, int) or isinstance(code, bool):
        code = None
    row = lookup(code) if code is not None else None
    if http_status == 429 or http_status >= 500:
        # Overload, maintenance, a gateway's error page: transient whatever the body says.
        what = f"{row.code} {row.name}: {row.meaning}" if row else f"HTTP {http_status}"
        return Outcome(
            Kind.TRANSIENT,
            code,
            http_status,
            what if row else f"{what} from the PBX",
            rtt_s,
            retry_after_s=retry_after_s,
        )
    if row is not None:
        return Outcome(
            row.kind,
            code,
            http_status,
            f"{row.code} {row.name}: {row.meaning}",
            rtt_s,
            retry_after_s=retry_after_s,
            setting=row.setting,
        )
    if code is not None:
        return Outcome(
            Kind.PERMANENT,
            code,
            http_status,
            f"undocumented code {code} (HTTP {http_status})",
            rtt_s,
            retry_after_s=retry_after_s,
        )
    shown = page() if page is not None else "a body without a CampaignAPI code"
    return Outcome(
        Kind.FOREIGN,
        None,
        http_status,
        f"HTTP {http_status} that is not the CampaignAPI's answer ({shown})",
        rtt_s,
        retry_after_s=retry_after_s,
    )


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
    if isinstance(exc, requests.exceptions.SSLError):
        reason = _certificate_problem(exc)
        if reason is not None:
            return Outcome(
                Kind.CONFIG,
                None,
                None,
                f"the PBX's TLS certificate failed verification ({reason}): set `ca_bundle` "
                "to a PEM file of the CA that signed it (or REQUESTS_CA_BUNDLE)",
                rtt_s,
                connect_failed=True,
                setting="ca_bundle",
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


def _chain(exc: BaseException) -> list[BaseException]:
    """Every exception an HTTP error wraps (causes, contexts, args and urllib3's `reason`)."""
    seen: set[int] = set()
    found: list[BaseException] = []
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        found.append(current)
        stack.extend([current.__cause__, current.__context__])
        stack.extend(a for a in getattr(current, "args", ()) if isinstance(a, BaseException))
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException):
            stack.append(reason)
    return found


def _never_connected(exc: BaseException) -> bool:
    """True when the chain shows the TCP connection was never made (so nothing was sent)."""
    never = (
        "NewConnectionError",
        "ConnectionRefusedError",
        "NameResolutionError",
        "gaierror",
        "ConnectTimeoutError",
    )
    return any(type(e).__name__ in never for e in _chain(exc))


def _certificate_problem(exc: BaseException) -> str | None:
    """What was wrong with the certificate, when verification is what failed."""
    for error in _chain(exc):
        if isinstance(error, ssl.SSLCertVerificationError):
            return str(error.verify_message or "certificate verify failed")
    return None
