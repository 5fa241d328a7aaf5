"""``musetalk serve --ray --replicas 2`` on the local Ray instance (one session per replica): two concurrent
WebSocket sessions are served by two different replicas, each to its last frame; a third, with both
replicas full, is refused with 1013."""
from __future__ import annotations

import functools
import json

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from musetalk.audio.features import frame_count
from tests.serving import free_port

pytestmark = pytest.mark.slow

SECONDS = 0.4


@pytest.fixture(scope="module")
def avatars(tmp_path_factory, tiny_models, tiny_musetalk, media):
    """An avatars folder holding "photo" (musk.png), prepared once here (with the face parser of the models
    folder, as `serve` opens it) and read by every replica."""
    from musetalk.face import load_face_parser
    from musetalk.realtime.avatars.store import AvatarStore

    store = AvatarStore(tmp_path_factory.mktemp("avatars"), tiny_musetalk, parser=load_face_parser(tiny_models))
    store.prepare(media / "musk.png", "photo")
    return store.root


@pytest.fixture(scope="module")
def served(ray_local, tiny_models, avatars):
    """Two replicas of the server on Ray Serve; yields (port, a function deploying N replicas)."""
    from ray import serve

    from musetalk.cli.main import build_parser
    from musetalk.cli.serve import build_app
    from musetalk.distributed.serve import APP_NAME, ReplicaOptions, deploy

    port = free_port()
    args = build_parser().parse_args(["serve", "--models", str(tiny_models), "--avatars", str(avatars),
                                      "--device", "cpu", "--batch-size", "4", "--max-sessions", "1",
                                      "--latency-budget-ms", "60000"])

    def scale(replicas: int) -> None:
        deploy(functools.partial(build_app, args), ReplicaOptions(replicas=replicas, cpus=0.5, sessions=1),
               port=port)

    scale(2)
    yield port, scale
    serve.delete(APP_NAME)


def frames_until_done(ws) -> tuple[int, dict]:
    """Frames received (JPEGs plus skip messages: the client's frame index) and the final message."""
    frames = 0
    while True:
        message = ws.recv(timeout=120)
        if isinstance(message, bytes):
            assert message[:2] == b"\xff\xd8"
            frames += 1
        elif (event := json.loads(message))["type"] == "skip":
            frames += 1
        else:
            return frames, event


def test_two_sessions_at_once_go_to_two_replicas_a_third_is_refused(served, speech_pcm16):
    url = f"ws://127.0.0.1:{served[0]}/ws/photo"
    with ws_connect(url) as first, ws_connect(url) as second:
        replicas = {ws.response.headers["x-musetalk-replica"] for ws in (first, second)}
        assert len(replicas) == 2
        with ws_connect(url) as third:
            assert json.loads(third.recv(timeout=60)) == {
                "type": "error", "message": "server full: 1 of 1 sessions in use; try again later"}
            with pytest.raises(ConnectionClosed) as closed:
                third.recv(timeout=60)
            assert closed.value.rcvd.code == 1013
        for ws in (first, second):
            ws.send(speech_pcm16)
            ws.send(json.dumps({"type": "end"}))
        expected = frame_count(len(speech_pcm16) // 2, 25.0)
        for ws in (first, second):
            frames, done = frames_until_done(ws)
            assert frames == expected == 10
            assert (done["type"], done["frames"]) == ("done", expected)


def test_replicas_added_while_a_session_runs_leave_it_running(served, speech_pcm16):
    from ray import serve

    from musetalk.distributed.serve import APP_NAME

    port, scale = served
    with ws_connect(f"ws://127.0.0.1:{port}/ws/photo") as session:
        session.send(speech_pcm16)
        session.send(json.dumps({"type": "end"}))
        scale(3)
        frames, done = frames_until_done(session)
        assert frames == done["frames"] == 10
    replicas = serve.status().applications[APP_NAME].deployments["AvatarReplica"].replica_states
    assert replicas.get("RUNNING") == 3


@pytest.fixture(scope="module")
def speech_pcm16(media) -> bytes:
    """0.4 s of sun.wav as PCM s16le 16 kHz mono."""
    from musetalk.audio import load_audio

    samples = load_audio(media / "sun.wav")[: int(16000 * SECONDS)]
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
