"""Pacing: the adaptive limit's rule on synthetic round trips, the breaker, the thread-safe
limiters, and the whole loop against a queueing model of the PBX (tests/pacing_model.py).

Everything runs on virtual time except the few thread tests, which wait milliseconds at most.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Callable

import pytest

from target_noojee.pacing import (
    AdaptiveLimiter,
    Breaker,
    FixedLimiter,
    FixedPolicy,
    GradientPolicy,
    Limiter,
    LimiterCore,
    Permit,
    Signal,
    make_limiter,
)

import pacing_model as model

S = 0.1  # service time, seconds

# -- the rule on synthetic round trips ---------------------------------------------------------


def server(slots: int, service: float = S, jitter: float = 0.0, seed: int = 7):
    """Round trip of a call with `used` in flight on a PBX with `slots`: S * max(1, used / C)."""
    rng = random.Random(seed)

    def rtt(now: float, used: int) -> float:
        return service * max(1.0, used / slots) * rng.uniform(1 - jitter, 1 + jitter)

    return rtt


def drive(
    policy: GradientPolicy,
    rtt_at: Callable[[float, int], float],
    until: float,
    *,
    start: float = 0.0,
    demand: int | None = None,
    trace: list[tuple[float, int]] | None = None,
) -> float:
    """Feed `policy` the replies of a closed loop that keeps `policy.limit` calls in flight (or
    `demand`, if fewer) until `until`; returns the clock."""
    now = start
    while now < until:
        used = policy.limit if demand is None else min(policy.limit, demand)
        rtt = rtt_at(now, used)
        now += rtt / used
        policy.on_sample(now, rtt, Signal.OK, used, sent_at=now - rtt)
        if trace is not None:
            trace.append((now, policy.limit))
    return now


def mean_limit(trace: list[tuple[float, int]], t0: float, t1: float) -> float:
    """Time-weighted mean limit over [t0, t1]."""
    area, last_t, last_l = 0.0, t0, None
    for t, limit in trace:
        if t < t0:
            last_l = limit
            continue
        if last_l is not None:
            area += last_l * (min(t, t1) - last_t)
        last_t, last_l = t, limit
        if t >= t1:
            break
    return area / (t1 - t0)


def test_first_window_measures_the_baseline_then_slow_start_doubles():
    policy = GradientPolicy(rng=random.Random(1))
    assert policy.limit == 1
    now = drive(policy, server(8), until=0.65)  # 7 replies
    assert policy.limit == 1 and policy.baseline is None
    drive(policy, server(8), until=now + 0.05, start=now)  # the 8th
    assert policy.limit == 2
    assert policy.baseline == pytest.approx(S)
    assert policy.snapshot()["mode"] == "slow_start"


@pytest.mark.parametrize("slots", [1, 3, 6, 16])
def test_settles_at_the_capacity(slots):
    policy = GradientPolicy(rng=random.Random(1))
    trace: list[tuple[float, int]] = []
    drive(policy, server(slots, jitter=0.1), until=60.0, trace=trace)
    # At C most of the time, at C + 1 only while a probe shows the queue it makes.
    assert slots - 0.1 <= mean_limit(trace, 10.0, 60.0) <= slots + 0.3
    assert max(limit for t, limit in trace if t > 10.0) <= slots + 1


def test_no_growth_when_the_application_does_not_use_the_limit():
    policy = GradientPolicy(rng=random.Random(1))
    trace: list[tuple[float, int]] = []
    drive(policy, server(16), until=30.0, demand=3, trace=trace)
    assert max(limit for _, limit in trace) == 4  # 1, 2, 4: then 3 of 4 is not "reached"


def test_replies_to_calls_sent_under_an_older_limit_are_ignored():
    policy = GradientPolicy(rng=random.Random(1))
    now = drive(policy, server(8), until=0.85)
    assert policy.limit == 2
    windows = policy.snapshot()["windows"]
    for _ in range(50):  # grossly slow, but sent before the limit changed
        policy.on_sample(now, 5.0, Signal.OK, 1, sent_at=now - 5.0)
    assert policy.limit == 2 and policy.snapshot()["windows"] == windows


def test_a_capacity_drop_is_cut_to_in_one_step():
    policy = GradientPolicy(rng=random.Random(1))
    trace: list[tuple[float, int]] = []
    now = drive(policy, server(12), until=20.0, trace=trace)
    assert policy.limit in (12, 13)
    drive(policy, server(3), until=now + 3.0, start=now, trace=trace)
    # The first window mixes replies from before the drop, so it takes two cuts; then at most a
    # probe to 4 and back.
    assert next(limit for t, limit in trace if now + 1.0 <= t) == 3
    assert max(limit for t, limit in trace if now + 1.0 <= t) <= 4
    assert policy.limit == 3


def test_a_capacity_rise_is_found_by_probing():
    policy = GradientPolicy(rng=random.Random(1))
    trace: list[tuple[float, int]] = []
    now = drive(policy, server(4), until=20.0, trace=trace)
    assert policy.limit in (4, 5)
    now = drive(policy, server(12), until=now + 10.0, start=now, trace=trace)
    assert mean_limit(trace, now - 3.0, now) >= 11.0


def test_the_baseline_follows_a_growing_service_time():
    policy = GradientPolicy(rng=random.Random(1))
    trace: list[tuple[float, int]] = []

    def growing(now: float, used: int) -> float:
        return S * (1 + now / 60.0) * max(1.0, used / 8)  # S doubles in a minute

    drive(policy, growing, until=60.0, trace=trace)
    assert policy.baseline == pytest.approx(2 * S, rel=0.1)
    assert mean_limit(trace, 10.0, 60.0) >= 7.5
    assert policy.snapshot()["remeasures"] >= 2


def test_a_stale_baseline_is_re_measured_at_three_quarters_of_the_limit():
    # 3/4 of a level at C is under C once the level holds a queue of one call (up to 4/3 C),
    # and a third as dear as half of it: a quarter of the pace, for 2/3 of the time.
    policy = GradientPolicy(rng=random.Random(1), remeasure_interval=10.0)
    trace: list[tuple[float, int]] = []
    drive(policy, server(8), until=25.0, trace=trace)
    reduced = [limit for t, limit in trace if t > 5.0 and limit < 8]
    assert reduced and set(reduced) == {6}, reduced
    assert policy.snapshot()["remeasures"] >= 2


def test_holding_more_than_half_of_a_shared_queue_gives_up_a_call():
    # A neighbour keeps 4 calls on a PBX of 8. At 5 of ours a queue of one call stands, and
    # 5/9 of it is ours: more than half, so we give up a call (4 + 4 = 8, no queue).
    for seed in (1, 2, 3):
        policy = GradientPolicy(rng=random.Random(seed))
        rng = random.Random(seed)
        trace: list[tuple[float, int]] = []

        def shared(now: float, used: int, rng: random.Random = rng) -> float:
            return S * max(1.0, (used + 4) / 8) * rng.uniform(0.9, 1.1)

        drive(policy, shared, until=60.0, trace=trace)
        assert mean_limit(trace, 20.0, 60.0) <= 4.3


def test_a_baseline_rise_a_neighbour_caused_is_checked_and_undone():
    # While we cut, a neighbour ramping up fills every slot we free (total 12 on a PBX of 8), so
    # the round trip stays up and looks like S grown by half. A re-measurement soon after finds
    # S where it was once the neighbour has settled at 4 (a check while it still fills every
    # slot is checked again, twice as late): we settle at 4 too, not at 8 or more on a baseline
    # that counts a queue of 4 as service time. The neighbour fills for 4 s, then for 6 s: a
    # single check 5 s later got the first right and held 12-16 calls in the second.
    for fill_until in (8.0, 10.0):
        for seed in (1, 2, 3):
            policy = GradientPolicy(rng=random.Random(seed))
            rng = random.Random(seed)
            trace: list[tuple[float, int]] = []

            def neighbour(
                now: float, used: int, rng: random.Random = rng, end: float = fill_until
            ) -> float:
                others = 0 if now < 4.0 else 12 - used if now < end else 4
                return S * max(1.0, (used + others) / 8) * rng.uniform(0.95, 1.05)

            drive(policy, neighbour, until=fill_until + 25.0, trace=trace)
            assert policy.counts["verifies"] >= 1
            assert mean_limit(trace, fill_until + 12.0, fill_until + 25.0) <= 4.5
            assert policy.baseline is not None and policy.baseline <= 1.1 * S


def test_an_accepted_probe_holds_a_window_before_the_next():
    # Next to a neighbour, a probe is often accepted because the neighbour's calls, not ours,
    # wait in the queue it makes; the window after lets the neighbour's cut show before we
    # probe again. After C rises (4 -> 12) the limit still climbs, probe, hold, probe ...
    policy = GradientPolicy(rng=random.Random(1))
    slots = [4]

    def pbx(now: float, used: int) -> float:
        return S * max(1.0, used / slots[0])

    now = drive(policy, pbx, until=10.0)
    slots[0] = 12
    modes: list[str] = []
    windows = policy.counts["windows"]
    while now < 20.0:
        now = drive(policy, pbx, until=now + 1e-9, start=now)  # one call
        if policy.counts["windows"] != windows:
            windows = policy.counts["windows"]
            modes.append(policy.snapshot()["mode"])
    assert modes.count("probe") >= 3
    assert all(a != "probe" or b != "probe" for a, b in itertools.pairwise(modes))
    assert policy.limit >= 11


@pytest.mark.parametrize("slots", [2, 8])
def test_failed_probes_back_off_to_about_32_round_trips(slots):
    # At the limit every probe fails, and each one is a queue of one call for a window: they
    # come 16 windows apart (2 rounds each at 8), and where windows are longer (4 rounds at 2)
    # the back-off stops at 32 round trips, so that a rise of C is still found within ~4 s.
    policy = GradientPolicy(rng=random.Random(1))
    trace: list[tuple[float, int]] = []
    drive(policy, server(slots), until=90.0, trace=trace)
    probes = [
        t
        for (_, a), (t, b) in itertools.pairwise(trace)
        if t > 10.0 and (a, b) == (slots, slots + 1)
    ]
    gaps = sorted(b - a for a, b in itertools.pairwise(probes))
    assert 3.0 <= gaps[len(gaps) // 2] <= 4.5, gaps


def test_limits_stay_within_bounds():
    high = GradientPolicy(max_limit=5, rng=random.Random(1))
    trace: list[tuple[float, int]] = []
    drive(high, server(16), until=30.0, trace=trace)
    assert max(limit for _, limit in trace) == 5
    low = GradientPolicy(min_limit=2, initial_limit=2, rng=random.Random(1))
    trace = []
    drive(low, server(1), until=30.0, trace=trace)
    assert min(limit for _, limit in trace) == 2


def test_overload_cuts_by_half_once_per_round_trip():
    policy = GradientPolicy(rng=random.Random(1))
    now = drive(policy, server(16), until=20.0)
    level = policy.limit
    assert level in (16, 17)
    # 109s come back a minute after they were sent, whatever the limit did meanwhile.
    policy.on_sample(now, 60.0, Signal.OVERLOAD, level, sent_at=now - 60.0)
    assert policy.limit == level // 2
    for k in range(10):  # the rest of the burst, within a round trip: no further cut
        policy.on_sample(now + 0.01 * k, 60.0, Signal.OVERLOAD, level, sent_at=now - 60.0)
    assert policy.limit == level // 2
    policy.on_sample(now + 0.3, 60.0, Signal.OVERLOAD, level, sent_at=now - 59.7)
    assert policy.limit == level // 4


def test_slow_start_climbs_back_to_the_level_held_before_the_errors():
    policy = GradientPolicy(rng=random.Random(1))
    now = drive(policy, server(16), until=20.0)
    for _ in range(3):
        policy.on_sample(now, 0.1, Signal.OVERLOAD, 16, sent_at=now - 0.05)
        now += 0.2
    assert policy.limit <= 4
    trace: list[tuple[float, int]] = []
    now = drive(policy, server(16), until=now + 3.0, start=now, trace=trace)
    assert policy.limit >= 16
    assert max(limit for _, limit in trace) <= 17  # doubling stops at the old level


def test_one_server_error_is_noise_a_cluster_is_a_signal():
    policy = GradientPolicy(rng=random.Random(1))
    now = drive(policy, server(8), until=20.0)
    level = policy.limit
    policy.on_sample(now, 0.1, Signal.ERROR, level, sent_at=now - 0.05)  # a fault, not load
    assert policy.limit == level
    # A burst of 103s from calls sent together: one cut by a quarter, not one per error.
    for k in range(1, 60):
        policy.on_sample(now + 0.001 * k, 0.1, Signal.ERROR, level, sent_at=now - 0.05)
    assert policy.limit == int(level * 0.75)


def test_connect_failures_and_ignored_outcomes_do_not_move_the_limit():
    policy = GradientPolicy(rng=random.Random(1))
    now = drive(policy, server(8), until=20.0)
    level = policy.limit
    for signal in (Signal.CONNECT_FAILED, Signal.IGNORE) * 20:
        policy.on_sample(now, 0.001, signal, level, sent_at=now)
    assert policy.limit == level


def test_median_statistic_is_available():
    policy = GradientPolicy(statistic="median", rng=random.Random(1))
    trace: list[tuple[float, int]] = []
    drive(policy, server(4, jitter=0.2), until=30.0, trace=trace)
    assert 3.8 <= mean_limit(trace, 10.0, 30.0) <= 4.5


@pytest.mark.parametrize(
    "kwargs",
    [{"min_limit": 0}, {"min_limit": 5, "max_limit": 4}, {"min_window": 2}, {"statistic": "max"}],
)
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        GradientPolicy(**kwargs)


# -- the circuit breaker ------------------------------------------------------------------------


def test_breaker_opens_only_after_consecutive_connect_failures():
    breaker = Breaker(failures_to_open=3, rng=random.Random(1))
    for signal in (Signal.CONNECT_FAILED, Signal.CONNECT_FAILED, Signal.OK):
        breaker.on_result(0.0, signal, probe=False)
    breaker.on_result(0.0, Signal.CONNECT_FAILED, probe=False)
    breaker.on_result(0.0, Signal.IGNORE, probe=False)  # neither failure nor answer
    breaker.on_result(0.0, Signal.CONNECT_FAILED, probe=False)
    assert breaker.state == "closed"
    breaker.on_result(0.0, Signal.CONNECT_FAILED, probe=False)
    assert breaker.state == "open"


def test_open_breaker_lets_one_probe_through_after_capped_jittered_waits():
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
def test_any_answer_closes_the_breaker(answer):
    breaker = Breaker(failures_to_open=1, rng=random.Random(1))
    breaker.on_result(0.0, Signal.CONNECT_FAILED, probe=False)
    assert breaker.is_open
    assert breaker.on_result(1.0, answer, probe=False) is True
    assert breaker.state == "closed" and breaker.admit(1.0) == (True, None)


def test_outage_keeps_the_limit_and_resumes_at_it():
    core = model.adaptive_core(1)
    policy = core.policy
    assert isinstance(policy, GradientPolicy)
    drive(policy, server(8), until=20.0)
    level = core.limit
    now = 20.0
    permits = [core.try_acquire(now) for _ in range(level)]
    for p in permits:
        assert isinstance(p, Permit)
        core.release(now + 0.01, p, 0.01, Signal.CONNECT_FAILED)
    assert core.breaker.is_open and core.limit == level
    retry_at = core.try_acquire(now + 0.01)
    assert isinstance(retry_at, float)
    probe = core.try_acquire(retry_at)
    assert isinstance(probe, Permit) and probe.probe
    assert core.try_acquire(retry_at) is None  # the probe is alone
    core.release(retry_at + 0.1, probe, 0.1, Signal.OK)
    assert not core.breaker.is_open and core.limit == level
    assert all(isinstance(core.try_acquire(retry_at + 0.1), Permit) for _ in range(level))


# -- the core and the thread-safe limiters ------------------------------------------------------


def test_core_counts_permits_and_refuses_a_double_release():
    core = LimiterCore(FixedPolicy(2))
    a, b = core.try_acquire(0.0), core.try_acquire(0.0)
    assert isinstance(a, Permit) and isinstance(b, Permit)
    assert (a.in_flight, b.in_flight) == (1, 2)
    assert core.try_acquire(0.0) is None and core.in_flight == 2
    core.release(0.1, a, 0.1, Signal.OK)
    assert core.in_flight == 1
    with pytest.raises(ValueError):
        core.release(0.1, a, 0.1, Signal.OK)


@pytest.mark.parametrize(
    ("limiter", "bound"),
    [(FixedLimiter(3), 3), (AdaptiveLimiter(max_limit=6, initial_limit=4), 6)],
)
def test_threads_never_exceed_the_limit(limiter, bound):
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


def test_acquire_times_out():
    limiter = FixedLimiter(1)
    permit = limiter.acquire()
    assert permit is not None
    start = time.monotonic()
    assert limiter.acquire(timeout=0.05) is None
    assert time.monotonic() - start >= 0.04
    limiter.release(permit, 0.01, Signal.OK)
    assert limiter.acquire(timeout=0.05) is not None


def test_open_breaker_holds_threads_until_the_probe_answers():
    limiter = FixedLimiter(4, failures_to_open=1, breaker_base_wait=0.01, breaker_max_wait=0.02)
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


def test_make_limiter_pins_or_adapts():
    fixed = make_limiter(32, 5, breaker_max_wait=1.0, confidence=3.0)
    assert isinstance(fixed, FixedLimiter) and fixed.limit == 5
    adaptive: Limiter = make_limiter(12)
    assert isinstance(adaptive, AdaptiveLimiter) and adaptive.limit == 1
    snap = adaptive.snapshot()
    assert {"limit", "in_flight", "baseline_rtt", "recent_rtt", "breaker", "mode"} <= set(snap)


# -- the whole loop against the queueing model --------------------------------------------------


def test_the_model_is_a_real_queue():
    greedy = model.steady(4, model.fixed_core(32))
    assert greedy.throughput == pytest.approx(1.0, abs=0.02)
    assert greedy.queue == pytest.approx(28, abs=0.5)  # 32 in flight, 4 served
    single = model.steady(4, model.fixed_core(1))
    assert single.throughput == pytest.approx(0.25, abs=0.01) and single.queue == 0


@pytest.mark.parametrize("slots", [1, 2, 4, 8, 16])
def test_runs_at_capacity_without_a_queue(slots):
    r = model.steady(slots)
    assert r.throughput >= 0.95
    assert r.queue <= 0.5
    assert r.overloads == 0


@pytest.mark.parametrize("slots", [4, 16])
def test_runs_at_capacity_with_steady_service_times(slots):
    # noojee-sim sleeps a fixed service time: callers move in step, a median would not see the
    # queue at all; the clipped mean does.
    r = model.steady(slots, jitter=0.0)
    assert r.throughput >= 0.95
    assert r.queue <= 0.5


def test_a_re_measurement_at_level_3_runs_2_calls_not_1():
    # Half of 3 rounded down is one call at a time (the check of a risen baseline runs at half):
    # with 250 ms calls, a window of 8 of them at a third of the pace every 30 s cost 4-5%
    # (0.95-0.96 here). Two of three keep it at 0.98.
    for seed in (1, 2, 3):
        r = model.steady(3, service_s=0.25, seed=seed)
        assert r.throughput >= 0.97
        assert r.queue <= 0.5


def test_follows_the_capacity_as_it_changes():
    for phase in model.capacity_change():  # 8, then 3, then 12
        assert phase.throughput >= 0.93
        assert phase.queue <= 0.5


def test_follows_a_growing_service_time():
    r = model.service_growth()  # 100 ms to 300 ms in two minutes
    assert r.throughput >= 0.9
    assert r.queue <= 0.5


def test_a_service_time_step_is_not_taken_for_a_queue():
    # S doubles at 30 s. Cutting the limit leaves the round trip where it is (a queue of ours
    # would shrink with the limit), so the round trip is S: the limit goes back, not to 1.
    r = model.service_step()
    assert r.recovery is not None and r.recovery <= 10.0
    client, pbx = r.clients[0], r.server
    assert pbx is not None
    assert client.done_between(40.0, 50.0) / model.ideal_done(pbx, 40.0, 50.0) >= 0.9
    assert r.throughput >= 0.93
    assert r.queue <= 0.5
    assert client.mean_limit(40.0, 90.0) >= 7.0


def test_no_periodic_re_measure_at_one_call_at_a_time():
    # 3/4 (or half) of 2 is 1: a whole window at half speed. At a level of 2 or less it is
    # skipped.
    r = model.steady(2)
    assert r.clients[0].core.snapshot()["remeasures"] == 0
    assert r.throughput >= 0.97


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_follows_a_fast_growing_service_time(seed):
    r = model.fast_growth(seed=seed)  # 100 ms to 300 ms in 19 s, as the benchmark's s-growth
    assert r.throughput >= 0.8
    assert r.queue <= 0.5


def test_follows_a_fast_growing_service_time_on_average():
    runs = [model.fast_growth(seed=seed) for seed in range(1, 7)]
    assert sum(r.throughput for r in runs) / len(runs) >= 0.85


@pytest.mark.parametrize(
    ("slots", "second_at", "jitter"),
    [(4, 0.0, 0.2), (8, 15.0, 0.2), (16, 0.0, 0.1), (16, 15.0, 0.0)],
)
def test_two_targets_share_one_pbx(slots, second_at, jitter):
    # Each target keeps its own share of the server queue under half a call (Vegas), so they
    # meet in the middle. At C = 16 that share is 1/16 of a round trip per call: with +-20%
    # service jitter the baselines' sampling error alone can tilt the split to 40/60.
    r = model.shared(slots, second_at=second_at, jitter=jitter)
    assert min(r.shares) >= 0.40
    assert r.throughput >= 0.9


def test_two_targets_keep_the_shared_queue_small():
    # A neighbour's accepted probe leaves one call queued; whoever holds more than half of the
    # calls in flight gives it up, and neither probes into a queue. Over seeds, as it is noisy
    # (holding up to 3/4 of it, the mean here was 1.0; probing again at once after an accepted
    # probe, 0.66; accepting a probe with up to half a call of our own queue, 0.54; probing
    # every 8 windows at most, 0.45-0.50; every 16, 0.42 - it moves with any change of timing).
    runs = [model.shared(8, second_at=15.0, seed=seed) for seed in range(1, 7)]
    assert sum(r.queue for r in runs) / len(runs) <= 0.55
    assert sum(min(r.shares) for r in runs) / len(runs) >= 0.42
    assert min(r.throughput for r in runs) >= 0.95


def test_recovers_within_5s_of_an_outage_probing_one_call_at_a_time():
    sim = model.Sim()
    pbx = model.Server(sim, 8, seed=1)
    pbx.outage(30.0, 60.0)
    client = model.Client(sim, pbx, model.adaptive_core(1))
    client.start()
    in_flight: list[int] = []
    for k in range(1, 300):  # look every 0.1 s during the outage
        sim.at(30.0 + 0.1 * k, lambda: in_flight.append(client.core.in_flight))
    sim.run(90.0)
    assert client.core.breaker.opened == 1
    assert max(in_flight[10:]) <= 1  # once the calls cut by the outage are back: one probe
    assert client.counts["connect_failed"] <= 8 + 60  # at most a probe every 0.5 s on average
    assert model.recovery_time([client], pbx, 60.0) <= 5.0
    assert client.done_between(65.0, 90.0) / model.ideal_done(pbx, 65.0, 90.0) >= 0.95


def test_recovers_within_5s_of_an_import():
    r = model.manual_import()
    assert r.recovery is not None and r.recovery <= 5.0
    assert r.throughput >= 0.95
