"""Generation and compositing overlap: batch k+1 generates while batch k is composited and encoded."""
from __future__ import annotations

import threading
import time

import musetalk.realtime.engine.engine as engine_module
from musetalk.realtime.engine.engine import Engine
from musetalk.realtime.engine.session import Session

from .conftest import fake_models

GENERATE_S = 0.05  # per batch of 8
COMPOSITE_S = 0.0125  # per frame: 8 frames on 2 compositors, 50 ms per batch


class Timeline:
    """For each generate call, the frames generated before it and not delivered yet (still compositing)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.generated = self.delivered = 0
        self.compositing_at_generate: list[int] = []


def run(tiny_musetalk, avatar, speech, monkeypatch, pipelined: bool) -> Timeline:
    timeline = Timeline()
    real_composite, real_deliver = engine_module.composite, Session.deliver

    def slow_composite(avatar, source, face):
        time.sleep(COMPOSITE_S)
        return real_composite(avatar, source, face)

    def deliver(session, job, jpeg, image):
        real_deliver(session, job, jpeg, image)
        with timeline.lock:
            timeline.delivered += 1

    monkeypatch.setattr(engine_module, "composite", slow_composite)
    monkeypatch.setattr(Session, "deliver", deliver)
    with Engine(tiny_musetalk, batch_size=8, compositors=2, jpeg_quality=None, pipeline=pipelined) as engine:
        fake_models(engine, generate_s=GENERATE_S)
        plain = engine._generate_batch

        def generate(pairs):
            with timeline.lock:
                timeline.compositing_at_generate.append(timeline.generated - timeline.delivered)
            faces = plain(pairs)
            with timeline.lock:
                timeline.generated += len(pairs)
            return faces

        engine._generate_batch = generate
        session = engine.open(avatar)
        session.feed(speech[:16000 * 4])  # 100 frames at once: the engine is saturated throughout
        session.end()
        frames = list(session.frames(timeout=120))
    assert len(frames) == 100
    return timeline


def test_batch_k_plus_1_generates_while_batch_k_composites(tiny_musetalk, store, speech, monkeypatch):
    """Sequential, every generate call starts with nothing left to composite (>= 100 ms per batch);
    pipelined, all but the first (and a possible straggler) start while the previous batch composites
    (about 50 ms per batch): counts of frames, not wall-clock bounds."""
    avatar = store.load("photo")
    sequential = run(tiny_musetalk, avatar, speech, monkeypatch, pipelined=False)
    pipelined = run(tiny_musetalk, avatar, speech, monkeypatch, pipelined=True)
    assert len(sequential.compositing_at_generate) == len(pipelined.compositing_at_generate) == 13  # ceil(100 / 8)
    assert sequential.compositing_at_generate == [0] * 13
    assert sum(n > 0 for n in pipelined.compositing_at_generate) >= 11, pipelined.compositing_at_generate
