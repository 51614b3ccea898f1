"""Pacing units: the breaker, the windows, the error rate, the rule's reactions to 109s and error
bursts, and the thread-safe limiters. Behaviour over the grid of PBXs is in
tests/test_pacing_model.py. Everything runs on virtual time except the few thread tests, which
wait milliseconds at most.
"""

from __future__ import annotations

import math
import random
import threading
import time

import pytest

from target_noojee.pacing import (
    AdaptiveLimiter,
    Breaker,
    FixedLimiter,
    Limiter,
    LimiterCore,
    Permit,
    Rule,
    Signal,
    Tuning,
    make_limiter,
)
from target_noojee.pacing.window import ErrorRate, Window, WindowStats

# -- windows and the error rate ----------------------------------------------------------------


def test_a_window_waits_for_its_slow_calls() -> None:
    window = Window(first_id=10, size=3)
    window.add(10, 0.1, 3, Signal.OK)
    window.add(12, 0.1, 3, Signal.OK)
    window.add(13, 0.1, 3, Signal.OK)  # a later call: kept for the next window
    assert not window.complete
    window.add(11, 0.7, 3, Signal.OK)  # the slow one
    assert window.complete
    stats = window.stats()
    assert stats.samples == 3 and stats.mean_rtt == pytest.approx(0.3)
    assert [s[0] for s in window.spill] == [13]


def test_calls_that_did_not_answer_still_close_a_window() -> None:
    window = Window(first_id=1, size=3)
    for pid, signal in ((1, Signal.IGNORE), (2, Signal.CONNECT_FAILED), (3, Signal.OVERLOAD)):
        window.add(pid, 0.0, 1, signal)
    assert window.complete and window.stats().samples == 0 and window.replies == 0


def test_a_steady_error_rate_is_background_a_rise_is_not() -> None:
    rng = random.Random(3)
    rate = ErrorRate()
    rises = 0
    for _ in range(300):  # windows of 100 replies at 4% errors
        errors = sum(rng.random() < 0.04 for _ in range(100))
        rises += rate.is_rise(errors, 100, 2.0)
        rate.learn(errors, 100)
    assert rises <= 3
    assert rate.rate == pytest.approx(0.04, abs=0.015)
    assert rate.is_rise(4, 8, 2.0)  # half the calls failing shows within a few replies
    assert not rate.is_rise(1, 2, 2.0)  # one error is never a rise


# -- the rule's reactions ----------------------------------------------------------------------


def test_a_109_halves_the_limit_once_per_round_trip() -> None:
    rule = Rule(Tuning(initial_limit=16), max_limit=64)
    rule.baseline.value = 0.1
    rule.on_overload(10.0)
    assert rule.limit == 8
    for k in range(10):  # the rest of the burst, within a round trip: no further cut
        rule.on_overload(10.0 + 0.005 * k)
    assert rule.limit == 8
    rule.on_overload(10.2)
    assert rule.limit == 4


def test_a_burst_of_errors_backs_off_at_once() -> None:
    core = LimiterCore(Rule(Tuning(initial_limit=16), max_limit=64))
    permits = [core.try_acquire(0.0) for _ in range(16)]
    assert all(isinstance(p, Permit) for p in permits)
    for k, permit in enumerate(permits[:4]):
        assert isinstance(permit, Permit)
        core.release(0.01 * k, permit, 0.1, Signal.ERROR)
    assert core.limit <= 12  # within four replies, not at the window's end


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial_limit": 0},
        {"target_queue": 0},
        {"gain": 0},
        {"max_rounds": 1},
        {"error_cut": 1.0},
        {"remeasure_fraction": 1.0},
    ],
)
def test_bad_tuning_is_refused(kwargs) -> None:
    with pytest.raises(ValueError):
        Tuning(**kwargs)


def test_limits_stay_within_bounds() -> None:
    with pytest.raises(ValueError):
        AdaptiveLimiter(min_limit=5, max_limit=4)
    rule = Rule(Tuning(initial_limit=50), max_limit=5)
    assert rule.limit == 5


# -- the circuit breaker ------------------------------------------------------------------------


def test_breaker_opens_only_after_consecutive_connect_failures() -> None:
    breaker = Breaker(failures_to_open=3, rng=random.Random(1))
    for signal in (Signal.CONNECT_FAILED, Signal.CONNECT_FAILED, Signal.OK):
        breaker.on_result(0.0, signal, probe=False)
    breaker.on_result(0.0, Signal.CONNECT_FAILED, probe=False)
    breaker.on_result(0.0, Signal.IGNORE, probe=False)  # neither failure nor answer
    breaker.on_result(0.0, Signal.CONNECT_FAILED, probe=False)
    assert breaker.state == "closed"
    breaker.on_result(0.0, Signal.CONNECT_FAILED, probe=False)
    assert breaker.state == "open"


