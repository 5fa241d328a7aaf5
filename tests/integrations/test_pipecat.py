"""MuseTalkVideoService in real Pipecat pipelines (tiny random models on CPU): frames at the avatar's fps
through rest, speech and rest; floor(S x fps) speech frames per utterance of S seconds; the audio out is the
audio in, resampled to 16 kHz and delayed exactly as the frames; interruptions; bad input reported in one
line; three bots on one engine; the same counts against a `musetalk serve` on this machine.

The tiny models draw slower than real time on 2 busy cores: the engine's latency budget is 1.8 s
(conftest.BUDGET_MS) and speech frames that still miss it are skipped (the picture repeats, the audio
plays). The counts asserted include them: they are index arithmetic, exact whatever the machine's load.
The pictures themselves are checked exactly on a second engine whose models draw white faces at no cost."""
from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
import soundfile
import soxr

from .conftest import Seen, run_pipeline, tts_frames, until

FPS = 25
SLOT = 16000 // FPS  # samples of one frame's audio
TTS_RATE = 22050  # Piper's rate: the service resamples it


def tts_speech(media, seconds: float, rate: int, offset_s: float = 2.0) -> np.ndarray:
    """``seconds`` of sun.wav as int16 mono at ``rate`` Hz (what a TTS service sends)."""
    samples, native = soundfile.read(media / "sun.wav", dtype="float32")
    samples = samples[int(native * offset_s): int(native * (offset_s + seconds))]
    samples = soxr.resample(samples, native, rate, quality="HQ") if rate != native else samples
    return np.clip(np.round(samples * 32768), -32768, 32767).astype(np.int16)


def heard(tts: np.ndarray, rate: int) -> np.ndarray:
    """What the service should play: ``tts`` resampled to 16 kHz (soxr HQ), as int16."""
    samples = tts.astype(np.float32) / 32768
    if rate != 16000:
        samples = soxr.resample(samples, rate, 16000, quality="HQ")
    return np.clip(np.round(samples * 32768), -32768, 32767).astype(np.int16)


def marks(seen: Seen) -> list[dict]:
    return [frame.metadata["musetalk"] for _, frame in seen.images]


def speech_frames(seen: Seen) -> list[int]:
    return [m["index"] for m in marks(seen) if m["speech"]]


def audio_out(seen: Seen) -> np.ndarray:
    return np.concatenate([np.frombuffer(f.audio, "<i2") for _, f in seen.audio])


def arrival(seen: Seen, kind) -> float:
    return next(t for t, f in seen.others if isinstance(f, kind))


def service(face_options, **options):
    from musetalk.integrations.pipecat import MuseTalkVideoService

    return MuseTalkVideoService(**{**face_options, **options})


def utterance(media, seconds: float, rate: int, seed: int = 0, offset_s: float = 2.0):
    """(the TTS frames of one utterance with its start and stop, the int16 16 kHz audio expected out)."""
    from pipecat.frames.frames import TTSStartedFrame, TTSStoppedFrame

    tts = tts_speech(media, seconds, rate, offset_s)
    return [TTSStartedFrame(), *tts_frames(tts, rate, seed), TTSStoppedFrame()], heard(tts, rate)


def assert_spoken_once(seen: Seen, expected: np.ndarray) -> None:
    """One utterance: floor(S x fps) consecutive speech frames; the audio out is silence but for the
    expected audio, starting exactly at the first speech frame's slot; each frame's audio (one slot) comes
    right after it: sound is delayed exactly as the pictures."""
    indices = [m["index"] for m in marks(seen)]
    assert indices == list(range(len(indices)))
    assert [f.metadata["musetalk"]["index"] for _, f in seen.audio] == indices
    spoken = speech_frames(seen)
    assert len(spoken) == math.floor(len(expected) * FPS / 16000)
    assert spoken == list(range(spoken[0], spoken[0] + len(spoken)))
    out = audio_out(seen)
    assert len(out) == SLOT * len(indices)
    start = spoken[0] * SLOT
    assert not out[:start].any() and not out[start + len(expected):].any()
    assert np.abs(out[start: start + len(expected)].astype(int) - expected).max() <= 1
    assert seen.order == ["image", "audio"] * len(indices)


