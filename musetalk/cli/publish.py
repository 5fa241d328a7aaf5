"""``musetalk publish AVATAR URL``: one live channel of a prepared avatar pushed to a streaming ingest or a
file (RTMP/FLV, MPEG-TS over udp:// or tcp://, WHIP, .flv/.ts/.mp4), saying the ``--speak`` items."""
from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path

from ..errors import MuseTalkError
from .say import VOICE_HELP
from .serve import add_engine_options, check_engine_options

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = {".wav", ".mp3", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".wma", ".aiff", ".aif"}
_SIZE = re.compile(r"^(\d+)x(\d+)$")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("publish", help="push a live avatar channel to RTMP, MPEG-TS (udp/tcp), WHIP or a file",
                       description="Run one live session of the prepared avatar AVATAR (at rest between "
                                   "utterances), encode it once (H.264 + AAC) and push it to URL: rtmp(s)://, "
                                   "udp://HOST:PORT or tcp://HOST:PORT (MPEG-TS), http(s)://.../whip, or a "
                                   ".flv/.ts/.mp4 file. Faults of the ingest are retried with backoff.")
    p.add_argument("avatar", metavar="AVATAR", help="name of a prepared avatar (see `musetalk avatar list`)")
    p.add_argument("url", metavar="URL", help="where to push (see above)")
    p.add_argument("--speak", action="append", default=[], metavar="TEXT_OR_FILE",
                   help="something to say, in order: an audio file (.wav, .mp3, ...) as it is, anything else as "
                        "text for the offline voice; repeatable")
    p.add_argument("--gap", type=float, default=1.0, help="seconds of rest before each item (default: 1)")
    p.add_argument("--loop", action="store_true", help="repeat the --speak items until the end")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: until "
                                                                 "interrupted)")
    p.add_argument("--once", action="store_true", help="no reconnects: the first push fault ends it with its cause")
    p.add_argument("--video-kbps", type=int, default=2500, help="H.264 bit rate in kbit/s (default: 2500)")
    p.add_argument("--audio-kbps", type=int, default=128, help="AAC bit rate in kbit/s (default: 128)")
    p.add_argument("--keyframe-seconds", type=float, default=2.0,
                   help="seconds between keyframes (default: 2, what platforms ask for)")
    p.add_argument("--size", metavar="WxH", help="output size, e.g. 1280x720 (default: the avatar's own)")
    p.add_argument("--voice", help=VOICE_HELP)
    add_engine_options(p)
    p.set_defaults(func=run)


def parse_size(text: str | None) -> tuple[int, int] | None:
    """``WxH`` with even positive numbers -> (width, height); None stays None."""
    if text is None:
        return None
    match = _SIZE.match(text.strip())
    if not match or not all(int(v) > 0 and int(v) % 2 == 0 for v in match.groups()):
        raise MuseTalkError(f"--size must be WIDTHxHEIGHT in even pixels, e.g. 1280x720, got {text!r}")
    return int(match[1]), int(match[2])


def speak_item(value: str):
    """One ``--speak`` value as a channel item: an audio file (by its extension) loaded now, else text."""
    from ..realtime.outputs.publish import Item

    if Path(value).suffix.lower() in AUDIO_SUFFIXES:
        from ..audio.load import load_audio

        try:
            return Item(Path(value).name, samples=load_audio(value))
        except MuseTalkError as exc:
            raise MuseTalkError(f"--speak {value}: {exc}") from None
    from ..speech import check_text

    try:
        text = check_text(value)
    except MuseTalkError as exc:
        raise MuseTalkError(f"--speak: {exc}") from None
    return Item(f"text {text[:40]!r}", text=text)


def check_numbers(args: argparse.Namespace) -> None:
    for flag, value in (("--video-kbps", args.video_kbps), ("--audio-kbps", args.audio_kbps),
                        ("--keyframe-seconds", args.keyframe_seconds)):
        if value <= 0:
            raise MuseTalkError(f"{flag} must be positive, got {value:g}")
    if args.gap < 0:
        raise MuseTalkError(f"--gap must be 0 or more seconds, got {args.gap:g}")
    if args.duration is not None and args.duration <= 0:
        raise MuseTalkError(f"--duration must be positive seconds, got {args.duration:g}")
    if args.loop and not args.speak:
        raise MuseTalkError("--loop repeats the --speak items: give at least one --speak")


def check_avatar(avatars: str | None, name: str) -> None:
    """Refuse an unknown avatar before any model loads."""
    from ..realtime.avatars.format import AvatarError, avatars_dir, check_name, read_meta

    root = avatars_dir(avatars)
    if read_meta(root, check_name(name)) is None:
        raise AvatarError(f"no avatar named {name!r} in {root}/: prepare it with `musetalk avatar prepare`")


def build_spec(args: argparse.Namespace, name: str = "main"):
    from ..realtime.outputs.publish import ChannelSettings, ChannelSpec, parse_target

    target = parse_target(args.url)
    settings = ChannelSettings(gap_s=args.gap, loop=args.loop, duration_s=args.duration)
    return ChannelSpec(name, args.avatar, target, settings, parse_size(args.size), args.video_kbps,
                       args.audio_kbps, args.keyframe_seconds, args.once)


def run(args: argparse.Namespace) -> int:
    import asyncio

    check_engine_options(args)
    check_numbers(args)
    spec = build_spec(args)
    items = [speak_item(v) for v in args.speak]
    check_avatar(args.avatars, args.avatar)
    from ..realtime.backend import load_backend
    from .serve import backend_options

    backend = load_backend(backend_options(args, max_sessions=1, jpeg_quality=None))
    store, engine = backend.store, backend.engine
    try:
        channel = asyncio.run(_publish(store, engine, spec, items, args.voice))
    finally:
        engine.close()
    status = channel.status()
    print(f"{spec.target.url}: {status['pushed']} frames pushed ({status['skipped']} repeated, {status['dropped']} "
          f"dropped), {status['reconnects']} reconnects, {status['bytes_out'] / 1e6:.2f} MB")
    return 0


async def _publish(store, engine, spec, items, voice_path):
    import asyncio

    from ..realtime.outputs.publish import open_channel, run_channel
    from ..realtime.outputs.ws import Voice

    voice = Voice(None if voice_path is None else _synthesizer(voice_path))
    avatar = await asyncio.to_thread(store.load, spec.avatar)
    channel = open_channel(engine, avatar, spec, voice.get, items)
    log.info("channel %s: %s -> %s (%dx%d, %g fps)", spec.name, spec.avatar, spec.target.url,
             channel.link.settings.width, channel.link.settings.height, avatar.fps)
    await run_channel(channel)
    return channel


def _synthesizer(path: str):
    from ..speech import Synthesizer

    return Synthesizer(path)
