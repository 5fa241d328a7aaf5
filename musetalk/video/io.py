"""Decode and encode video in-process with PyAV (no ffmpeg binary, no temporary PNGs).

Frames are numpy uint8 (H, W, 3) RGB. Frame rates are exact ``Fraction``s (29.97 fps is 30000/1001).
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import cv2
import numpy as np

from ..errors import VideoError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
H264_ENCODERS = ("auto", "libx264", "h264_nvenc")


def is_image(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


@dataclass(frozen=True)
class VideoInfo:
    """Stream facts of a video file. ``num_frames`` is the container's count (0 when unknown)."""

    width: int
    height: int
    fps: Fraction
    num_frames: int
    has_audio: bool


def _open(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise VideoError(f"video file not found: {path}")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise VideoError(f"cannot read {path}: not a video file PyAV can open, or truncated/damaged "
                         f"({exc.__class__.__name__}); check the file or re-encode it") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path} has no video stream: give an mp4/mov/mkv video or an image")
    return container


def probe(path: str | os.PathLike) -> VideoInfo:
    path = Path(path)
    with _open(path) as container:
        stream = container.streams.video[0]
        fps = stream.average_rate or stream.guessed_rate or Fraction(25)
        return VideoInfo(stream.codec_context.width, stream.codec_context.height, Fraction(fps),
                         stream.frames or 0, bool(container.streams.audio))


def read_frames(path: str | os.PathLike, strict: bool = False) -> Iterator[np.ndarray]:
    """Yield every decodable frame as uint8 (H, W, 3) RGB. A corrupt tail ends the stream (logged);
    with ``strict`` it raises :class:`VideoError` instead."""
    path = Path(path)
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        count = 0
        try:
            for frame in container.decode(stream):
                count += 1
                yield frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as exc:
            if strict or count == 0:
                raise VideoError(f"{path} is damaged after {count} readable frames ({exc}); re-encode or trim it") from None
            import logging

            logging.getLogger(__name__).warning("%s: stopped at a damaged frame after %d frames", path, count)
    if count == 0:
        raise VideoError(f"{path} contains no readable video frames")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """A photo as uint8 (H, W, 3) RGB (alpha dropped, greyscale expanded)."""
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"image file not found: {path}")
    data = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if data is None:
        raise VideoError(f"cannot read image {path}: not a png/jpeg/bmp/webp/tiff file")
    return cv2.cvtColor(data, cv2.COLOR_BGR2RGB)


