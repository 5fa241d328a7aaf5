"""Rest frames of live sessions: no codec work on the clock thread, no cache outside the store's cap, no
avatar kept alive by the engine."""
from __future__ import annotations

import gc
import threading
import weakref

import numpy as np
import pytest

import musetalk.realtime.engine.engine as engine_module
import musetalk.video.jpeg as jpeg_module
from musetalk.realtime.avatars.store import AvatarStore
from musetalk.realtime.engine.engine import Engine
from musetalk.realtime.engine.outbox import Frame

from .conftest import fake_models, wait_until
from .test_live import Reader


@pytest.fixture()
def codec_threads(monkeypatch):
    """The names of the threads that encode or decode a JPEG while the test runs."""
    names: list[str] = []
    for module, name in ((jpeg_module, "encode_jpeg"), (jpeg_module, "decode_jpeg"), (engine_module, "encode_jpeg")):
        real = getattr(module, name)

        def recording(*args, _real=real, **kwargs):
            names.append(threading.current_thread().name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(module, name, recording)
    return names


def rest_frames(engine, avatar, images: bool, count: int = 30) -> list[Frame]:
    """The first ``count`` frames of a live session at rest on ``avatar``."""
    session = engine.open(avatar, live=True, images=images)
    reader = Reader(session)
    while sum(isinstance(i, Frame) for _, i in reader.items) < count:
        reader.join(0.05)
        assert reader.is_alive()
    session.finish()
    reader.join(30)
    wait_until(lambda: session not in engine._sessions)  # the scheduler forgets a finished session
    return [i for _, i in reader.items if isinstance(i, Frame)][:count]


@pytest.mark.parametrize("images", [False, True])
def test_the_clock_thread_does_no_codec_work(tiny_musetalk, store, codec_threads, images):
    """A fresh store (nothing decoded yet), JPEG or image sessions on the 4-frame video avatar: every rest
    frame is the stored source frame exactly, and no JPEG is encoded or decoded on the clock thread."""
    avatar = AvatarStore(store.root, tiny_musetalk).load("video")
    with Engine(tiny_musetalk, batch_size=8, lookahead_s=0.1) as engine:
        fake_models(engine)
        frames = rest_frames(engine, avatar, images)
    assert "musetalk-clock" not in codec_threads
    assert [f.index for f in frames] == list(range(len(frames)))
    for f in frames:
        source = avatar.source_index(f.index)
        if images:
            assert f.jpeg is None and np.array_equal(f.image, avatar.frames[source])
        else:
            assert f.jpeg == avatar.frame_jpeg(source) and f.image is None


def test_rest_frames_keep_no_avatar_alive(tiny_musetalk, store):
    """Rest frames live in the store's cache only (here 1 MB, less than a frame of this video: decoded each
    time, in the pool): once the store forgets the avatar and its sessions are over, nothing holds it (the
    engine's own rest cache of 2048 JPEGs did, with their avatars)."""
    small = AvatarStore(store.root, tiny_musetalk, cache_mb=1.0)
    with Engine(tiny_musetalk, batch_size=8, lookahead_s=0.1) as engine:
        fake_models(engine)
        avatar = small.load("video")
        rest_frames(engine, avatar, images=True, count=12)
        rest_frames(engine, avatar, images=False, count=12)
        gone = weakref.ref(avatar)
        small.cache.drop(lambda key: True)
        del avatar
        gc.collect()
        assert gone() is None, [type(r).__name__ for r in gc.get_referrers(gone())]  # the engine still runs
