"""noojee-sim's capacity model: N slots, a FIFO or barging server queue, 109 after the queue
timeout, noisy service times, network latency outside the slot, and the dialer's own load."""

from __future__ import annotations

import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from target_noojee.simulator import Simulator
from target_noojee.simulator.capacity import Capacity, parse_dialer_load
from target_noojee.simulator.cli import build_parser

from simfixtures import Api, code_of, running_sim


def timed_inserts(sim: Simulator, n: int, first: int = 0) -> list[tuple[int, float]]:
    """Send n inserts at once, each on its own connection; (code, seconds) in submission order."""

    def one(i: int) -> tuple[int, float]:
        api = Api(sim)
        try:
            t0 = time.monotonic()
            r = api.insert({"njExternalLeadId": f"C{i}", "FirstPhone": f"0400{i:06d}"})
            return code_of(r), time.monotonic() - t0
        finally:
            api.close()

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(first, first + n)))


def test_calls_beyond_the_slots_wait() -> None:
    with running_sim(slots=2, service_ms=200) as sim:
        results = sorted(timed_inserts(sim, 4), key=lambda r: r[1])
        assert [code for code, _ in results] == [0, 0, 0, 0]
        fast, slow = [d for _, d in results[:2]], [d for _, d in results[2:]]
        assert all(0.18 <= d < 0.35 for d in fast), results
        assert all(0.38 <= d < 0.6 for d in slow), results
        assert sim.peak_in_service == 2
        assert 0.5 < sim.mean_queue_length() < 2.0
        assert len(sim.leads(41)) == 4 and sim.lead_calls == 4


def test_queue_timeout_answers_109_without_processing() -> None:
    with running_sim(slots=1, service_ms=500, queue_timeout_s=0.3) as sim:
        results = timed_inserts(sim, 3)
        codes_ = sorted(code for code, _ in results)
        assert codes_ == [0, 109, 109]
        for code, seconds in results:
            if code == 109:
                assert 0.28 <= seconds < 0.45
        assert len(sim.leads(41)) == 1
        assert sim.code_counts == {0: 1, 109: 2} and sim.peak_in_service == 1


def test_set_slots_while_running_releases_the_queue() -> None:
    with running_sim(slots=1, service_ms=300) as sim:
        results: list[tuple[int, float]] = []
        worker = threading.Thread(target=lambda: results.extend(timed_inserts(sim, 3)))
        worker.start()
        time.sleep(0.1)
        assert sim.queue_length == 2
        sim.set_slots(3)
        worker.join()
        assert sorted(code for code, _ in results) == [0, 0, 0]
        assert max(d for _, d in results) < 0.55  # not 0.9 s as with one slot
        assert sim.peak_in_service == 3


def test_service_time_grows_with_the_leads_held() -> None:
    with running_sim(service_ms=0, service_growth_ms_per_1000=20_000) as sim:  # 20 ms per lead
        api = Api(sim)
        durations = []
        for i in range(5):
            t0 = time.monotonic()
            assert code_of(api.insert({"njExternalLeadId": f"G{i}", "FirstPhone": f"04{i}"})) == 0
            durations.append(time.monotonic() - t0)
        api.close()
        assert durations[0] < 0.03 and durations[4] >= 0.075


def test_reset_stats_restarts_peak_and_queue_mean() -> None:
    with running_sim(slots=1, service_ms=100) as sim:
        timed_inserts(sim, 3)
        assert sim.mean_queue_length() > 0 and sim.peak_in_service == 1
        sim.reset_stats()
        assert sim.peak_in_service == 0 and sim.mean_queue_length() == 0.0
        assert sim.code_counts == {} and sim.lead_calls == 0


# -- the capacity object alone, with an injected clock -------------------------------------


def test_capacity_is_fifo() -> None:
    cap = Capacity(1)
    assert cap.acquire(1.0)
    order: list[int] = []

    def wait(i: int) -> None:
        assert cap.acquire(5.0)
        order.append(i)
        cap.release()

    threads = []
    for i in range(5):
        t = threading.Thread(target=wait, args=(i,))
        t.start()
        threads.append(t)
        while cap.queue_length < i + 1:  # queue them in a known order
            time.sleep(0.001)
    cap.release()
    for t in threads:
        t.join()
    assert order == [0, 1, 2, 3, 4]


def test_capacity_time_weighted_queue_length() -> None:
    now = [0.0]
    cap = Capacity(1, clock=lambda: now[0])
    assert cap.acquire(0)
    assert not cap.acquire(0)  # queued at t=0, left at once: no area
    now[0] = 10.0
    assert cap.mean_queue_length() == 0.0
    cap.close()
    assert not cap.acquire(1.0)
    with pytest.raises(ValueError):
        cap.set_slots(0)


