"""Generation and compositing overlap: batch k+1 generates while batch k is composited and encoded."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import musetalk.realtime.engine.engine as engine_module
from musetalk.realtime.engine.engine import Engine

from .conftest import fake_models

GENERATE_S = 0.05  # per batch
COMPOSITE_S = 0.0125  # per frame: 8 frames on 2 compositors, 50 ms per batch


class Timeline:
    """Counts, for each generate call, the composites running when it started."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.compositing = 0
        self.running_at_generate: list[int] = []

    def generate_started(self) -> None:
        with self.lock:
            self.running_at_generate.append(self.compositing)

    def composite(self, real):
        def composite(avatar, source, face):
            with self.lock:
                self.compositing += 1
            try:
                time.sleep(COMPOSITE_S)
                return real(avatar, source, face)
            finally:
                with self.lock:
                    self.compositing -= 1
        return composite


def run(tiny_musetalk, avatar, speech, monkeypatch, pipelined: bool) -> Timeline:
    timeline = Timeline()
    monkeypatch.setattr(engine_module, "composite", timeline.composite(engine_module.composite))
    with Engine(tiny_musetalk, batch_size=8, compositors=2, jpeg_quality=None, pipeline=pipelined) as engine:
        fake_models(engine, generate_s=GENERATE_S)
        plain = engine._generate_batch

        def generate(pairs):
            timeline.generate_started()
            return plain(pairs)

        engine._generate_batch = generate
        session = engine.open(avatar)
        session.feed(speech[:16000 * 4])  # 100 frames at once: the engine is saturated throughout
        session.end()
        frames = list(session.frames(timeout=120))
    assert len(frames) == 100
    return timeline


def test_batch_k_plus_1_generates_while_batch_k_composites(tiny_musetalk, store, speech, monkeypatch):
    """Sequential, no generate call starts while a composite runs (>= 100 ms per batch); pipelined, all but
    the first (and a possible straggler) do (about 50 ms per batch): counts, not wall-clock bounds."""
    avatar = store.load("photo")
    sequential = run(tiny_musetalk, avatar, speech, monkeypatch, pipelined=False)
    pipelined = run(tiny_musetalk, avatar, speech, monkeypatch, pipelined=True)
    assert len(sequential.running_at_generate) == len(pipelined.running_at_generate) == 13  # ceil(100 / 8)
    assert sum(n > 0 for n in sequential.running_at_generate) == 0
    assert sum(n > 0 for n in pipelined.running_at_generate) >= 11
