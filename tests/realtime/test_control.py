"""The transport-independent control protocol: query parameters, and a ``say`` sentence that synthesises late."""
from __future__ import annotations

import json
import threading

import pytest
from fastapi.testclient import TestClient

from musetalk.realtime.engine.engine import Engine
from musetalk.realtime.outputs.control import ProtocolError, SessionParams, session_params
from musetalk.realtime.server import create_app

from .conftest import fake_models
from .test_say import FakeSynthesizer

FPS = 25  # the photo avatar's
LATE_FRAMES = 15  # frames the clock runs past sentence 1's end before sentence 2 is synthesised


def test_session_params():
    assert session_params({}) == SessionParams(None, False, False)
    assert session_params({"lookahead": "0.25", "live": "1", "bargein": "1"}) == SessionParams(0.25, True, True)
    with pytest.raises(ProtocolError, match="^live must be 0 or 1, got 'yes'$"):
        session_params({"live": "yes"})
    with pytest.raises(ProtocolError, match=r"^lookahead must be seconds in \[0, 2\], got 'nan'$"):
        session_params({"lookahead": "nan"})


@pytest.fixture(scope="module")
def engine(tiny_musetalk):
    with Engine(tiny_musetalk, batch_size=8, capacity=4) as engine:
        yield fake_models(engine)


def test_a_late_sentence_starts_at_the_clock_whole(store, engine, speech):
    """Sentence 2 arrives when the clock is LATE_FRAMES past sentence 1's end: silence fills the gap, and
    sentence 2's audio and frames start at the clock's present frame, none of it behind the clock."""
    gate = threading.Event()
    synth = FakeSynthesizer(speech, gate=gate)  # sentences of 8000 and 4800 samples (12.5 and 7.5 frames)
    timer = None
    try:
        with TestClient(create_app(store, engine, synthesizer=synth)) as client:
            with client.websocket_connect("/ws/photo?live=1&lookahead=0.1") as ws:
                ws.send_text(json.dumps({"type": "say", "text": "Hello. There."}))
                audio, done, released_at = [], None, None
                while done is None:
                    msg = ws.receive()
                    if msg.get("bytes") is not None:
                        if timer is None:  # sentence 1's first frame: sent at its due time, not before
                            released_at = audio[0]["frame"] + 13 + LATE_FRAMES  # the clock is past this ...
                            timer = threading.Timer((13 + LATE_FRAMES) / FPS, gate.set)  # ... once this fires
                            timer.start()
                        continue
                    event = json.loads(msg["text"])
                    audio += [event] if event["type"] == "audio" else []
                    done = event if event["type"] == "utterance_done" else None
                ws.send_text('{"type": "close"}')
    finally:
        gate.set()
        if timer is not None:
            timer.cancel()
    start = audio[0]["frame"]
    assert audio[1]["frame"] >= released_at > start + 13  # not start + 12: that frame's time had passed
    assert done == {"type": "utterance_done", "frames": audio[1]["frame"] - start + 7}  # floor(4800 / 640) = 7
