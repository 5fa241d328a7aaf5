"""Fixtures of the Pipecat tests: a shared back end on the tiny random models with two prepared avatars,
a Pipecat pipeline around a :class:`MuseTalkVideoService` with a scripted source and a collecting sink."""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import numpy as np
import pytest

pytest.importorskip("pipecat")

BUDGET_MS = 1800.0  # the tiny models run slower than real time on 2 busy cores: a frame may be 1.8 s late
# (below outbox_frames / fps = 2 s: a live session turns frames beyond its 50 waiting ones into skips)


@pytest.fixture(scope="session")
def face_options(tiny_models, tmp_path_factory) -> dict:
    """The keyword arguments of an in-process :class:`MuseTalkVideoService` on the tiny models."""
    return dict(models=str(tiny_models), avatars=str(tmp_path_factory.mktemp("pipecat-avatars")), device="cpu",
                decoder="tiny", batch_size=8, latency_budget_ms=BUDGET_MS, max_sessions=4)


@pytest.fixture(scope="session")
def backend(face_options, media):
    """The process's shared back end for ``face_options``, with avatars "photo" (musk.png) and "video" (the
    first 4 frames of sun.mp4) prepared in its store."""
    from musetalk.integrations.pipecat import MuseTalkVideoService, shared_backend
    from musetalk.realtime.avatars.store import PrepareSettings

    backend = shared_backend(MuseTalkVideoService(avatar="photo", **face_options).options)
    backend.store.prepare(media / "musk.png", "photo")
    backend.store.prepare(media / "sun.mp4", "video", PrepareSettings(max_frames=4))
    return backend


WHITE = np.full((256, 256, 3), 255, np.uint8)


@pytest.fixture(scope="session")
def white_options(face_options) -> dict:
    """Options of a second shared back end (batch size 4) whose engine draws white faces at no cost (see
    ``white_backend``), so a test can check every picture exactly on a loaded machine."""
    return {**face_options, "batch_size": 4}


@pytest.fixture(scope="session")
def white_backend(backend, white_options):
    """The shared back end of ``white_options`` (the same avatars), its models replaced by zero whisper
    states and white faces."""
    from musetalk.integrations.pipecat import MuseTalkVideoService, shared_backend

    from ..realtime.conftest import fake_models

    white = shared_backend(MuseTalkVideoService(avatar="photo", **white_options).options)
    fake_models(white.engine)
    white.engine._generate_batch = lambda pairs: [WHITE for _ in pairs]
    return white


@dataclass
class Seen:
    """What reached the sink: (perf_counter, frame) of images, audio and every other frame."""

    images: list = field(default_factory=list)
    audio: list = field(default_factory=list)
    order: list = field(default_factory=list)  # "image" / "audio", in the order they came
    others: list = field(default_factory=list)
    errors: list = field(default_factory=list)  # ErrorFrame texts that went upstream past the source side


def make_sink(seen: Seen):
    from pipecat.frames.frames import OutputAudioRawFrame, OutputImageRawFrame
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

    class Sink(FrameProcessor):
        async def process_frame(self, frame, direction):
            await super().process_frame(frame, direction)
            now = time.perf_counter()
            if isinstance(frame, OutputImageRawFrame):
                seen.images.append((now, frame))
                seen.order.append("image")
            elif isinstance(frame, OutputAudioRawFrame):
                seen.audio.append((now, frame))
                seen.order.append("audio")
            else:
                seen.others.append((now, frame))
            await self.push_frame(frame, direction)

    class ErrorTap(FrameProcessor):
        async def process_frame(self, frame, direction):
            from pipecat.frames.frames import ErrorFrame

            await super().process_frame(frame, direction)
            if isinstance(frame, ErrorFrame) and direction == FrameDirection.UPSTREAM:
                seen.errors.append(frame.error)
            await self.push_frame(frame, direction)

    return Sink(), ErrorTap()


async def run_pipeline(services, script, seen_list, timeout: float = 150.0, metrics: bool = False) -> None:
    """Run one pipeline [error tap, service, sink] per service, all on one runner in this loop, while
    ``script(tasks)`` (a coroutine) drives them; it ends them with EndFrames."""
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.worker import PipelineParams, PipelineWorker
    from pipecat.workers.runner import WorkerRunner

    tasks = []
    for service, seen in zip(services, seen_list):
        sink, tap = make_sink(seen)
        tasks.append(PipelineWorker(Pipeline([tap, service, sink]), params=PipelineParams(enable_metrics=metrics),
                                    idle_timeout_secs=None, enable_rtvi=False))
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(*tasks)
    await asyncio.wait_for(asyncio.gather(runner.run(), script(tasks)), timeout)


def tts_frames(samples_s16: np.ndarray, rate: int, seed: int = 0, largest: int = 4000) -> list:
    """``samples_s16`` (int16 mono) as TTSAudioRawFrames of 1..largest samples, cut at random places."""
    from pipecat.frames.frames import TTSAudioRawFrame

    rng = np.random.default_rng(seed)
    frames, i = [], 0
    while i < len(samples_s16):
        n = int(rng.integers(1, largest + 1))
        frames.append(TTSAudioRawFrame(audio=samples_s16[i: i + n].astype("<i2").tobytes(), sample_rate=rate,
                                       num_channels=1))
        i += n
    return frames


async def until(condition, timeout: float = 120.0) -> None:
    """Await ``condition()`` (polled on the loop's own ticks, 20 ms apart); fails after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)
