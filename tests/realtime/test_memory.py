"""Bounded memory: a slow client loses frames (counted as skips), a stuck one is failed, and connecting
and disconnecting leaves resident memory where it was."""
from __future__ import annotations

import gc
import json
from pathlib import Path

from fastapi.testclient import TestClient

from musetalk.realtime.engine.engine import Engine
from musetalk.realtime.engine.outbox import Frame, Skip
from musetalk.realtime.server import create_app
from musetalk.realtime.engine.session import SessionError

from .conftest import fake_models, wait_until


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def unread_session(engine, store, speech):
    """A session given 2 s of speech (50 frames) whose client reads nothing."""
    fake_models(engine)
    session = engine.open(store.load("photo"))
    session.feed(speech[:32000])
    session.end()
    return session


def test_slow_client_loses_frames_as_counted_skips(tiny_musetalk, store, speech):
    with Engine(tiny_musetalk, batch_size=8, outbox_frames=10) as engine:
        session = unread_session(engine, store, speech)
        wait_until(lambda: session.finished)  # all 50 frames done while the client read nothing
        items = list(session.frames(timeout=10))
    assert [type(i) for i in items] == [Frame] * 10 + [Skip] * 40
    assert [i.index for i in items] == list(range(50))
    assert [i.skipped for i in items[10:]] == list(range(1, 41)) and session.skipped == 40


def test_stuck_client_is_failed(tiny_musetalk, store, speech):
    with Engine(tiny_musetalk, batch_size=8, outbox_frames=5) as engine:
        session = unread_session(engine, store, speech)
        wait_until(lambda: session.error is not None)
        wait_until(lambda: engine.sessions == 0)
    try:
        list(session.frames(timeout=10))
    except SessionError as exc:
        assert str(exc) == "the client has not read its last 40 messages"
    else:
        raise AssertionError("the stuck session was not failed")


def test_connect_disconnect_cycles_keep_memory_flat(tiny_musetalk, store, speech):
    pcm = (speech[:8000] * 32767).astype("<i2").tobytes()
    with Engine(tiny_musetalk, batch_size=8) as engine, TestClient(create_app(store, engine)) as client:
        fake_models(engine)

        def cycle(k: int) -> None:
            with client.websocket_connect("/ws/photo") as ws:
                ws.send_bytes(pcm)
                if k % 2:  # half finish their utterance, half vanish mid-stream
                    ws.send_text('{"type": "end"}')
                    while (msg := ws.receive()).get("bytes") is not None:
                        pass
                    assert json.loads(msg["text"]) == {"type": "done", "frames": 12, "skipped": 0}

        for k in range(20):  # warm-up: caches, allocator pools, thread stacks
            cycle(k)
        wait_until(lambda: engine.sessions == 0)
        gc.collect()
        start = rss_bytes()
        for k in range(200):
            cycle(k)
        wait_until(lambda: engine.sessions == 0)
        gc.collect()
        grown = rss_bytes() - start
    assert grown < 50e6, f"resident memory grew by {grown / 1e6:.0f} MB over 200 sessions"
