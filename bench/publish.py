"""Live channel publishing: CPU per pushed frame (encode + mux), bit rate, and drift after a run.

One channel of a prepared avatar (sun.mp4's first frames by default) on a real engine, saying sun.wav in
pieces with rest between (looped), pushed for ``--seconds`` of media time to ``--url`` (default: a real
nginx-rtmp started here on 127.0.0.1 when nginx and its RTMP module are installed, else a .flv file).
Reports the sender thread's CPU time per pushed frame, the bit rate, frames pushed / repeated (engine
skips) / dropped, reconnects, and the stream-vs-wall drift at the end and at its worst.

    .venv/bin/python bench/publish.py --seconds 600            # CPU, tiny random models, 10 minutes
    .venv/bin/python bench/publish.py --seconds 60 --size 1280x720 --video-kbps 4000
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MEDIA = ROOT.parent / "shared" / "media"
sys.path.insert(0, str(ROOT))
log = logging.getLogger("bench.publish")


def prepare(args: argparse.Namespace, work: Path):
    """(MuseTalk, loaded avatar) with the given or tiny random models."""
    from musetalk import MuseTalk
    from musetalk.models.random_init import write_random_models
    from musetalk.realtime.avatars.store import AvatarStore, PrepareSettings

    models = Path(args.models) if args.models else write_random_models(work / "models", size="tiny")
    mt = MuseTalk.from_pretrained(models, version="v1.5", device=args.device)
    store = AvatarStore(work / "avatars", mt)
    store.prepare(Path(args.avatar), "bench", PrepareSettings(max_frames=args.avatar_frames))
    return mt, store.load("bench")


async def run_channel_for(engine, avatar, url: str, args: argparse.Namespace, items):
    from musetalk.cli.publish import parse_size
    from musetalk.realtime.outputs.publish import ChannelSettings, ChannelSpec, open_channel, parse_target, run_channel

    spec = ChannelSpec("bench", avatar.name, parse_target(url),
                       ChannelSettings(gap_s=args.gap, loop=True, duration_s=args.seconds), parse_size(args.size),
                       args.video_kbps, args.audio_kbps, args.keyframe_seconds)
    channel = open_channel(engine, avatar, spec, None, items)
    started = time.perf_counter()
    await run_channel(channel)
    return channel, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="media seconds to push (default: 600)")
    parser.add_argument("--url", help="where to push (default: nginx-rtmp started here, else a .flv file)")
    parser.add_argument("--models", help="models folder (default: tiny random weights)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--avatar", default=str(MEDIA / "sun.mp4"))
    parser.add_argument("--avatar-frames", type=int, default=25)
    parser.add_argument("--audio", default=str(MEDIA / "sun.wav"))
    parser.add_argument("--piece-seconds", type=float, default=4.0, help="length of each spoken piece")
    parser.add_argument("--gap", type=float, default=2.0)
    parser.add_argument("--size", help="output WxH (default: the avatar's)")
    parser.add_argument("--video-kbps", type=int, default=2500)
    parser.add_argument("--audio-kbps", type=int, default=128)
    parser.add_argument("--keyframe-seconds", type=float, default=2.0)
    parser.add_argument("--budget-ms", type=float, default=200.0)
    parser.add_argument("--fake-faces", action="store_true",
                        help="skip the models (zero faces at no cost): measure the channel, not generation")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from musetalk.audio import load_audio
    from musetalk.realtime.engine.engine import Engine
    from musetalk.realtime.outputs.publish import Item

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        mt, avatar = prepare(args, work)
        speech = load_audio(args.audio)
        step = int(args.piece_seconds * 16000)
        items = [Item(f"piece {k}", samples=speech[i: i + step])
                 for k, i in enumerate(range(0, len(speech) - step, step))]
        server = None
        url = args.url
        if url is None:
            sys.path.insert(0, str(ROOT / "tests" / "realtime"))
            from rtmp_server import MODULE, RtmpServer

            if MODULE.is_file():
                server = RtmpServer(work / "nginx").start()
                url = server.url("bench")
            else:
                url = str(work / "bench.flv")
        try:
            with Engine(mt, batch_size=8, jpeg_quality=None, latency_budget_s=args.budget_ms / 1000) as engine:
                if args.fake_faces:
                    sys.path.insert(0, str(ROOT))
                    from tests.realtime.conftest import fake_models

                    fake_models(engine)
                cpu0 = time.process_time()
                channel, wall = asyncio.run(run_channel_for(engine, avatar, url, args, items))
                process_cpu = time.process_time() - cpu0
        finally:
            if server is not None:
                server.stop()
    link, stats = channel.link.stats, channel.stats
    settings = channel.link.settings
    report = {
        "media_seconds": args.seconds, "wall_seconds": round(wall, 2), "url": url.split("://")[0] + "://...",
        "size": f"{settings.width}x{settings.height}", "fps": float(settings.fps), "video_kbps": args.video_kbps,
        "frames": stats.frames, "pushed": link.frames_pushed, "repeated": stats.skipped, "dropped": link.frames_dropped,
        "reconnects": link.reconnects, "items_done": stats.items_done,
        "send_cpu_ms_per_frame": round(1000 * link.send_cpu_s / max(1, link.frames_pushed), 2),
        "process_cpu_s": round(process_cpu, 1),
        "bit_rate_kbps": round(link.bytes_out * 8 / 1000 / args.seconds, 1),
        "drift_ms_end": round(1000 * stats.drift_s, 2), "drift_ms_worst": round(1000 * stats.max_drift_s, 2),
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
