"""The HTTP/WebSocket server: endpoints, the streaming protocol, every error case, vanished clients, upload."""
from __future__ import annotations

import json
import time

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from musetalk.audio.features import frame_count
from musetalk.realtime.avatar import AvatarStore
from musetalk.realtime.server import create_app

from .conftest import uneven_chunks


@pytest.fixture(scope="module")
def client(store, engine):
    with TestClient(create_app(store, engine)) as client:
        yield client


def pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def expect_error(ws, match: str) -> None:
    msg = json.loads(ws.receive_text())
    assert msg["type"] == "error" and match in msg["message"], msg
    assert ws.receive()["type"] == "websocket.close"


def test_health_avatars_page(client):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["version"] == "v1.5" and health["avatars"] == 2
    names = [a["name"] for a in client.get("/avatars").json()]
    assert names == ["photo", "video"]
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text and "/static/app.js" in page.text
    assert "WebSocket" in client.get("/static/app.js").text
    assert "registerProcessor" in client.get("/static/pcm-worklet.js").text


def test_stream_protocol_with_uneven_odd_chunks(client, speech):
    clip = pcm16(speech[8000:8000 + 19000])
    with client.websocket_connect("/ws/video") as ws:
        rng = np.random.default_rng(7)
        i = 0
        while i < len(clip):  # byte chunks of any size, odd ones split samples across messages
            n = int(rng.integers(1, 6001))
            ws.send_bytes(clip[i:i + n])
            i += n
        ws.send_text(json.dumps({"type": "end"}))
        jpegs = []
        while (msg := ws.receive())["type"] == "websocket.send" and msg.get("bytes") is not None:
            jpegs.append(msg["bytes"])
        assert json.loads(msg["text"]) == {"type": "done", "frames": frame_count(19000, 25), "skipped": 0}
    assert len(jpegs) == 29
    image = cv2.imdecode(np.frombuffer(jpegs[-1], np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (768, 576, 3)


def test_unknown_avatar(client):
    with client.websocket_connect("/ws/nobody") as ws:
        expect_error(ws, "no avatar named 'nobody'")


@pytest.mark.parametrize("message, match", [
    ("hello", "must be JSON"),
    (json.dumps({"type": "start"}), "unknown message"),
    (json.dumps([1, 2]), "unknown message"),
])
def test_malformed_text(client, message, match):
    with client.websocket_connect("/ws/photo") as ws:
        ws.send_bytes(b"\0\0" * 100)
        ws.send_text(message)
        expect_error(ws, match)


def test_audio_after_end_and_double_end(client):
    for second in (lambda ws: ws.send_bytes(b"\0\0" * 10), lambda ws: ws.send_text('{"type": "end"}')):
        with client.websocket_connect("/ws/photo") as ws:
            ws.send_bytes(b"\0\0" * 8000)  # 0.5 s: 12 frames
            ws.send_text('{"type": "end"}')
            second(ws)
            while (msg := ws.receive()).get("bytes") is not None:
                pass
            assert json.loads(msg["text"])["type"] == "error"


def test_vanished_client_frees_its_session_and_others_go_on(client, engine, speech):
    with client.websocket_connect("/ws/photo") as ws:
        ws.send_bytes(pcm16(speech[:32000]))
        ws.receive_bytes()
    deadline = time.monotonic() + 20
    while engine.sessions:
        assert time.monotonic() < deadline, "session not freed"
        time.sleep(0.05)
    with client.websocket_connect("/ws/photo") as ws:
        ws.send_bytes(pcm16(speech[:2000]))
        ws.send_text('{"type": "end"}')
        assert all(len(ws.receive_bytes()) > 1000 for _ in range(3))
        assert json.loads(ws.receive_text()) == {"type": "done", "frames": 3, "skipped": 0}


def test_upload_prepares_with_progress(tmp_path, tiny_musetalk, engine, media):
    store = AvatarStore(tmp_path / "avatars", tiny_musetalk)
    with TestClient(create_app(store, engine)) as client:
        reply = client.post("/avatars", data={"name": "mona"},
                            files={"file": ("monalisa.png", (media / "monalisa.png").read_bytes(), "image/png")})
        events = [json.loads(line) for line in reply.text.splitlines()]
        assert {e["stage"] for e in events if e["type"] == "progress"} >= {"faces", "latents", "masks", "save"}
        assert events[-1]["type"] == "done" and events[-1]["avatar"]["name"] == "mona"
        assert [a["name"] for a in client.get("/avatars").json()] == ["mona"]
        bad = client.post("/avatars", data={"name": "../x"}, files={"file": ("a.png", b"x", "image/png")})
        assert bad.status_code == 400 and "invalid avatar name" in bad.json()["message"]
        blank = cv2.imencode(".png", np.full((120, 120, 3), 90, np.uint8))[1].tobytes()
        reply = client.post("/avatars", data={"name": "blank"}, files={"file": ("blank.png", blank, "image/png")})
        last = json.loads(reply.text.splitlines()[-1])
        assert last["type"] == "error" and "no face" in last["message"]