def test_open_breaker_lets_one_probe_through_after_capped_jittered_waits() -> None:
    breaker = Breaker(failures_to_open=1, base_wait=0.25, max_wait=2.0, rng=random.Random(3))
    now = 0.0
    breaker.on_result(now, Signal.CONNECT_FAILED, probe=False)
    waits = []
    for attempt in range(12):
        next_at = breaker.next_probe_at
        assert next_at is not None
        waits.append(next_at - now)
        assert waits[-1] <= min(2.0, 0.25 * 2**attempt)
        if next_at > now:
            assert breaker.admit(now) == (False, next_at)
        now = next_at
        assert breaker.admit(now) == (True, None)
        assert breaker.state == "probing"
        assert breaker.admit(now) == (False, None)  # only one probe at a time
        now += 0.01
        breaker.on_result(now, Signal.CONNECT_FAILED, probe=True)
    assert len(set(waits)) == len(waits)  # jittered
    assert max(waits[6:]) <= 2.0


@pytest.mark.parametrize("answer", [Signal.OK, Signal.OVERLOAD, Signal.ERROR])
def test_any_answer_closes_the_breaker(answer) -> None:
    breaker = Breaker(failures_to_open=1, rng=random.Random(1))
    breaker.on_result(0.0, Signal.CONNECT_FAILED, probe=False)
    assert breaker.is_open
    assert breaker.on_result(1.0, answer, probe=False) is True
    assert breaker.state == "closed" and breaker.admit(1.0) == (True, None)


def test_an_outage_keeps_the_limit_and_probes_one_call_at_a_time() -> None:
    core = LimiterCore(Rule(Tuning(initial_limit=8), max_limit=64), Breaker(rng=random.Random(1)))
    level = core.limit
    permits = [core.try_acquire(0.0) for _ in range(level)]
    for p in permits:
        assert isinstance(p, Permit)
        core.release(0.01, p, 0.01, Signal.CONNECT_FAILED)
    assert core.breaker.is_open and core.limit == level
    retry_at = core.try_acquire(0.01)
    assert isinstance(retry_at, float)
    probe = core.try_acquire(retry_at)
    assert isinstance(probe, Permit) and probe.probe
    assert core.try_acquire(retry_at) is None  # the probe is alone
    core.release(retry_at + 0.1, probe, 0.1, Signal.OK)
    assert not core.breaker.is_open and core.limit == level
    assert all(isinstance(core.try_acquire(retry_at + 0.1), Permit) for _ in range(level))


# -- the core and the thread-safe limiters ------------------------------------------------------


def test_core_counts_permits_and_refuses_a_double_release() -> None:
    core = LimiterCore(fixed=2)
    a, b = core.try_acquire(0.0), core.try_acquire(0.0)
    assert isinstance(a, Permit) and isinstance(b, Permit)
    assert (a.in_flight, b.in_flight) == (1, 2)
    assert core.try_acquire(0.0) is None and core.in_flight == 2
    core.release(0.1, a, 0.1, Signal.OK)
    assert core.in_flight == 1
    with pytest.raises(ValueError):
        core.release(0.1, a, 0.1, Signal.OK)
    with pytest.raises(ValueError):
        LimiterCore(fixed=0)


@pytest.mark.parametrize(
    ("limiter", "bound"),
    [(FixedLimiter(3), 3), (AdaptiveLimiter(max_limit=6, tuning=Tuning(initial_limit=4)), 6)],
)
def test_threads_never_exceed_the_limit(limiter, bound) -> None:
    lock = threading.Lock()
    running = peak = 0

    def worker() -> None:
        nonlocal running, peak
        for _ in range(20):
            permit = limiter.acquire(timeout=5.0)
            assert permit is not None
            with lock:
                running += 1
                peak = max(peak, running)
            time.sleep(0.001)
            with lock:
                running -= 1
            limiter.release(permit, 0.001, Signal.OK)

    threads = [threading.Thread(target=worker) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10.0)
    assert peak == bound if isinstance(limiter, FixedLimiter) else peak <= bound
    assert limiter.in_flight == 0


def test_acquire_times_out() -> None:
    limiter = FixedLimiter(1)
    permit = limiter.acquire()
    assert permit is not None
    start = time.monotonic()
    assert limiter.acquire(timeout=0.05) is None
    assert time.monotonic() - start >= 0.04
    limiter.release(permit, 0.01, Signal.OK)
    assert limiter.acquire(timeout=0.05) is not None


