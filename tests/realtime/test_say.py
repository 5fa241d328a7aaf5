"""``say`` messages: speech synthesised into the session as one utterance, its audio sent back to play."""
from __future__ import annotations

import base64
import json
import threading

import numpy as np
import pytest
from fastapi.testclient import TestClient

from musetalk.realtime.engine.engine import Engine
from musetalk.realtime.server import create_app
from musetalk.speech import MAX_TEXT_CHARS, SpeechError, check_text

from .conftest import fake_models


class FakeSynthesizer:
    """Two "sentences" of real speech (0.5 s and 0.3 s) for any text; ``fail``: raise instead of the second;
    ``gate``: the second waits until it is set (the say is still being spoken meanwhile)."""

    def __init__(self, speech: np.ndarray, fail: bool = False, gate: threading.Event | None = None) -> None:
        self.parts = [speech[16000:24000], speech[32000:36800]]
        self.fail = fail
        self.gate = gate
        self.texts: list[str] = []

    def sentences(self, text: str):
        self.texts.append(check_text(text))
        yield self.parts[0]
        if self.gate is not None:
            self.gate.wait(timeout=30)
        if self.fail:
            raise SpeechError("the voice broke")
        yield self.parts[1]


@pytest.fixture()
def synth(speech):
    return FakeSynthesizer(speech)


@pytest.fixture(scope="module")
def engine(tiny_musetalk):
    """An engine on fake models (this module tests the protocol, not the pictures)."""
    with Engine(tiny_musetalk, batch_size=8, capacity=4) as engine:
        yield fake_models(engine)


@pytest.fixture()
def client(store, engine, synth):
    with TestClient(create_app(store, engine, synthesizer=synth)) as client:
        yield client


def messages_until(ws, last_type: str):
    """(binary frame count, text messages) up to and including the first of type ``last_type``."""
    frames, texts = 0, []
    while True:
        msg = ws.receive()
        if msg.get("bytes") is not None:
            frames += 1
            continue
        assert msg.get("text") is not None, msg
        texts.append((frames, json.loads(msg["text"])))
        if texts[-1][1]["type"] == last_type:
            return frames, texts


def test_say_in_a_plain_session(client, synth):
    with client.websocket_connect("/ws/photo") as ws:
        ws.send_text(json.dumps({"type": "say", "text": "  Hello there. How are you?  "}))
        frames, texts = messages_until(ws, "done")
    audio = [t for _, t in texts if t["type"] == "audio"]
    assert [(a["frame"], a["sample_rate"]) for a in audio] == [(0, 16000), (12, 16000)]  # 8000 samples: 12.5 frames
    for a, part in zip(audio, synth.parts):
        pcm = np.frombuffer(base64.b64decode(a["pcm16"]), "<i2")
        assert len(pcm) == len(part) and np.abs(pcm / 32767 - part).max() < 1e-4
    assert texts[-1] == (20, {"type": "done", "frames": 20, "skipped": 0})  # floor(0.8 s x 25)
    assert frames == 20 and synth.texts == ["Hello there. How are you?"]


def test_say_in_a_live_session(client):
    with client.websocket_connect("/ws/photo?live=1&lookahead=0.1") as ws:
        ws.receive_bytes()  # at rest
        ws.send_text(json.dumps({"type": "say", "text": "Hello."}))
        _, texts = messages_until(ws, "utterance_done")
        assert [t["type"] for _, t in texts if t["type"] != "skip"] == ["audio", "audio", "state", "utterance_done"]
        speaking_at = next(f for f, t in texts if t["type"] == "state")
        audio = [t for _, t in texts if t["type"] == "audio"]
        assert audio[1]["frame"] - audio[0]["frame"] == 12 and texts[-1][1]["frames"] == 20
        assert texts[-1][0] - speaking_at == 20 - sum(t["type"] == "skip" for _, t in texts)
        ws.send_text('{"type": "close"}')


@pytest.mark.parametrize("message, match", [
    ({"type": "say", "text": "x" * (MAX_TEXT_CHARS + 1)},
     f"text of {MAX_TEXT_CHARS + 1} characters is too long: at most {MAX_TEXT_CHARS} at once"),
    ({"type": "say", "text": "   "}, "no text to speak"),
    ({"type": "say", "text": 5}, 'a say message needs "text": a string'),
])
def test_bad_say_is_refused_with_1008(client, message, match):
    with client.websocket_connect("/ws/photo") as ws:
        ws.send_text(json.dumps(message))
        reply = json.loads(ws.receive_text())
        assert reply["type"] == "error" and match in reply["message"]
        assert ws.receive() == {"type": "websocket.close", "code": 1008, "reason": reply["message"]}


def test_audio_during_say_is_refused(store, engine, speech):
    gate = threading.Event()
    try:
        with TestClient(create_app(store, engine, synthesizer=FakeSynthesizer(speech, gate=gate))) as client:
            with client.websocket_connect("/ws/photo") as ws:
                ws.send_text(json.dumps({"type": "say", "text": "Hello."}))
                ws.send_bytes(b"\0\0" * 100)
                while (msg := ws.receive()).get("text") is None or json.loads(msg["text"])["type"] == "audio":
                    pass
                reply = json.loads(msg["text"])
                gate.set()
                assert reply == {"type": "error", "message": "audio received while a say message is spoken: "
                                                             "wait for it, or interrupt it"}
                assert ws.receive()["code"] == 1008
    finally:
        gate.set()


def test_synthesis_fault_fails_the_session_with_1011(store, engine, speech):
    with TestClient(create_app(store, engine, synthesizer=FakeSynthesizer(speech, fail=True))) as client:
        with client.websocket_connect("/ws/photo") as ws:
            ws.send_text(json.dumps({"type": "say", "text": "Hello."}))
            while (msg := ws.receive()).get("text") is None or json.loads(msg["text"])["type"] == "audio":
                pass
            reply = json.loads(msg["text"])
            assert reply == {"type": "error", "message": "speech synthesis failed: the voice broke"}
            assert ws.receive() == {"type": "websocket.close", "code": 1011, "reason": reply["message"]}


class SilentSynthesizer(FakeSynthesizer):
    """Speaks no sentence at all: the say then has no utterance to end."""

    def sentences(self, text: str):
        self.texts.append(check_text(text))
        yield from ()


def test_a_session_error_inside_say_fails_the_session_with_its_reason(store, engine, speech):
    """The say task's own SessionError reaches the client (it used to die in a task nobody awaited, the
    session streaming rest frames as if nothing happened)."""
    with TestClient(create_app(store, engine, synthesizer=SilentSynthesizer(speech))) as client:
        with client.websocket_connect("/ws/photo?live=1&lookahead=0.1") as ws:
            ws.receive_bytes()  # at rest
            ws.send_text(json.dumps({"type": "say", "text": "Hello."}))
            for _ in range(100):  # 4 s of rest frames at most
                if (msg := ws.receive()).get("text") is not None and json.loads(msg["text"])["type"] == "error":
                    break
            else:
                pytest.fail("no error within 100 messages")
            reply = json.loads(msg["text"])
            assert reply == {"type": "error", "message": "say failed: no utterance to end: send audio first"}
            assert ws.receive() == {"type": "websocket.close", "code": 1011, "reason": reply["message"]}
