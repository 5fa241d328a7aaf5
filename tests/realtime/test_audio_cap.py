"""A session accepts audio only so far ahead of its clock: more is refused with the reason, and counted."""
from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from musetalk.realtime.engine.engine import Engine
from musetalk.realtime.engine.session import SessionError
from musetalk.realtime.server import create_app

from .conftest import fake_models

AHEAD = r"audio refused: 2\.\d s ahead of the session's clock, over its 2 s cap \(--max-audio-ahead-s\): send it in real time"


@pytest.fixture(scope="module")
def engine(tiny_musetalk):
    with Engine(tiny_musetalk, batch_size=8, max_audio_ahead_s=2.0) as engine:
        yield fake_models(engine)


def test_audio_beyond_the_cap_is_refused_and_counted(engine, store):
    session = engine.open(store.load("photo"))
    try:
        session.feed(np.zeros(16000 * 2 - 1600, np.float32))  # 1.9 s: within the cap
        with pytest.raises(SessionError, match=AHEAD):
            session.feed(np.zeros(16000, np.float32))  # 1 s more: 2.9 s
        assert engine.stats.snapshot()["audio_refused"] == 1
        session.feed(np.zeros(800, np.float32))  # what fits is still accepted: the session goes on
    finally:
        session.close()


def test_websocket_answers_error_then_1008_and_metrics_count_it(engine, store):
    before = engine.stats.snapshot()["audio_refused"]
    with TestClient(create_app(store, engine)) as client:
        with client.websocket_connect("/ws/photo") as ws:
            ws.send_bytes(b"\0\0" * 16000 * 4)  # 4 s at once into a 2 s cap
            while (msg := ws.receive()).get("text") is None:
                pass
            reply = json.loads(msg["text"])
            assert reply["type"] == "error", reply
            assert reply["message"] == ("audio refused: 4.0 s ahead of the session's clock, over its 2 s cap "
                                        "(--max-audio-ahead-s): send it in real time")
            assert ws.receive() == {"type": "websocket.close", "code": 1008, "reason": reply["message"]}
        metrics = client.get("/metrics").text
    assert engine.stats.snapshot()["audio_refused"] == before + 1
    assert f"musetalk_audio_refused_total {before + 1}.0" in metrics


def test_the_cap_must_be_positive(tiny_musetalk):
    from musetalk.errors import MuseTalkError

    with pytest.raises(MuseTalkError, match="the audio cap must be positive, got 0 s"):
        Engine(tiny_musetalk, max_audio_ahead_s=0)


def test_a_say_longer_than_the_cap_is_fed_as_its_clock_plays_it(tiny_musetalk, store, speech):
    """0.5 s then 0.3 s of speech into a live session that accepts 0.9 s ahead (its playout delay with a
    0.1 s look-ahead is 0.26 s): the second sentence waits for room instead of failing the session."""
    from .test_say import FakeSynthesizer, messages_until

    with Engine(tiny_musetalk, batch_size=8, max_audio_ahead_s=0.9) as engine:
        fake_models(engine)
        synth = FakeSynthesizer(speech)
        with TestClient(create_app(store, engine, synthesizer=synth)) as client:
            with client.websocket_connect("/ws/photo?live=1&lookahead=0.1") as ws:
                ws.receive_bytes()
                ws.send_text(json.dumps({"type": "say", "text": "Hello."}))
                _, texts = messages_until(ws, "utterance_done")
                ws.send_text('{"type": "close"}')
        assert texts[-1][1] == {"type": "utterance_done", "frames": 20}
        assert engine.stats.snapshot()["audio_refused"] == 0
