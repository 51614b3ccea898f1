"""Adaptive concurrency for the PBX: find and follow its limit without building a server queue.

Built like Netflix's concurrency-limits: a decision rule (`rule.Rule`) fed with windows of
round trips (`window`), measured against a baseline (`baseline`), behind a limiter handing out
permits (`limiter`), with a circuit breaker in front (`breaker`) and its few parameters in one
frozen dataclass (`tuning.Tuning`). Everything but the thread-safe limiters is pure: the caller
passes the time, so the tests drive it in virtual time.
"""

from target_noojee.pacing.breaker import Breaker
from target_noojee.pacing.limiter import (
    AdaptiveLimiter,
    FixedLimiter,
    Limiter,
    LimiterCore,
    make_limiter,
)
from target_noojee.pacing.rule import Rule
from target_noojee.pacing.samples import Permit, Signal
from target_noojee.pacing.tuning import Tuning

__all__ = [
    "AdaptiveLimiter",
    "Breaker",
    "FixedLimiter",
    "Limiter",
    "LimiterCore",
    "Permit",
    "Rule",
    "Signal",
    "Tuning",
    "make_limiter",
]
