"""The HTTP/WebSocket server: endpoints, the streaming protocol, every error case, vanished clients, upload."""
from __future__ import annotations

import json
import time

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from musetalk.audio.features import frame_count
from musetalk.realtime.avatars.store import AvatarStore
from musetalk.realtime.engine.engine import Engine
from musetalk.realtime.server import create_app

from .conftest import fake_models


@pytest.fixture(scope="module")
def client(store, engine):
    with TestClient(create_app(store, engine)) as client:
        yield client


def pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def wait_for_sessions(client, count: int, timeout: float = 30.0) -> None:
    """Wait until the server has ``count`` sessions open (a WebSocket is accepted before its session opens)."""
    deadline = time.monotonic() + timeout
    while client.get("/health").json()["sessions"] != count:
        assert time.monotonic() < deadline, f"the server did not reach {count} open sessions in {timeout} s"
        time.sleep(0.02)


def expect_error(ws, match: str, code: int = 1008) -> None:
    """An error message containing ``match``, then a close with ``code`` and the same reason."""
    msg = json.loads(ws.receive_text())
    assert msg["type"] == "error" and match in msg["message"], msg
    close = ws.receive()
    assert close == {"type": "websocket.close", "code": code, "reason": msg["message"]}


def test_health_avatars_page(client):
    health = client.get("/health").json()
    assert health == {"status": "ok", "version": "v1.5", "device": "cpu", "sessions": 0, "speaking": 0,
                      "capacity": 4, "load": 0.0, "free": True, "avatars": 2}
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


@pytest.mark.parametrize("second, match", [
    (lambda ws: ws.send_bytes(b"\0\0" * 10), "audio received after"),
    (lambda ws: ws.send_text('{"type": "end"}'), "sent twice"),
])
def test_audio_after_end_and_double_end(client, second, match):
    with client.websocket_connect("/ws/photo") as ws:
        ws.send_bytes(b"\0\0" * 8000)  # 0.5 s: 12 frames
        ws.send_text('{"type": "end"}')
        second(ws)
        while (msg := ws.receive()).get("bytes") is not None:
            pass
        reply = json.loads(msg["text"])
        assert reply["type"] == "error" and match in reply["message"]
        assert ws.receive() == {"type": "websocket.close", "code": 1008, "reason": reply["message"]}


def test_pcm_ending_inside_a_sample(client):
    with client.websocket_connect("/ws/photo") as ws:
        ws.send_bytes(b"\0\0" * 100 + b"\0")
        ws.send_text('{"type": "end"}')
        expect_error(ws, "the PCM ended inside a sample: s16le audio needs an even number of bytes")


@pytest.mark.parametrize("value", ["x", "-1", "3", "nan"])
def test_bad_lookahead(client, value):
    with client.websocket_connect(f"/ws/photo?lookahead={value}") as ws:
        expect_error(ws, f"lookahead must be seconds in [0, 2], got {value!r}")


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


def test_full_server_refuses_with_1013_and_others_go_on(store, tiny_musetalk, speech):
    with Engine(tiny_musetalk, batch_size=8, capacity=1) as engine, TestClient(create_app(store, engine)) as client:
        with client.websocket_connect("/ws/photo") as first:
            first.send_bytes(pcm16(speech[:16000]))
            assert len(first.receive_bytes()) > 1000  # the session is open and streaming
            assert client.get("/health").json() | {"avatars": 0} == {
                "status": "ok", "version": "v1.5", "device": "cpu", "sessions": 1, "speaking": 1, "capacity": 1,
                "load": 1.0, "free": False, "avatars": 0}
            with client.websocket_connect("/ws/photo") as second:
                expect_error(second, "server full: 1 of 1 sessions in use; try again later", code=1013)
            first.send_text('{"type": "end"}')
            assert sum(len(first.receive_bytes()) > 1000 for _ in range(24)) == 24
            assert json.loads(first.receive_text()) == {"type": "done", "frames": 25, "skipped": 0}