def test_rest_speech_rest_at_the_avatars_fps_with_its_audio(white_backend, white_options, media):
    """(On the engine that draws white faces at no cost: every picture is checked exactly.)"""
    from pipecat.frames.frames import EndFrame, MetricsFrame, TextFrame
    from pipecat.metrics.metrics import TTFBMetricsData

    from musetalk.realtime.engine.render import blend_with_rest, composite
    from musetalk.realtime.engine.session import BLEND_FRAMES

    from .conftest import WHITE

    face = service(white_options, avatar="video")
    frames, expected = utterance(media, 3.02, TTS_RATE)  # (75 frames and 320 samples of a 76th slot)
    before, after = TextFrame("before"), TextFrame("after")
    seen = Seen()

    async def script(tasks):
        (task,) = tasks
        await until(lambda: len(seen.images) >= 2 * FPS)
        await task.queue_frames([before, *frames, after])
        await until(lambda: (s := speech_frames(seen)) and len(seen.images) >= max(s[-1] + FPS, 11 * FPS))
        await task.queue_frame(EndFrame())

    asyncio.run(run_pipeline([face], script, [seen], metrics=True))
    assert seen.errors == []
    assert_spoken_once(seen, expected)
    times = [t for t, _ in seen.images]
    rate = 1 / np.polyfit(np.arange(len(times)), times, 1)[0]  # frames per second of arrival, least squares
    assert times[-1] - times[0] >= 10 and abs(rate - FPS) <= 0.1 * FPS, f"{rate:.2f} fps"
    avatar = white_backend.store.load("video")
    spoken = speech_frames(seen)
    assert not any(m["repeated"] for m in marks(seen))
    for (_, frame), mark in zip(seen.images, marks(seen)):
        i, source = mark["index"], avatar.source_index(mark["index"])
        picture = np.frombuffer(frame.image, np.uint8).reshape(avatar.frames[source].shape)
        rest = np.asarray(avatar.frames[source])
        if not mark["speech"]:  # rest: the source frames, unaltered, in ping-pong order
            assert np.array_equal(picture, rest)
            continue
        talk, k = composite(avatar, source, WHITE), i - spoken[0]
        share = min(1.0, (k + 1) / (BLEND_FRAMES + 1), (len(spoken) - k) / (BLEND_FRAMES + 1))
        assert np.array_equal(picture, talk if share == 1 else blend_with_rest(avatar, source, talk, share))
    print(f"{rate:.2f} fps; first TTS audio -> first spoken frame {face.latencies[0] * 1000:.0f} ms")
    assert [f for _, f in seen.others if isinstance(f, TextFrame)] == [before, after]
    ttfb = [d for _, f in seen.others if isinstance(f, MetricsFrame) for d in f.data
            if isinstance(d, TTFBMetricsData) and d.processor == face.name and d.value > 0]
    assert len(face.latencies) == 1 and len(ttfb) == 1 and abs(ttfb[0].value - face.latencies[0]) < 0.05


