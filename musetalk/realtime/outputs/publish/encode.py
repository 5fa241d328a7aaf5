"""One connection's encoders and muxer: H.264 (libx264, zerolatency) + AAC through PyAV, in-process.

A :class:`MuxSink` is made per connection (a reconnect makes a new one, so the stream resumes with a
keyframe and fresh codec headers). Its timestamps come from the units it is given: video pts = the frame's
media time (1/90000 s), audio pts = the sample index at 48 kHz, both on the session's one media clock.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from fractions import Fraction

import av
from ....video import atomic_output
from ...media import VIDEO_TIME_BASE
from .targets import Target

log = logging.getLogger(__name__)

AUDIO_RATE = 48000
SinkError = (av.error.FFmpegError, OSError)  # what a push raises when the ingest refuses, resets or vanishes


@dataclass(frozen=True)
class EncodeSettings:
    """width, height: output size (even; the avatar's frames are scaled to it); fps: the avatar's frame rate;
    video_kbps / audio_kbps: target bit rates; keyframe_seconds: seconds between keyframes; preset: libx264's."""

    width: int
    height: int
    fps: Fraction
    video_kbps: int = 2500
    audio_kbps: int = 128
    keyframe_seconds: float = 2.0
    preset: str = "veryfast"

    @property
    def keyframe_interval(self) -> int:
        """Frames between keyframes (at least 1)."""
        return max(1, round(self.keyframe_seconds * float(self.fps)))


@dataclass(frozen=True)
class AVUnit:
    """What one frame slot pushes: frame ``index`` of the session's clock as ``video`` (an ``av.VideoFrame``,
    RGB at the avatar's size, pts its media time) and ``audio`` (an ``av.AudioFrame`` of s16 mono 48 kHz,
    pts its sample count on the same clock; None while the resampler holds the slot back)."""

    index: int
    video: "av.VideoFrame"
    audio: "av.AudioFrame | None"


class MuxSink:
    """One push to ``target`` (or one file, written beside it and renamed by :meth:`close`). :meth:`write`
    raises one of ``SinkError`` when the ingest fails (the network is opened lazily, at the first packet)."""

    def __init__(self, target: Target, settings: EncodeSettings) -> None:
        self.target, self.settings = target, settings
        self._files = contextlib.ExitStack()
        path = str(self._files.enter_context(atomic_output(target.url))) if target.kind == "file" else target.url
        try:
            self._container = av.open(path, mode="w", format=target.format)
            self._video, self._audio = self._add_streams()
        except BaseException:
            self._files.close()
            raise
        self.bytes_out = 0

    def _add_streams(self):
        s = self.settings
        key = s.keyframe_interval
        video = self._container.add_stream("libx264", rate=s.fps, options={
            "preset": s.preset, "tune": "zerolatency",
            "x264-params": f"keyint={key}:min-keyint={key}:scenecut=0:bitrate={s.video_kbps}:"
                           f"vbv-maxrate={s.video_kbps}:vbv-bufsize={2 * s.video_kbps}"})
        video.width, video.height, video.pix_fmt = s.width, s.height, "yuv420p"
        video.time_base = VIDEO_TIME_BASE
        video.codec_context.gop_size = key
        audio = self._container.add_stream("aac", rate=AUDIO_RATE)
        audio.layout = "mono"
        audio.bit_rate = s.audio_kbps * 1000
        return video, audio

    def write(self, unit: AVUnit) -> None:
        """Encode and mux one frame slot (its picture and its audio)."""
        frame = unit.video.reformat(width=self.settings.width, height=self.settings.height, format="yuv420p")
        frame.pts, frame.time_base = unit.video.pts, unit.video.time_base
        self._mux(self._video.encode(frame))
        if unit.audio is not None:
            self._mux(self._audio.encode(unit.audio))

    def _mux(self, packets) -> None:
        for packet in packets:
            self.bytes_out += packet.size
            self._container.mux(packet)

    def close(self) -> None:
        """Flush the encoders, finish the container (a file is renamed into place)."""
        self._mux(self._video.encode(None))
        self._mux(self._audio.encode(None))
        self._container.close()
        self._files.close()

    def abort(self) -> None:
        """Drop the connection after a fault (a file's temporary copy is deleted)."""
        try:
            self._container.close()
        except SinkError as exc:
            log.debug("closing a failed push to %s: %s", self.target.url, exc)
        self._files.__exit__(RuntimeError, RuntimeError("aborted"), None)
