"""Latency under overload: earliest-deadline-first, late frames skipped with exact indices, admission."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from musetalk.audio.features import frame_count
from musetalk.realtime.engine.admission import ServerFull
from musetalk.realtime.engine.engine import Engine
from musetalk.realtime.engine.outbox import Frame, Skip

from .conftest import fake_models, feed_realtime

BUDGET_S = 0.3


def collect(session, out: dict) -> None:
    out[session.id] = list(session.frames(timeout=60))


def test_overload_keeps_latency_within_budget(tiny_musetalk, store, speech):
    # 3 sessions x 25 fps = 75 frames/s against a generator making 4 frames per 80 ms (50 frames/s)
    clip = speech[16000:16000 + 2 * 16000]
    total = frame_count(len(clip), 25)
    with Engine(tiny_musetalk, batch_size=4, latency_budget_s=BUDGET_S, capacity=3) as engine:
        fake_models(engine, generate_s=0.08)
        avatar = store.load("photo")
        sessions = [engine.open(avatar) for _ in range(3)]
        with pytest.raises(ServerFull, match=r"^server full: 3 of 3 sessions in use; try again later$"):
            engine.open(avatar)
        results: dict = {}
        readers = [threading.Thread(target=collect, args=(s, results)) for s in sessions]
        for r in readers:
            r.start()
        feed_realtime(sessions, clip)
        for r in readers:
            r.join()
    skipped = 0
    for s in sessions:
        items = results[s.id]
        assert [item.index for item in items] == list(range(total)) == list(range(50))
        skips = [item for item in items if isinstance(item, Skip)]
        assert [k.skipped for k in skips] == list(range(1, len(skips) + 1)) and s.skipped == len(skips)
        latencies = np.array([f.latency for f in items if isinstance(f, Frame)])
        assert len(latencies) + len(skips) == total and len(latencies) >= 0.3 * total
        assert np.percentile(latencies, 95) <= BUDGET_S and latencies.max() <= BUDGET_S
        skipped += len(skips)
    assert skipped >= 0.1 * 3 * total  # the overload is real: frames were skipped, not delayed
    assert engine.stats.frames_skipped == skipped


def test_without_budget_nothing_is_skipped_and_order_is_earliest_deadline_first(tiny_musetalk, store, speech):
    order = []
    with Engine(tiny_musetalk, batch_size=2, capacity=None) as engine:
        fake_models(engine, generate_s=0.02)
        original = engine._generate_batch

        def spy(pairs):
            order.extend((s.id, j.index) for s, j in pairs)
            return original(pairs)

        engine._generate_batch = spy
        avatar = store.load("photo")
        with engine._cond:  # both sessions' audio is in before the scheduler looks
            late, early = engine.open(avatar), engine.open(avatar)
            late.feed(speech[:8000])
            early.feed(speech[:16000])
        late.end()
        early.end()
        assert [i.index for i in early.frames(timeout=30)] == list(range(25))
        assert [i.index for i in late.frames(timeout=30)] == list(range(12))
    # equal media clocks: frames alternate between the sessions by index, never one session first
    assert sorted(order[:8], key=lambda p: p[1]) == order[:8]
    assert {i for _, i in order[:8]} == {0, 1, 2, 3}


def test_a_stall_longer_than_the_budget_does_not_skip_every_later_frame(tiny_musetalk, store, speech):
    """One slow batch (a first CUDA call, a hiccup) must not leave the engine believing no frame can ever make
    its deadline: after it, frames are rendered within the budget again."""
    clip = speech[16000:16000 + 2 * 16000]
    total = frame_count(len(clip), 25)
    with Engine(tiny_musetalk, batch_size=4, latency_budget_s=BUDGET_S, capacity=1) as engine:
        fake_models(engine, generate_s=0.02)
        engine.cost.generated(5.0, 1)  # as measured after a 5 s stall
        session = engine.open(store.load("photo"))
        results: dict = {}
        reader = threading.Thread(target=collect, args=(session, results))
        reader.start()
        feed_realtime([session], clip)
        reader.join()
    items = results[session.id]
    assert [item.index for item in items] == list(range(total))
    latencies = np.array([f.latency for f in items if isinstance(f, Frame)])
    assert len(latencies) >= 0.5 * total and latencies.max() <= BUDGET_S


def test_an_engine_slower_than_real_time_draws_what_it_can_within_the_budget(tiny_musetalk, store, speech):
    """As on a 2-core CPU with the tiny models: a 0.4 s whisper pass and 0.13 s per generated frame against
    one 25 fps session (about 4 times too slow). Batches are sized to the time left before their deadlines,
    so the engine keeps drawing frames, none later than the budget, instead of starting batches of 16 that
    can only be late."""
    clip = speech[16000:16000 + 4 * 16000]
    total = frame_count(len(clip), 25)
    with Engine(tiny_musetalk, batch_size=16, latency_budget_s=1.0, capacity=1) as engine:
        fake_models(engine, encode_s=0.4, frame_s=0.13)
        session = engine.open(store.load("photo"))
        results: dict = {}
        reader = threading.Thread(target=collect, args=(session, results))
        reader.start()
        feed_realtime([session], clip, chunk_ms=40)
        reader.join()
    items = results[session.id]
    assert [item.index for item in items] == list(range(total)) == list(range(100))
    latencies = np.array([f.latency for f in items if isinstance(f, Frame)])
    assert len(latencies) >= 12 and latencies.max() <= 1.0
