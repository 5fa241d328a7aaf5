"""Barge-in: a frame still rendering for the interrupted utterance never shows in the next one's slot."""
from __future__ import annotations

import threading

import numpy as np

from musetalk.realtime.engine.engine import Engine
from musetalk.realtime.engine.outbox import Frame
from musetalk.realtime.engine.render import blend_with_rest, composite
from musetalk.realtime.engine.session import _blend

from .conftest import fake_models, wait_until

WHITE = np.full((256, 256, 3), 255, np.uint8)
BLACK = np.zeros((256, 256, 3), np.uint8)


def test_a_frame_of_the_interrupted_utterance_never_lands_in_the_new_ones_slot(tiny_musetalk, store, speech):
    """Utterance A's first batch is still generating (white faces) when the client barges in with B (black
    faces) over the same frame indices; A's frames then come out, after the interrupt: B's slots must show
    B's faces only."""
    avatar = store.load("photo")
    batches: list[list[int]] = []
    a_generating, a_release, b_slot_seen = threading.Event(), threading.Event(), threading.Event()
    b_start: list[int] = []
    got: dict[int, np.ndarray] = {}

    def generate(pairs):
        batches.append([job.index for _, job in pairs])
        if len(batches) == 1:  # A's batch: held until B has started
            a_generating.set()
            a_release.wait(30)
            return [WHITE for _ in pairs]
        b_slot_seen.wait(3)  # let a stray frame of A reach the client first, if it is going to
        return [BLACK for _ in pairs]

    with Engine(tiny_musetalk, batch_size=32, jpeg_quality=None, lookahead_s=0.1) as engine:
        fake_models(engine)
        engine._generate_batch = generate
        session = engine.open(avatar, live=True)

        def read() -> None:
            for item in session.frames(timeout=60):
                if isinstance(item, Frame):
                    got[item.index] = item.image
                    if b_start and item.index >= b_start[0]:
                        b_slot_seen.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        session.feed(speech[16000:48000])  # A: 2 s at once, no end
        assert a_generating.wait(30)
        session.interrupt()
        b_start.append(session.feed(speech[64000:80000]))  # B: 1 s, barging in
        session.end()
        a_release.set()
        wait_until(lambda: all(i in got for i in range(b_start[0], b_start[0] + 25)), timeout=60)
        session.finish()
        reader.join(30)
    overlap = set(batches[0]) & set(range(b_start[0], b_start[0] + 25))
    assert overlap, f"A's batch {batches[0][:3]}... and B (from frame {b_start[0]}) do not overlap: no race"
    for k in range(25):
        index = b_start[0] + k
        expected = blend_with_rest(avatar, 0, composite(avatar, 0, BLACK), _blend(k, 25))
        assert np.array_equal(got[index], expected), f"frame {index} (B's frame {k}) is not B's"
