"""``musetalk serve --ray --replicas 2`` on the local Ray instance: two concurrent WebSocket sessions are
served by two different replicas, each to its last frame."""
from __future__ import annotations

import functools
import json
import socket

import numpy as np
import pytest
from websockets.sync.client import connect as ws_connect

from musetalk.audio.features import frame_count

pytestmark = pytest.mark.slow

SECONDS = 0.4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def avatars(tmp_path_factory, tiny_musetalk, media):
    """An avatars folder holding "photo" (musk.png), prepared once here and read by every replica."""
    from musetalk.realtime.avatar import AvatarStore

    store = AvatarStore(tmp_path_factory.mktemp("avatars"), tiny_musetalk)
    store.prepare(media / "musk.png", "photo")
    return store.root


@pytest.fixture(scope="module")
def served(ray_local, tiny_models, avatars):
    """Two replicas of the server on Ray Serve; yields the port."""
    from ray import serve

    from musetalk.cli.main import build_parser
    from musetalk.cli.serve import build_app
    from musetalk.distributed.serve import APP_NAME, ReplicaOptions, deploy

    port = free_port()
    args = build_parser().parse_args(["serve", "--models", str(tiny_models), "--avatars", str(avatars),
                                      "--device", "cpu", "--batch-size", "4"])
    deploy(functools.partial(build_app, args), ReplicaOptions(replicas=2, cpus=0.5), port=port)
    yield port
    serve.delete(APP_NAME)


def test_two_sessions_at_once_go_to_two_replicas(served, speech_pcm16):
    url = f"ws://127.0.0.1:{served}/ws/photo"
    with ws_connect(url) as first, ws_connect(url) as second:
        replicas = {ws.response.headers["x-musetalk-replica"] for ws in (first, second)}
        assert len(replicas) == 2
        for ws in (first, second):
            ws.send(speech_pcm16)
            ws.send(json.dumps({"type": "end"}))
        expected = frame_count(len(speech_pcm16) // 2, 25.0)
        for ws in (first, second):
            jpegs = 0
            while isinstance(message := ws.recv(timeout=120), bytes):
                assert message[:2] == b"\xff\xd8"
                jpegs += 1
            assert json.loads(message) == {"type": "done", "frames": expected}
            assert jpegs == expected == 10


@pytest.fixture(scope="module")
def speech_pcm16(media) -> bytes:
    """0.4 s of sun.wav as PCM s16le 16 kHz mono."""
    from musetalk.audio import load_audio

    samples = load_audio(media / "sun.wav")[: int(16000 * SECONDS)]
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