def test_engine_fault_closes_only_its_session_with_1011(store, tiny_musetalk, speech):
    def fault(stage, sessions):
        if stage == "generate" and 1 in {s.id for s in sessions}:
            raise RuntimeError("injected")

    with Engine(tiny_musetalk, batch_size=8) as engine, TestClient(create_app(store, engine)) as client:
        fake_models(engine, fault=fault)
        with client.websocket_connect("/ws/photo") as victim:
            wait_for_sessions(client, 1)  # the victim's session opens first: it is session 1
            with client.websocket_connect("/ws/photo") as bystander:
                for ws in (victim, bystander):
                    ws.send_bytes(pcm16(speech[:8000]))
                    ws.send_text('{"type": "end"}')
                expect_error(victim, "generation failed: injected", code=1011)
                assert sum(len(bystander.receive_bytes()) > 1000 for _ in range(12)) == 12
                assert json.loads(bystander.receive_text()) == {"type": "done", "frames": 12, "skipped": 0}


def test_metrics(client, speech):
    with client.websocket_connect("/ws/photo") as ws:
        ws.send_bytes(pcm16(speech[:4000]))
        ws.send_text('{"type": "end"}')
        while ws.receive().get("bytes") is not None:
            pass
    reply = client.get("/metrics")
    assert reply.headers["content-type"].startswith("text/plain")
    values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
              for line in reply.text.splitlines() if line and not line.startswith("#")}
    assert values["musetalk_sessions"] == values["musetalk_speaking_sessions"] == 0
    assert values["musetalk_queue_depth"] == values["musetalk_frames_skipped_total"] == 0
    assert values["musetalk_frames_sent_total"] >= 6  # earlier tests of this module streamed too
    assert values['musetalk_frame_latency_seconds_bucket{le="+Inf"}'] == values["musetalk_frames_sent_total"]
    assert values["musetalk_generate_batch_size_count"] >= 1 and values["musetalk_gpu_memory_bytes"] == 0
    assert values["process_resident_memory_bytes"] > 50e6


def test_live_session_over_the_websocket(client, speech):
    with client.websocket_connect("/ws/photo?live=1&lookahead=0.1") as ws:
        assert all(len(ws.receive_bytes()) > 1000 for _ in range(3))  # the avatar at rest before any audio
        ws.send_bytes(pcm16(speech[:8000]))
        ws.send_text('{"type": "end"}')
        texts, frames = [], 3
        while len(texts) < 3:
            msg = ws.receive()
            text = json.loads(msg["text"]) if msg.get("text") is not None else None
            if text is None or text["type"] == "skip":  # a slow test client may lose rest frames
                frames += 1
            else:
                texts.append((frames, text))
        assert [t for _, t in texts] == [{"type": "state", "state": "speaking"},
                                         {"type": "utterance_done", "frames": 12}, {"type": "state", "state": "rest"}]
        assert texts[1][0] - texts[0][0] == 12
        ws.send_text('{"type": "close"}')
        while (msg := ws.receive())["type"] == "websocket.send":
            assert msg.get("bytes") is not None or json.loads(msg["text"])["type"] == "skip"
        assert msg == {"type": "websocket.close", "code": 1000, "reason": ""}


@pytest.mark.parametrize("query, message, match", [
    ("?live=2", None, "live must be 0 or 1, got '2'"),
    ("?bargein=yes", None, "bargein must be 0 or 1, got 'yes'"),
    ("", '{"type": "interrupt"}', "the text messages here are end"),
    ("?live=1", '{"type": "end"}', "no utterance to end: send audio first"),
    ("?live=1", '{"type": "close", "x": [}', "text messages must be JSON"),
])
def test_live_protocol_misuse(client, query, message, match):
    with client.websocket_connect(f"/ws/photo{query}") as ws:
        if message is not None:
            ws.send_text(message)
        while (msg := ws.receive()).get("bytes") is not None:
            pass  # rest frames of a live session
        reply = json.loads(msg["text"])
        assert reply["type"] == "error" and match in reply["message"], reply
        assert ws.receive() == {"type": "websocket.close", "code": 1008, "reason": reply["message"]}
