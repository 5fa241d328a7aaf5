"""A prepared avatar speaking given speech, rendered to an mp4 through the real-time engine's public API
(one session: all the audio fed, then ended; the frames written in order with the speech muxed)."""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import numpy as np

from ..audio import SAMPLE_RATE
from ..video import VideoWriter, atomic_output

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RenderResult:
    """What :func:`render_speech` wrote: ``frames`` = floor(speech seconds x fps)."""

    output: str
    frames: int
    fps: float
    audio_seconds: float
    seconds: float


def render_speech(engine, avatar, samples: np.ndarray, output: str | os.PathLike, crf: int = 18) -> RenderResult:
    """Write ``output`` (mp4, H.264 + AAC, written beside and renamed when complete): ``avatar`` (a loaded
    :class:`~musetalk.realtime.avatar.Avatar`) speaking ``samples`` (float32 (N,) mono 16 kHz in [-1, 1])
    through ``engine`` (:class:`~musetalk.realtime.engine.Engine`)."""
    started = time.perf_counter()
    info = avatar.info()
    session = engine.open(avatar)
    try:
        session.feed(samples)
        session.end()
        with atomic_output(output) as tmp, VideoWriter(tmp, info["width"], info["height"], avatar.fps,
                                                       crf=crf, audio=samples, audio_rate=SAMPLE_RATE) as writer:
            for frame in session.frames():
                writer.write(frame.image)
            frames = writer.frames_written
    finally:
        session.close()
    result = RenderResult(str(output), frames, avatar.fps, len(samples) / SAMPLE_RATE, time.perf_counter() - started)
    log.info("wrote %s: %d frames of %s in %.1f s", output, frames, avatar.name, result.seconds)
    return result