# -- the wider world: queue order, noisy service times, network distance, the dialer --------


def test_barging_lets_an_arriving_call_take_a_freed_slot_before_the_waiters() -> None:
    for kind, barged in (("fifo", False), ("barging", True)):
        cap = Capacity(1, queue=kind)
        assert cap.acquire(0)
        got: list[bool] = []
        waiter = threading.Thread(target=lambda cap=cap, got=got: got.append(cap.acquire(5.0)))
        waiter.start()
        while cap.queue_length < 1:
            time.sleep(0.001)
        old = sys.getswitchinterval()
        sys.setswitchinterval(1.0)  # the waiter cannot run before the next two lines
        try:
            cap.release()
            arrived = cap.acquire(0)
        finally:
            sys.setswitchinterval(old)
        assert arrived is barged, kind
        if arrived:
            assert cap.queue_length == 1  # the woken waiter went back to waiting at the head
            cap.release()
        waiter.join(5.0)
        assert got == [True]
        cap.release()
        assert cap.in_service == 0 and cap.queue_length == 0


def test_barging_still_serves_waiters_in_order() -> None:
    cap = Capacity(1, queue="barging")
    assert cap.acquire(1.0)
    order: list[int] = []

    def wait(i: int) -> None:
        assert cap.acquire(5.0)
        order.append(i)
        cap.release()

    threads = []
    for i in range(4):
        t = threading.Thread(target=wait, args=(i,))
        t.start()
        threads.append(t)
        while cap.queue_length < i + 1:
            time.sleep(0.001)
    cap.release()
    for t in threads:
        t.join()
    assert order == [0, 1, 2, 3]


def test_barging_waiters_still_time_out() -> None:
    cap = Capacity(1, queue="barging")
    assert cap.acquire(0)
    t0 = time.monotonic()
    assert not cap.acquire(0.1)
    assert 0.09 <= time.monotonic() - t0 < 0.5 and cap.queue_length == 0
    with pytest.raises(ValueError):
        Capacity(1, queue="lifo")


def test_noisy_service_times_keep_their_mean() -> None:
    for cv in (0.0, 0.3, 0.6):
        sim = Simulator(api_key="k", service_ms=100, service_cv=cv, seed=3)
        draws = [sim._service_s() for _ in range(20_000)]
        mean = statistics.fmean(draws)
        assert mean == pytest.approx(0.1, rel=0.02)
        assert statistics.pstdev(draws) / mean == pytest.approx(cv, abs=0.03)
        assert min(draws) > 0
    with pytest.raises(ValueError):
        Simulator(api_key="k", service_cv=-1)


def test_network_latency_is_outside_the_slot() -> None:
    # One slot, 50 ms calls, 200 ms of network: two calls at once end at ~0.25 s and ~0.30 s;
    # with the network inside the slot the second would end at ~0.50 s.
    with running_sim(slots=1, service_ms=50, latency_ms=200) as sim:
        results = timed_inserts(sim, 2)
        assert [code for code, _ in results] == [0, 0]
        durations = sorted(d for _, d in results)
        assert 0.2 <= durations[0] < 0.33, durations
        assert durations[1] < 0.42, durations
        assert sim.state(include_leads=False)["latency_ms"] == 200


def test_the_dialer_holds_slots_on_its_schedule() -> None:
    assert parse_dialer_load("2@0, 4@10,0@20") == [(0.0, 2), (10.0, 4), (20.0, 0)]
    for bad in ("2", "x@1", "-1@0", "1@-2"):
        with pytest.raises(ValueError):
            parse_dialer_load(bad)
    with running_sim(slots=3, service_ms=100, dialer_load="2@0,0@0.6") as sim:
        time.sleep(0.05)
        timed_inserts(sim, 3)
        assert sim.peak_in_service == 1  # two of three slots are the dialer's
        assert sim.state(include_leads=False)["dialer_slots"] == 2
        time.sleep(0.6)
        sim.reset_stats()
        timed_inserts(sim, 3, first=3)
        assert sim.peak_in_service == 3


def test_cli_flags_reach_the_capacity_model() -> None:
    args = build_parser().parse_args(
        ["--queue", "barging", "--service-cv", "0.5", "--latency-ms", "30", "--dialer-load", "1@0"]
    )
    assert (args.queue, args.service_cv, args.latency_ms, args.dialer_load) == (
        "barging",
        0.5,
        30.0,
        "1@0",
    )
    defaults = build_parser().parse_args([])
    assert (defaults.queue, defaults.service_cv, defaults.latency_ms) == ("fifo", 0.0, 0.0)
    assert defaults.dialer_load is None
