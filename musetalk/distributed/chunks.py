"""One long dub cut into chunks at frame boundaries and joined frame-exactly.

Chunk k renders output frames ``[k * size, min((k + 1) * size, total))`` of the whole dub (same audio
prompts) with face analysis started ``overlap`` frames earlier, so tracking and the One-Euro smoothing
warm up; the warm-up frames are analysed but not rendered. The chunks are lossless, video-only mp4s;
:func:`join_chunks` encodes their frames once, in order, with the driving audio: the same frame count,
timing and audio as ``dub`` in one process.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import MuseTalkError
from ..pipeline.dub import DubOptions, FrameSpan, load_speech
from ..pipeline.source import describe_source
from ..video import VideoWriter, atomic_output, read_frames

DEFAULT_OVERLAP = 50  # 2 s at 25 fps: the One-Euro filter at rest keeps 0.3 % of a start offset


def plan_chunks(total: int, size: int, overlap: int = DEFAULT_OVERLAP) -> list[FrameSpan]:
    """Spans covering output frames ``0..total-1`` in chunks of ``size`` frames (the last may be shorter)."""
    if size < 1:
        raise MuseTalkError(f"chunks need at least 1 frame, got {size}")
    return [FrameSpan(first, min(first + size, total), min(first, overlap)) for first in range(0, total, size)]


def join_chunks(parts: list[Path], source: str | os.PathLike, audio: str | os.PathLike, output: str | os.PathLike,
                expected_frames: int, options: DubOptions) -> int:
    """Encode the frames of ``parts`` in order, with ``audio`` (cut as ``options`` says), into ``output``
    (written atomically, at ``options.crf``); returns the frame count, checked against ``expected_frames``."""
    speech = load_speech(audio, options.start, options.end)
    info = describe_source(source, options.fps)
    with atomic_output(output) as tmp:
        with VideoWriter(tmp, info.width, info.height, info.fps, crf=options.crf, audio=speech.native,
                         audio_rate=speech.native_rate) as writer:
            for part in parts:
                for frame in read_frames(part, strict=True):
                    writer.write(frame)
        if writer.frames_written != expected_frames:
            raise MuseTalkError(f"the chunks of {output} hold {writer.frames_written} frames, expected "
                                f"{expected_frames}: dub it again")
    return writer.frames_written