def make_writable_output(path: str | os.PathLike) -> None:
    """Ready ``path`` to be written before any work for it starts: its missing folders are made and a file
    is created beside it and removed. Raises :class:`VideoError` (what, why, how to fix) when it cannot be."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe_path = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".probe", dir=path.parent)
    except OSError as exc:
        raise VideoError(f"cannot write {path}: {exc.strerror}; choose a writable output folder") from None
    os.close(fd)
    os.unlink(probe_path)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``, on any error
    (Ctrl-C included) delete it, so no partial output is ever left."""
    path = Path(path)
    if path.parent and not path.parent.is_dir():
        raise VideoError(f"cannot write {path}: folder {path.parent} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".part{path.suffix}", dir=path.parent or ".")
    except OSError as exc:
        raise VideoError(f"cannot write {path}: {exc.strerror}; choose a writable output folder") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600 files; outputs get the usual permissions
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


@functools.lru_cache(maxsize=None)
def nvenc_available() -> bool:
    """Whether PyAV has ``h264_nvenc`` and it opens here (it needs an NVIDIA GPU and driver)."""
    if "h264_nvenc" not in av.codecs_available:
        return False
    context = av.CodecContext.create("h264_nvenc", "w")
    context.width, context.height, context.pix_fmt = 256, 256, "yuv420p"
    context.time_base = Fraction(1, 25)
    try:
        context.open()
    except av.error.FFmpegError as exc:
        log.info("h264_nvenc present but unusable here (%s): encoding with libx264", exc.strerror)
        return False
    return True


def choose_h264_encoder(name: str, width: int, height: int) -> str:
    """``auto``: ``h264_nvenc`` when it works here and the size is even, else ``libx264``."""
    if name not in H264_ENCODERS:
        raise VideoError(f"unknown video encoder {name!r}: choose one of {', '.join(H264_ENCODERS)}")
    if name != "auto":
        return name
    return "h264_nvenc" if not (width % 2 or height % 2) and nvenc_available() else "libx264"


def _encoder_options(encoder: str, crf: int, preset: str) -> dict[str, str]:
    """libx264: CRF and its preset; NVENC: the matching constant-quality rate control, fast preset."""
    if encoder == "h264_nvenc":
        return {"rc": "vbr", "cq": str(crf), "preset": "p3"}
    return {"crf": str(crf), "preset": preset}


class VideoWriter:
    """H.264 (yuv420p, CRF) plus optional AAC audio in one mp4. Frames: uint8 (H, W, 3) RGB of a fixed size.

    Sizes are kept exactly: even sizes use yuv420p (plays everywhere); yuv420p cannot hold an odd
    width/height, so those are encoded as yuv444p (H.264 High 4:4:4) instead of being cropped or padded.
    Audio (float32 (N,) or (N, C) in [-1, 1] at ``audio_rate`` Hz) starts at t = 0, is interleaved with
    the video as frames arrive (memory stays flat) and is written in full, whatever the video length.
    encoder: ``libx264``, ``h264_nvenc`` or ``auto`` (NVENC where it works, see :func:`choose_h264_encoder`).
    """

    AUDIO_BLOCK = 1024

    def __init__(self, path: str | os.PathLike, width: int, height: int, fps: Fraction | float, crf: int = 18,
                 audio: np.ndarray | None = None, audio_rate: int = 16000, preset: str = "veryfast",
                 encoder: str = "libx264") -> None:
        self.path = Path(path)
        self.size = (width, height)
        self.fps = Fraction(fps).limit_denominator(100000)
        try:
            self.container = av.open(str(self.path), mode="w", format="mp4")
        except (av.error.FFmpegError, OSError) as exc:
            raise VideoError(f"cannot write {self.path}: {exc}") from None
        self.encoder = choose_h264_encoder(encoder, width, height)
        self.stream = self.container.add_stream(self.encoder, rate=self.fps)
        self.stream.width = width
        self.stream.height = height
        self.stream.pix_fmt = "yuv444p" if width % 2 or height % 2 else "yuv420p"
        self.stream.options = _encoder_options(self.encoder, crf, preset)
        self.stream.time_base = 1 / self.fps
        self.frames_written = 0
        self._audio = None
        if audio is not None:
            samples = audio[:, None] if audio.ndim == 1 else audio
            if samples.shape[1] > 2:
                samples = samples.mean(axis=1, keepdims=True)
            self._layout = "mono" if samples.shape[1] == 1 else "stereo"
            self._audio = np.ascontiguousarray(samples.T.astype(np.float32))
            self._audio_rate = audio_rate
            self._audio_pos = 0
            self.audio_stream = self.container.add_stream("aac", rate=audio_rate, layout=self._layout)

    def _mux_audio_until(self, seconds: float | None) -> None:
        """Encode audio blocks up to ``seconds`` (all of it when None)."""
        if self._audio is None:
            return
        total = self._audio.shape[1]
        stop = total if seconds is None else min(total, int(seconds * self._audio_rate))
        while self._audio_pos < stop:
            block = self._audio[:, self._audio_pos : self._audio_pos + self.AUDIO_BLOCK]
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block), format="fltp", layout=self._layout)
            frame.sample_rate = self._audio_rate
            frame.pts = self._audio_pos
            self._audio_pos += block.shape[1]
            self.container.mux(self.audio_stream.encode(frame))

    def write(self, frame: np.ndarray) -> None:
        if frame.shape != (self.size[1], self.size[0], 3):
            raise ValueError(f"frame shape {frame.shape} != {(self.size[1], self.size[0], 3)}")
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        video_frame.pts = self.frames_written
        self.frames_written += 1
        self.container.mux(self.stream.encode(video_frame))
        self._mux_audio_until(float(self.frames_written / self.fps))

    def close(self) -> None:
        """Flush the video encoder, write the rest of the audio, finish the file."""
        self.container.mux(self.stream.encode(None))
        self._mux_audio_until(None)
        if self._audio is not None:
            self.container.mux(self.audio_stream.encode(None))
        self.container.close()

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is None:
            self.close()
        else:
            self.container.close()