def test_interruption_stops_picture_and_sound_within_two_frames_and_bad_input_is_one_line(
        backend, face_options, media):
    from pipecat.frames.frames import (EndFrame, InterruptionFrame, TTSAudioRawFrame, TTSStartedFrame,
                                       TTSStoppedFrame)

    face = service(face_options, avatar="photo")
    long_frames, _ = utterance(media, 6.0, 16000)
    short_frames, short = utterance(media, 1.0, 16000, offset_s=10.0)
    stray = TTSAudioRawFrame(audio=b"\x01\x00" * 800, sample_rate=16000, num_channels=1)
    odd_rate = TTSAudioRawFrame(audio=b"\x01\x00" * 800, sample_rate=4000, num_channels=1)
    seen = Seen()
    marks_at_cut: list[int] = []

    async def script(tasks):
        (task,) = tasks
        await until(lambda: len(seen.images) >= 10)
        await task.queue_frames([stray, stray])  # audio without a TTS start: one error
        await task.queue_frames(long_frames[:-1])  # 6 s of speech, no stop yet
        await until(lambda: len(speech_frames(seen)) >= 5)
        await task.queue_frame(InterruptionFrame())
        await until(lambda: any(isinstance(f, InterruptionFrame) for _, f in seen.others))
        marks_at_cut.append(len(seen.images))
        await task.queue_frames([long_frames[-1], TTSStartedFrame(), odd_rate, TTSStoppedFrame()])
        await until(lambda: len(seen.images) >= marks_at_cut[0] + FPS)
        await task.queue_frames(short_frames)
        await until(lambda: (s := speech_frames(seen)) and s[-1] > marks_at_cut[0] + FPS
                    and len(seen.images) >= s[-1] + 10)
        await task.queue_frame(EndFrame())

    asyncio.run(run_pipeline([face], script, [seen]))
    assert seen.errors == [
        "TTS audio without a TTSStartedFrame before it is not spoken: the TTS service must send TTSStartedFrame first",
        "TTS audio at 4000 Hz with 1 channels cannot be taken: give 8000..192000 Hz, 1 or more channels"]
    cut_at = arrival(seen, InterruptionFrame)
    after = [(m, f) for (t, _), m, (_, f) in zip(seen.images, marks(seen), seen.audio) if t > cut_at]
    first_rest = next(k for k, (m, _) in enumerate(after) if not m["speech"])
    assert first_rest <= 2
    assert not any(np.frombuffer(f.audio, "<i2").any() for _, f in after[first_rest: FPS])
    second = [m["index"] for m, _ in after if m["speech"]][first_rest:]
    assert len(second) == math.floor(len(short) * FPS / 16000)
    indices = [m["index"] for m in marks(seen)]
    assert indices == list(range(len(indices)))


def test_three_bots_share_one_engine_and_an_unknown_avatar_is_one_error(backend, face_options, media):
    from pipecat.frames.frames import EndFrame

    faces = [service(face_options, avatar=name) for name in ("photo", "video", "photo", "nobody")]
    spoken = [utterance(media, 1.0, 16000, seed=k, offset_s=3.0 + k) for k in range(3)]
    seen = [Seen() for _ in faces]
    open_sessions = []

    async def script(tasks):
        await until(lambda: all(len(s.images) >= 10 for s in seen[:3]))
        open_sessions.append(backend.engine.sessions)
        for task, (frames, _) in zip(tasks, spoken):
            await task.queue_frames(frames)
        await until(lambda: all((sp := speech_frames(s)) and len(s.images) >= sp[-1] + 10 for s in seen[:3]))
        for task in tasks:
            await task.queue_frame(EndFrame())

    asyncio.run(run_pipeline(faces, script, seen))
    assert all(f.engine is None for f in faces)  # released at the end
    assert open_sessions == [3]
    for s, (_, expected) in zip(seen[:3], spoken):
        assert s.errors == []
        assert_spoken_once(s, expected)
    assert seen[3].images == [] and seen[3].errors == [
        f"cannot open the avatar 'nobody': no avatar named 'nobody' in {backend.store.root}/: prepare it with "
        f"`musetalk avatar prepare`"]
    assert backend.engine.sessions == 0


