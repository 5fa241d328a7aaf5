"""MuseTalkVideoService in real Pipecat pipelines (tiny random models, CPU)."""
from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest
import soundfile
import soxr

from .conftest import Seen, run_pipeline, tts_frames, until

FPS = 25
TTS_RATE = 22050  # Piper's rate: resampled to 16 kHz by the service


@pytest.fixture(scope="module")
def tts_speech(media) -> np.ndarray:
    """3.0 s of sun.wav as int16 mono at 22.05 kHz (what a TTS service would send)."""
    samples, rate = soundfile.read(media / "sun.wav", dtype="float32")
    samples = soxr.resample(samples[rate * 2: rate * 5], rate, TTS_RATE, quality="HQ")
    return np.clip(np.round(samples * 32768), -32768, 32767).astype(np.int16)


def test_smoke(backend, face_options, tts_speech):
    from pipecat.frames.frames import EndFrame, TTSStartedFrame, TTSStoppedFrame
    from musetalk.integrations.pipecat import MuseTalkVideoService

    service = MuseTalkVideoService(avatar="photo", **face_options)
    seen = Seen()

    async def script(tasks):
        (task,) = tasks
        await until(lambda: len(seen.images) >= 50)
        await task.queue_frames([TTSStartedFrame(), *tts_frames(tts_speech, TTS_RATE), TTSStoppedFrame()])
        await until(lambda: len(seen.images) >= 250)
        await task.queue_frame(EndFrame())

    asyncio.run(run_pipeline([service], script, [seen]))
    print(len(seen.images), seen.errors, service.latencies)
