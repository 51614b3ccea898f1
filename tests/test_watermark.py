"""The STATE watermark: forwarded in order, as soon as, and never before, everything is settled."""

from __future__ import annotations

import io
import json
import threading

from target_noojee.watermark import Watermark


def states(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_state_waits_for_every_earlier_record() -> None:
    out = io.StringIO()
    wm = Watermark(out=out)
    a, b = wm.open_record(), wm.open_record()
    wm.add_state({"s": 1})
    c = wm.open_record()
    wm.add_state({"s": 2})
    wm.release(b)
    assert states(out) == []
    wm.release(a)
    assert states(out) == [{"s": 1}]
    wm.release(c)
    assert states(out) == [{"s": 1}, {"s": 2}]


def test_state_with_nothing_pending_goes_out_at_once() -> None:
    out = io.StringIO()
    wm = Watermark(out=out)
    wm.add_state({"s": 0})
    assert states(out) == [{"s": 0}]


def test_a_record_with_several_leads_settles_with_the_last() -> None:
    out = io.StringIO()
    wm = Watermark(out=out)
    seq = wm.open_record()
    wm.hold(seq)
    wm.hold(seq)
    wm.release(seq)  # the reading hold
    wm.add_state({"s": 1})
    wm.release(seq)
    assert states(out) == []
    wm.release(seq)
    assert states(out) == [{"s": 1}]


def test_before_emit_runs_before_each_write() -> None:
    out = io.StringIO()
    calls: list[int] = []
    wm = Watermark(out=out, before_emit=lambda: calls.append(len(out.getvalue())))
    wm.add_state({"s": 1})
    assert calls == [0]


def test_repeated_identical_state_is_written_once() -> None:
    out = io.StringIO()
    wm = Watermark(out=out)
    wm.add_state({"s": 1})
    wm.add_state({"s": 1})
    assert states(out) == [{"s": 1}]


def test_concurrent_releases_keep_order_and_lose_nothing() -> None:
    out = io.StringIO()
    wm = Watermark(out=out)
    seqs = []
    for i in range(2000):
        seqs.append(wm.open_record())
        if i % 100 == 99:
            wm.add_state({"n": i + 1})
    halves = [seqs[0::2], seqs[1::2]]
    threads = [
        threading.Thread(target=lambda h=h: [wm.release(s) for s in reversed(h)]) for h in halves
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [s["n"] for s in states(out)] == list(range(100, 2001, 100))
    assert wm.unsettled == 0
