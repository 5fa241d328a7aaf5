"""Latency under overload: earliest-deadline-first, late frames skipped with exact indices, admission."""
from __future__ import annotations

import threading

import pytest

from musetalk.audio.features import frame_count
from musetalk.realtime.engine.admission import ServerFull
from musetalk.realtime.engine.engine import Engine
from musetalk.realtime.engine.outbox import Frame, Skip

from .conftest import fake_models, feed_realtime

BUDGET_S = 0.3


def collect(session, out: dict) -> None:
    out[session.id] = list(session.frames(timeout=60))


CALL_S = 0.08  # one fake generation call of up to 4 frames: 50 frames/s at most


def test_overload_draws_what_the_generator_can_make_in_time(tiny_musetalk, store, speech):
    """3 sessions x 25 fps = 75 frames/s asked of a generator making 4 frames per 80 ms (50 frames/s).

    Frames can be drawn from when the first one's audio is in until the last one's deadline: the 50 frames'
    1.96 s of media time plus the 0.3 s budget, 2.26 s in which the generator makes at most 112 frames
    (28 calls of 4). An engine that sizes its batches to the deadlines draws most of that: at least 70 % (78
    frames; lost: the first call, a probe of one frame; the last batch that would end past the deadlines;
    the 20 % margin of the cost estimate; a loaded machine's slower calls; 80 % measured) and at most one
    batch beyond it (116); every session gets frames (15 or more); all the others are skipped, counted. One
    frame per call would draw about 28, a stalled engine none."""
    clip = speech[16000:16000 + 2 * 16000]
    total = frame_count(len(clip), 25)
    with Engine(tiny_musetalk, batch_size=4, latency_budget_s=BUDGET_S, capacity=3) as engine:
        fake_models(engine, generate_s=CALL_S)
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
    possible = 4 * int(((total - 1) / 25 + BUDGET_S) / CALL_S)
    drawn_per_session = []
    for s in sessions:
        items = results[s.id]
        assert [item.index for item in items] == list(range(total)) == list(range(50))
        skips = [item for item in items if isinstance(item, Skip)]
        assert [k.skipped for k in skips] == list(range(1, len(skips) + 1)) and s.skipped == len(skips)
        drawn_per_session.append(sum(isinstance(item, Frame) for item in items))
    drawn = sum(drawn_per_session)
    assert possible == 112 and 0.7 * possible <= drawn <= possible + 4, drawn_per_session
    assert min(drawn_per_session) >= 15, drawn_per_session
    assert engine.stats.frames_skipped == 3 * total - drawn


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
    its deadline: after it, frames are drawn again (a generator making 4 frames per 20 ms has room for all
    of them): half of the frames or more, and every frame of the second half."""
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
    drawn = [isinstance(item, Frame) for item in items]
    assert sum(drawn) >= 0.5 * total and all(drawn[total // 2:]), drawn


def test_an_engine_slower_than_real_time_draws_what_it_can_within_the_budget(tiny_musetalk, store, speech):
    """As on a 2-core CPU with the tiny models: a 0.4 s whisper pass and 0.13 s per generated frame against
    one 25 fps session (about 4 times too slow). Batches are sized to the time left before their deadlines,
    so the engine keeps drawing frames (12 or more of 100) instead of starting batches of 16 that can only be
    late (and be skipped whole)."""
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
    assert sum(isinstance(item, Frame) for item in items) >= 12