@contextlib.contextmanager
def musetalk_serve(face_options, token: str):
    """`musetalk serve` on the tiny models and the test avatars (a subprocess on a free port); yields its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "musetalk.cli.main", "serve", "--models", face_options["models"],
               "--avatars", face_options["avatars"], "--port", str(port), "--device", "cpu", "--decoder", "tiny",
               "--batch-size", str(face_options["batch_size"]), "--max-sessions", "2",
               "--latency-budget-ms", str(face_options["latency_budget_ms"]), "--token", token]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, f"musetalk serve exited: {process.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "musetalk serve did not start in 180 s"
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            time.sleep(0.2)
        yield url, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.mark.slow
def test_remote_mode_gives_the_same_counts_and_reports_refusals_and_a_lost_server(backend, face_options, media):
    from pipecat.frames.frames import EndFrame

    token = "pipecat-test-token"
    frames, expected = utterance(media, 2.03, TTS_RATE)  # (50 frames and 480 samples of a 51st slot)
    long_frames, _ = utterance(media, 4.0, TTS_RATE, offset_s=6.0)
    with musetalk_serve(face_options, token) as (url, server):
        faces = [service(face_options, server=url, avatar="photo", token=token),
                 service(face_options, server=url, avatar="photo", token="wrong"),
                 service(face_options, server=url, avatar="nobody", token=token)]
        seen = [Seen() for _ in faces]

        async def script(tasks):
            await until(lambda: len(seen[0].images) >= FPS)
            await tasks[0].queue_frames(frames)
            await until(lambda: (s := speech_frames(seen[0])) and len(seen[0].images) >= s[-1] + 10)
            for task in tasks:
                await task.queue_frame(EndFrame())

        asyncio.run(run_pipeline(faces, script, seen))
        assert seen[0].errors == []
        assert_spoken_once(seen[0], expected)
        assert seen[1].images == [] and len(seen[1].errors) == 1  # (Pipecat masks what follows "token")
        assert seen[1].errors[0].startswith(f"cannot open the avatar 'photo': the musetalk server refused "
                                            f"{url}/avatars (401): missing or wrong token")
        assert seen[2].images == [] and seen[2].errors == [
            f"cannot open the avatar 'nobody': the musetalk server {url} has no avatar 'nobody' (it has: photo, "
            f"video); prepare it there with `musetalk avatar prepare` or upload it"]

        face, lost = service(face_options, server=url, avatar="photo", token=token), Seen()

        async def lose_the_server(tasks):
            (task,) = tasks
            await until(lambda: len(lost.images) >= 10)
            await task.queue_frames(long_frames[:-1])
            await until(lambda: len(speech_frames(lost)) >= 3)
            server.kill()
            await until(lambda: lost.errors)
            await task.queue_frames([long_frames[-1], *frames])  # the next utterance tries a new session
            await until(lambda: len(lost.errors) >= 2)
            await task.queue_frame(EndFrame())

        asyncio.run(run_pipeline([face], lose_the_server, [lost]))
    assert len(lost.errors) == 2
    assert lost.errors[0].startswith(f"the avatar session ended: lost the musetalk server {url}: ")
    assert lost.errors[0].endswith("; a new one opens at the next utterance")
    assert lost.errors[1].startswith(
        f"cannot open the avatar 'photo': cannot reach the musetalk server at {url}/avatars")


def test_remote_speech_is_matched_to_the_servers_frames_and_bounded_ahead():
    """The client side of the remote mode without a server: the speech it sent goes to the frames of the
    server's utterances in order (an utterance's tail plays in the slot after its last frame), and what
    it holds ahead of the frames received is what it counts against its cap."""
    from musetalk.realtime.remote import _SentSpeech

    speech = _SentSpeech(fps=FPS)
    first, second = np.arange(1, 2001, dtype=np.float32), np.full(700, -1.0, np.float32)
    speech.feed(first[:1500])
    speech.feed(first[1500:])
    speech.end()
    speech.feed(second)
    assert speech.unplayed_s() == (2000 + 700) / 16000
    assert not speech.frame_audio(0).any() and not speech.speaking  # at rest: silence
    speech.started()  # the server's first utterance starts at frame 1
    slots = [speech.frame_audio(i) for i in (1, 2, 3)]
    assert speech.speaking and np.array_equal(np.concatenate(slots), first[:1920])
    speech.done()  # 3 frames out (floor(2000 x 25 / 16000)); its 80 last samples play in frame 4's slot
    assert not speech.speaking
    assert np.array_equal(speech.frame_audio(4), np.concatenate([first[1920:], np.zeros(560, np.float32)]))
    assert speech.unplayed_s() == 700 / 16000
    speech.started()
    assert np.array_equal(speech.frame_audio(5), second[:640])
    speech.drop()  # an interruption: nothing sent plays any more
    assert not speech.speaking and not speech.frame_audio(6).any() and speech.unplayed_s() == 0
