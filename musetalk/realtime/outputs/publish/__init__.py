"""Live channels: a prepared avatar's live session pushed to a streaming ingest (RTMP/FLV, MPEG-TS over UDP
or TCP, WHIP) or a file, driven by a queue of things to say.

- :mod:`.targets`: the URL checked into a :class:`Target` (srt:// refused: no libsrt in PyAV's FFmpeg);
- :mod:`.encode`: one connection's H.264 + AAC encoders and muxer (PyAV, in-process);
- :mod:`.link`: the sender thread: drops what it cannot send, reconnects with backoff;
- :mod:`.channel`: the session, its items, the stamping from the session's clock, the counters;
- :mod:`.routes`: the inbox routes and metrics ``musetalk serve --publish`` adds.
"""
from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass, field
from fractions import Fraction

from .channel import Channel, ChannelSettings, InboxError, Item
from .encode import EncodeSettings
from .link import Backoff, Link, queue_frames_for
from .targets import PublishError, Target, parse_target

__all__ = ["Backoff", "Channel", "ChannelSettings", "ChannelSpec", "EncodeSettings", "InboxError", "Item", "Link",
           "PublishError", "Target", "open_channel", "parse_target", "run_channel"]


@dataclass(frozen=True)
class ChannelSpec:
    """What ``musetalk publish`` or ``serve --publish`` asks for: channel ``name``, ``avatar``, ``target``;
    ``size``: (width, height) of the output (None: the avatar's, rounded down to even); bit rates in kbit/s;
    ``once``: the first push fault ends the channel with its cause (no reconnects)."""

    name: str
    avatar: str
    target: Target
    settings: ChannelSettings = field(default_factory=ChannelSettings)
    size: tuple[int, int] | None = None
    video_kbps: int = 2500
    audio_kbps: int = 128
    keyframe_seconds: float = 2.0
    once: bool = False


def encode_settings(spec: ChannelSpec, avatar) -> EncodeSettings:
    """The encoders of ``spec`` for ``avatar`` (its fps; its size unless ``spec.size``)."""
    info = avatar.info()
    width, height = spec.size or (info["width"] // 2 * 2, info["height"] // 2 * 2)
    return EncodeSettings(width, height, Fraction(avatar.fps).limit_denominator(1001), spec.video_kbps,
                          spec.audio_kbps, spec.keyframe_seconds)


def open_channel(engine, avatar, spec: ChannelSpec, voice=None, items: list[Item] = (),
                 backoff: Backoff = Backoff()) -> Channel:
    """A live session of ``avatar`` (loaded) on ``engine`` and its link to ``spec.target`` (call from the
    event loop the channel will run on); ``voice``: awaitable giving the synthesizer of text items."""
    session = engine.open(avatar, loop=asyncio.get_running_loop(), live=True, images=True)
    info = avatar.info()  # the queue holds the avatar's pictures, before scaling
    link = Link(spec.name, spec.target, encode_settings(spec, avatar), once=spec.once, backoff=backoff,
                queue_frames=queue_frames_for(avatar.fps, info["width"] * info["height"] * 3))
    settings = dataclasses.replace(spec.settings, budget_s=engine.latency_budget_s or 0.0)
    return Channel(spec.name, session, link, settings, voice, list(items))


async def run_channel(channel: Channel) -> None:
    """Run ``channel`` on its session's paced frames until its duration, the session's end or cancellation."""
    from ...media import paced_frames

    try:
        await channel.run(paced_frames(channel.session, channel.settings.budget_s))
    finally:
        channel.session.close()
