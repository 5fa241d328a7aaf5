"""The frame latency histogram measures one thing: a speech frame's audio complete to it composited."""
from __future__ import annotations

import numpy as np
import pytest

from musetalk.realtime.engine.engine import Engine
from musetalk.realtime.engine.outbox import Event, Frame

from .test_live import Reader, white_faces


def test_latency_is_audio_complete_to_composited_for_speech_frames_only(tiny_musetalk, store, speech):
    """A live session renders its speech ahead of the clock (composited before due: done - due < 0) and
    shows rest frames around it: the histogram counts the speech frames, each at done - ready > 0."""
    with Engine(tiny_musetalk, batch_size=8, jpeg_quality=None, lookahead_s=0.1) as engine:
        white_faces(engine)
        session = engine.open(store.load("photo"), live=True)
        reader = Reader(session)
        session.feed(speech[16000:32000])  # 1 s at once: rendered well ahead of its frames' due times
        session.end()
        while not any(isinstance(i, Event) and i.payload["type"] == "utterance_done" for _, i in reader.items):
            reader.join(0.05)
            assert reader.is_alive()
        session.finish()
        reader.join(30)
        stats = engine.stats.snapshot()
    frames = [i for _, i in reader.items if isinstance(i, Frame)]
    spoken = [f for f in frames if f.speech]
    assert len(spoken) == 25 and len(frames) > len(spoken)
    assert min(f.done_at - f.due_at for f in spoken) < 0  # rendered ahead: "done minus due" would be negative
    buckets, total = stats["latency"]
    assert buckets[-1] == ("+Inf", 25)
    assert total == pytest.approx(sum(f.done_at - f.ready_at for f in spoken), rel=1e-9)
    assert np.all([f.done_at > f.ready_at for f in spoken])
