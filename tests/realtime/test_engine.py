"""The streaming engine: offline-equal frames, counts, order under uneven chunks, concurrency, cleanup."""
from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest

from musetalk.audio.features import frame_count
from musetalk.face import paste_face
from musetalk.realtime.engine.engine import Engine
from musetalk.realtime.engine.session import SessionError

from .conftest import uneven_chunks, wait_until


def offline_frames(mt, avatar, samples: np.ndarray) -> np.ndarray:
    """What the offline path makes of ``samples`` on ``avatar``: features of the whole clip, generate, paste."""
    feats = mt.features_from_samples(samples, avatar.fps)
    src = [avatar.source_index(i) for i in range(len(feats))]
    faces = mt.generate(np.asarray(avatar.crops)[src], feats)
    return np.stack([paste_face(np.asarray(avatar.frames[s]), f, avatar.records[s], avatar.mask(s))
                     for s, f in zip(src, faces)])


def test_whole_clip_equals_offline(store, tiny_musetalk, speech):
    avatar = store.load("video")
    clip = speech[16000 : 16000 + 14000]
    with Engine(tiny_musetalk, batch_size=8, jpeg_quality=None) as engine:
        session = engine.open(avatar)
        session.feed(clip)
        session.end()
        frames = list(session.frames(timeout=60))
    assert session.frame_total == len(frames) == frame_count(len(clip), 25) == 21
    got = np.stack([f.image for f in frames])
    assert np.abs(got.astype(int) - offline_frames(tiny_musetalk, avatar, clip)).max() <= 1
    assert all(f.ready_at <= f.done_at and f.jpeg is None for f in frames)


def test_encoding_engine_keeps_only_the_jpeg(engine, store, speech):
    session = engine.open(store.load("video"))
    session.feed(speech[:4000])
    session.end()
    frames = list(session.frames(timeout=60))
    assert len(frames) == 6 and all(f.image is None for f in frames)
    decoded = cv2.imdecode(np.frombuffer(frames[0].jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (768, 576, 3)


def test_uneven_chunks_in_order_without_gaps(engine, store, speech):
    clip = speech[: 16000 + 7777]
    session = engine.open(store.load("photo"))
    got = []

    def feed() -> None:
        for chunk in uneven_chunks(clip, seed=3, largest=5000):
            session.feed(chunk)
            time.sleep(0.002)
        session.end()

    feeder = threading.Thread(target=feed)
    feeder.start()
    got = [f.index for f in session.frames(timeout=60)]
    feeder.join()
    assert got == list(range(frame_count(len(clip), 25))) and len(got) == 37


def test_two_sessions_share_batches(tiny_musetalk, store, speech, monkeypatch):
    batches = []
    original = Engine._render

    def spy(self, jobs):
        batches.append({j.session.id for j in jobs})
        original(self, jobs)

    monkeypatch.setattr(Engine, "_render", spy)
    with Engine(tiny_musetalk, batch_size=5, jpeg_quality=None) as engine:
        a, b = engine.open(store.load("photo")), engine.open(store.load("video"))
        with engine._cond:  # both sessions' audio is in before the scheduler looks
            for session, clip in ((a, speech[:12000]), (b, speech[20000:36000])):
                for chunk in uneven_chunks(clip, seed=session.id):
                    session.feed(chunk)
                session.end()
        results = {}
        readers = [threading.Thread(target=lambda s=s: results.update({s.id: list(s.frames(timeout=60))}))
                   for s in (a, b)]
        for r in readers:
            r.start()
        for r in readers:
            r.join()
        wait_until(lambda: engine.sessions == 0)
    assert [f.index for f in results[a.id]] == list(range(18))
    assert [f.index for f in results[b.id]] == list(range(25))
    assert results[a.id][0].image.shape == (266, 474, 3) and results[b.id][0].image.shape == (768, 576, 3)
    assert any(ids == {a.id, b.id} for ids in batches)


def test_closed_session_is_freed(engine, store, speech):
    session = engine.open(store.load("photo"))
    session.feed(speech[: 16000 * 2])
    next(session.frames(timeout=60))
    session.close()
    wait_until(lambda: engine.sessions == 0)
    with pytest.raises(SessionError, match="closed"):
        session.feed(speech[:100])
    other = engine.open(store.load("photo"))  # the engine goes on serving
    other.feed(speech[:4000])
    other.end()
    assert len(list(other.frames(timeout=60))) == 6


def test_misuse(engine, store):
    session = engine.open(store.load("photo"))
    session.end()
    assert list(session.frames(timeout=10)) == []
    with pytest.raises(SessionError, match="after the end"):
        session.feed(np.zeros(10, np.float32))
