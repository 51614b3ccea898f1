"""Foreign answers: a gateway, WAF or proxy in front of the PBX that answers instead of it.

A `Gateway` answers the lead calls whose raw request body contains ``match`` (every lead call when
``match`` is None), and with ``lists`` the list calls too (they have no body, so a ``match`` other
than ``""`` keeps them out). Its answer is an HTTP status, a Content-Type (none when ``""``) and an
exact body, sent as bytes. The default body (``body`` None) is a WAF-style HTML page that echoes
the request URL with its decoded query, ``apiKey=<the request's key>`` included, as real gateway
pages do. ``count`` limits how many calls it answers (None: no limit).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from target_noojee.simulator.server import RawReply

DEFAULT_CONTENT_TYPE = "text/html"
_PAGE = (
    "<html><head><title>{status} {phrase}</title></head><body><h1>Request blocked</h1>"
    "<p>The request was rejected by the security gateway.</p><p>URL: {url}</p></body></html>"
)
_FIELDS = frozenset({"status", "body", "content_type", "match", "count", "lists"})
_NO_BODY_STATUSES = (204, 304)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Status"


def default_page(status: int, path: str, query: Mapping[str, str]) -> str:
    """The gateway page for one request: its status and its URL, query decoded, apiKey and all."""
    url = path + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")
    return _PAGE.format(status=status, phrase=_phrase(status), url=url)


@dataclass(frozen=True)
class Gateway:
    """What answers instead of the PBX, and which calls it answers."""

    status: int
    body: str | None = None
    content_type: str = DEFAULT_CONTENT_TYPE
    match: str | None = None
    count: int | None = None
    lists: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.status, bool) or not isinstance(self.status, int):
            raise TypeError("gateway status must be an integer")
        if not 200 <= self.status <= 599:
            raise ValueError(f"gateway status must be within 200..599, got {self.status}")
        if self.body is not None and not isinstance(self.body, str):
            raise TypeError("gateway body must be a string or None")
        if self.status in _NO_BODY_STATUSES and self.body != "":
            raise ValueError(f"a gateway answering {self.status} needs body ''")
        if not isinstance(self.content_type, str):
            raise TypeError("gateway content_type must be a string")
        if any(c in self.content_type for c in "\r\n"):
            raise ValueError("gateway content_type must be one line")
        if self.match is not None and not isinstance(self.match, str):
            raise TypeError("gateway match must be a string or None")
        if self.count is not None:
            if isinstance(self.count, bool) or not isinstance(self.count, int):
                raise TypeError("gateway count must be an integer or None")
            if self.count < 1:
                raise ValueError(f"gateway count must be at least 1, got {self.count}")
        if not isinstance(self.lists, bool):
            raise TypeError("gateway lists must be a boolean")

    @classmethod
    def from_json(cls, data: Any) -> Gateway:
        """Parse the ``"gateway"`` control value: an object with `status` and optional fields."""
        if not isinstance(data, dict):
            raise TypeError("gateway must be an object or null")
        unknown = set(data) - _FIELDS
        if unknown:
            raise ValueError(f"unknown gateway fields: {sorted(unknown)}")
        if "status" not in data:
            raise ValueError("gateway needs a status")
        return cls(**data)

    def applies(self, lead_call: bool, raw: bytes) -> bool:
        """True when this gateway answers the call (a lead call, or a list call) with body `raw`."""
        if not lead_call and not self.lists:
            return False
        return self.match is None or self.match.encode() in raw

    def used(self) -> Gateway | None:
        """The gateway after one more answer: None once `count` is used up."""
        if self.count is None:
            return self
        return None if self.count <= 1 else dataclasses.replace(self, count=self.count - 1)

    def answer(self, path: str, query: Mapping[str, str]) -> RawReply:
        """The reply to one call."""
        text = default_page(self.status, path, query) if self.body is None else self.body
        return RawReply(self.status, self.content_type, text.encode())

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy for the admin route (`count`: the answers left)."""
        return dataclasses.asdict(self)
