"""The WebSocket's frame header (``frame_header=1``): each JPEG carries its index and media time; clients
that did not ask get bare JPEGs as before."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from musetalk.realtime.engine.engine import Engine
from musetalk.realtime.outputs.ws import FRAME_MAGIC, frame_header, parse_frame
from musetalk.realtime.server import create_app

from .conftest import fake_models
from .test_say import FakeSynthesizer


@pytest.fixture(scope="module")
def engine(tiny_musetalk):
    with Engine(tiny_musetalk, batch_size=8, capacity=4) as engine:
        yield fake_models(engine)


@pytest.fixture()
def client(store, engine, speech):
    with TestClient(create_app(store, engine, synthesizer=FakeSynthesizer(speech))) as client:
        yield client


def test_header_round_trip_and_refusal():
    data = frame_header(7, 0.28) + b"\xff\xd8jpeg"
    assert len(data) == 16 + 6 and data[:4] == FRAME_MAGIC
    assert parse_frame(data) == (7, 0.28, b"\xff\xd8jpeg")
    with pytest.raises(ValueError, match=r"not a frame message: it starts b'\\xff\\xd8jp', not the header magic"):
        parse_frame(b"\xff\xd8jpeg" * 4)


def test_frames_carry_index_and_media_time(client):
    """Rest and speech frames of a live session: indices in order (a skip takes its index), media time i/fps;
    the say's two sentences (0.5 s, 0.3 s) play from frames on the same clock."""
    with client.websocket_connect("/ws/photo?live=1&frame_header=1") as ws:
        expected, frames, audio = 0, [], []
        for _ in range(3):  # at rest
            index, media_s, jpeg = parse_frame(ws.receive_bytes())
            frames.append((index, media_s))
            expected += 1
        ws.send_text(json.dumps({"type": "say", "text": "Hello."}))
        while True:
            msg = ws.receive()
            if msg.get("bytes") is not None:
                index, media_s, jpeg = parse_frame(msg["bytes"])
                frames.append((index, media_s))
                continue
            text = json.loads(msg["text"])
            if text["type"] == "skip":
                frames.append((text["index"], None))
            elif text["type"] == "audio":
                audio.append(text)
            elif text["type"] == "utterance_done":
                break
        ws.send_text('{"type": "close"}')
    assert [i for i, _ in frames] == list(range(len(frames)))
    assert all(t == i / 25 for i, t in frames if t is not None)
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (266, 474, 3)
    assert audio[1]["frame"] - audio[0]["frame"] == 12 and frames[-1][0] >= audio[0]["frame"] + 19


def test_without_the_header_frames_are_bare_jpegs(client):
    with client.websocket_connect("/ws/photo?live=1") as ws:
        assert ws.receive_bytes()[:2] == b"\xff\xd8"
        ws.send_text('{"type": "close"}')


def test_bad_header_flag(client):
    with client.websocket_connect("/ws/photo?frame_header=yes") as ws:
        reply = json.loads(ws.receive_text())
        assert reply == {"type": "error", "message": "frame_header must be 0 or 1, got 'yes'"}
        assert ws.receive() == {"type": "websocket.close", "code": 1008, "reason": reply["message"]}