def test_open_breaker_holds_threads_until_the_probe_answers() -> None:
    limiter = FixedLimiter(4, breaker=Breaker(failures_to_open=1, base_wait=0.01, max_wait=0.02))
    first = limiter.acquire()
    assert first is not None
    limiter.release(first, 0.001, Signal.CONNECT_FAILED)
    assert limiter.snapshot()["breaker"] == "open"
    probe = limiter.acquire(timeout=1.0)
    assert probe is not None and probe.probe
    got: list[Permit | None] = []
    waiter = threading.Thread(target=lambda: got.append(limiter.acquire(timeout=2.0)))
    waiter.start()
    time.sleep(0.05)
    assert not got  # held back while the probe is out
    limiter.release(probe, 0.01, Signal.OK)
    waiter.join(2.0)
    assert got and got[0] is not None and not got[0].probe
    assert limiter.snapshot()["breaker"] == "closed"


def test_a_freed_permit_wakes_a_waiting_thread() -> None:
    limiter = FixedLimiter(1)
    first = limiter.acquire()
    assert first is not None
    got: list[Permit | None] = []
    waiters = [
        threading.Thread(target=lambda: got.append(limiter.acquire(timeout=2.0))) for _ in range(3)
    ]
    for w in waiters:
        w.start()
    time.sleep(0.05)
    limiter.release(first, 0.01, Signal.OK)
    deadline = time.monotonic() + 2.0
    while not got and time.monotonic() < deadline:
        time.sleep(0.005)
    assert len(got) == 1 and got[0] is not None
    limiter.release(got[0], 0.01, Signal.OK)
    for w in waiters:
        w.join(3.0)
    assert len(got) == 3


def test_make_limiter_pins_or_adapts() -> None:
    fixed = make_limiter(32, 5, breaker=Breaker(max_wait=1.0), tuning=Tuning())
    assert isinstance(fixed, FixedLimiter) and fixed.limit == 5
    adaptive: Limiter = make_limiter(12)
    assert isinstance(adaptive, AdaptiveLimiter) and adaptive.limit == Tuning().initial_limit
    snap = adaptive.snapshot()
    assert {"limit", "in_flight", "baseline_rtt", "recent_rtt", "breaker", "mode"} <= set(snap)


def _window(rtt: float, in_flight: float, samples: int = 64, rel_sd: float = 0.01) -> WindowStats:
    return WindowStats(samples, rtt, rel_sd, in_flight, math.ceil(in_flight), samples, 0)


def _settled_rule(limit: int, rtt: float) -> Rule:
    """A rule past its start, at `limit`, whose baseline is `rtt`, about to re-measure."""
    rule = Rule(Tuning(), max_limit=64)
    rule.baseline.measure(_window(rtt, 2), 2.0)
    rule.starting, rule.value = False, float(limit)
    rule.on_window(_window(rtt, limit), now=0.0)  # schedules the first re-measurement
    rule.on_window(_window(rtt, limit), now=100.0)  # ... which is due
    assert rule.remeasuring and rule.limit < limit
    return rule


def test_a_remeasurement_that_sending_fewer_speeds_up_does_not_raise_the_baseline() -> None:
    # A neighbour's queue: the round trip fell when we sent fewer, so it held a queue; the
    # re-measurement goes a step lower, and a queue still standing there is not a baseline.
    rule = _settled_rule(8, 0.100)
    rule._above = _window(0.150, 8)  # the window above: a neighbour queued
    first = rule.limit
    rule.on_window(_window(0.130, first), now=102.0)
    assert rule.remeasuring and rule.limit < first  # one step further down
    # Still faster, by more than our own target queue one step up explains: still a queue.
    rule.on_window(_window(0.108, rule.limit), now=103.0)
    assert not rule.remeasuring
    assert rule.baseline.value == pytest.approx(0.100)


def test_a_remeasurement_no_faster_than_the_window_above_raises_the_baseline() -> None:
    # S grew: sending fewer did not shorten the round trip, so none of it is a queue.
    rule = _settled_rule(8, 0.100)
    rule._above = _window(0.140, 8)
    rule.on_window(_window(0.140, rule.limit), now=101.0)
    assert not rule.remeasuring
    assert rule.baseline.value == pytest.approx(0.140)


def test_a_lucky_fast_window_does_not_restart_the_baseline_of_a_noisy_pbx() -> None:
    from target_noojee.pacing.baseline import Baseline

    baseline = Baseline()
    for _ in range(20):
        baseline.measure(_window(0.100, 4, samples=32, rel_sd=0.3), 2.0)
    baseline.measure(_window(0.085, 4, samples=32, rel_sd=0.3), 2.0)  # 2.8 standard errors low
    assert baseline.value == pytest.approx(0.100, abs=0.002)  # pooled, not restarted
    baseline.measure(_window(0.150, 4, samples=32, rel_sd=0.3), 2.0)  # clearly slower: S grew
    assert baseline.value == pytest.approx(0.150)
