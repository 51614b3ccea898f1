"""What the limiter is fed: the signal of each finished call, and the permit it went out under."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Signal(enum.Enum):
    """What a finished call says about the PBX's capacity."""

    OK = "ok"  # the PBX answered and did the work (any code but 109/103/5xx/429)
    OVERLOAD = "overload"  # 109: queued past the server's limit, or an import is running
    ERROR = "error"  # 103, HTTP 5xx or 429, or a lost reply: the server may be struggling
    CONNECT_FAILED = "connect_failed"  # refused, reset or timed out before any answer
    IGNORE = "ignore"  # says nothing about capacity (a local error, a cancelled call)


@dataclass(frozen=True)
class Permit:
    """One admitted call; hand it back to `release` exactly once."""

    id: int
    sent_at: float  # clock reading when the call was admitted
    in_flight: int  # calls in flight once this one was admitted, itself included
    probe: bool = False  # the single call an open circuit breaker let through
