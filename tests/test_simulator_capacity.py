"""noojee-sim's capacity model: N slots, a FIFO server queue, 109 after the queue timeout."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from target_noojee.simulator import Simulator
from target_noojee.simulator.capacity import Capacity

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
