"""Transports at 720p: what a viewer costs in bits and CPU, and what the encoder leaves of the mouth.

For WebSocket JPEG (quality 85) and WebRTC H.264 / VP8 (aiortc's encoders, exactly as configured when
sending, at each bit rate of ``--video-kbps-list``): bits per second of ``--transport-seconds`` at rest
(the avatar's source frame, repeated) and as long speaking (the same frame with a mouth that opens with sun.wav's loudness,
pasted in as the server composites), CPU ms per delivered frame (composite + colour conversion + encode,
the process's CPU time: libx264 and libvpx encode on threads of their own), sessions per core this
implies, and the PSNR of the mouth region (landmarks 48-67 plus 8 px) of the decoded frame against the
composited one, at rest and speaking. Then the server's CPU seconds
per second of one WebRTC session at rest against one speaking (a real ``musetalk serve`` and an aiortc
receiver). Called by ``bench/realtime.py --transports``.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

log = logging.getLogger("bench.transport")

FPS = 25


def avatar_720p(args, work: Path):
    """(store, avatar) with "bench720": ``--avatar`` resized to 1280x720, prepared with random models."""
    import cv2
    import torch

    from musetalk import MuseTalk
    from musetalk.models.random_init import write_random_models
    from musetalk.realtime.backend import open_store

    image = cv2.imread(str(args.avatar))
    source = work / "bench720.png"
    cv2.imwrite(str(source), cv2.resize(image, (1280, 720), interpolation=cv2.INTER_CUBIC))
    models = Path(args.models) if args.models else write_random_models(work / "models", size=args.size,
                                                                       versions=("v1.5",))
    mt = MuseTalk.from_pretrained(models, device=args.device, dtype=torch.float16 if args.fp16 else torch.float32)
    store = open_store(work / "avatars", models, mt, args.device)  # as `musetalk serve` opens it
    return models, store, store.prepare(source, "bench720")


def speaking_faces(avatar, loudness: np.ndarray) -> list[np.ndarray]:
    """uint8 (256, 256, 3) RGB: the avatar's face crop with a dark mouth opened by each ``loudness`` (0..1)."""
    import cv2

    from musetalk.face import crop_face

    record = avatar.records[0]
    crop = crop_face(np.asarray(avatar.frames[0]), record, 256)
    x1, y1, x2, y2 = record.crop_box
    mouth = (record.landmarks[60:68] - [x1, y1]) * [256 / (x2 - x1), 256 / (y2 - y1)]
    centre = tuple(int(v) for v in mouth.mean(axis=0))
    half_width = int((mouth[:, 0].max() - mouth[:, 0].min()) / 2) + 2
    faces = []
    for amount in loudness:
        face = crop.copy()
        cv2.ellipse(face, centre, (half_width, max(1, int(2 + 14 * amount))), 0, 0, 360, (60, 25, 30), -1)
        faces.append(face)
    return faces


def mouth_box(avatar) -> tuple[int, int, int, int]:
    """x1, y1, x2, y2 of the mouth (landmarks 48-67) plus 8 px, in the frame."""
    points = avatar.records[0].landmarks[48:68]
    x1, y1 = (points.min(axis=0) - 8).astype(int)
    x2, y2 = (points.max(axis=0) + 8).astype(int)
    return max(0, int(x1)), max(0, int(y1)), int(x2), int(y2)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255 ** 2 / mse)


class Measured:
    """Totals of one run of frames through one encoder."""

    def __init__(self) -> None:
        self.bytes = 0
        self.cpu_s = 0.0
        self.frames = 0
        self.psnr: list[float] = []

    @property
    def kbps(self) -> float:
        return self.bytes * 8 / (self.frames / FPS) / 1000  # the first (key) frame included

    @property
    def cpu_ms(self) -> float:
        return self.cpu_s / self.frames * 1000


def run_codec(codec: str, kbps: int, pictures, box) -> Measured:
    """``pictures`` (callables giving uint8 (H, W, 3) RGB, timed as the composite) through aiortc's
    ``codec`` encoder at ``kbps``; decoded back for the mouth PSNR."""
    import av
    from aiortc.codecs import h264, vpx

    from musetalk.realtime.media import MediaClock, video_frame
    from musetalk.video.jpeg import decode_jpeg, encode_jpeg

    clock = MediaClock(0.0, FPS)
    out = Measured()
    x1, y1, x2, y2 = box
    if codec == "jpeg":
        for picture in pictures:
            start = time.process_time()
            image = picture()
            data = encode_jpeg(image, 85)
            out.cpu_s += time.process_time() - start
            out.bytes += len(data)
            out.frames += 1
            out.psnr.append(psnr(decode_jpeg(data)[y1:y2, x1:x2], image[y1:y2, x1:x2]))
        return out
    module = h264 if codec == "h264" else vpx
    module.DEFAULT_BITRATE = module.MAX_BITRATE = kbps * 1000
    module.MIN_BITRATE = min(module.MIN_BITRATE, kbps * 1000)
    encoder = h264.H264Encoder() if codec == "h264" else vpx.Vp8Encoder()
    bitstream: list[bytes] = []
    if codec == "vp8":  # the frame aiortc packetizes, before RTP framing
        encoder._packetize = lambda data, picture_id: bitstream.append(data) or []
    decoder = av.CodecContext.create("h264" if codec == "h264" else "vp8", "r")
    for index, picture in enumerate(pictures):
        start = time.process_time()
        image = picture()
        frame = video_frame(image, index, clock)
        if codec == "h264":  # the bitstream aiortc packetizes (its NAL units), before RTP framing
            data = b"".join(b"\0\0\0\1" + nal for nal in encoder._encode_frame(frame, index == 0))
        else:
            encoder.encode(frame, index == 0)
            data = bitstream.pop()
        out.cpu_s += time.process_time() - start
        out.bytes += len(data)
        out.frames += 1
        if data:
            for decoded in decoder.decode(av.Packet(data)):
                out.psnr.append(psnr(decoded.to_ndarray(format="rgb24")[y1:y2, x1:x2], image[y1:y2, x1:x2]))
    return out


def bench_transports(args, work: Path) -> None:
    from musetalk.audio import load_audio
    from musetalk.eval.av_offset import speech_envelope
    from musetalk.realtime.engine.render import composite

    models, store, avatar = avatar_720p(args, work)
    seconds = args.transport_seconds
    frames = int(seconds * FPS)
    speech = load_audio(args.audio)[: int(seconds * 16000)]
    envelope = speech_envelope(speech, FPS, frames)
    loudness = np.clip(envelope / np.percentile(envelope, 95), 0, 1)
    faces = speaking_faces(avatar, loudness)
    rest = np.asarray(avatar.frames[0])
    runs = {"rest": [lambda: rest.copy() for _ in range(frames)],
            "speaking": [lambda f=f: composite(avatar, 0, f) for f in faces]}
    box = mouth_box(avatar)
    print(f"\n720p transports ({rest.shape[1]}x{rest.shape[0]}, {FPS} fps, {seconds:g} s each; mouth box {box}):")
    print(f"{'transport':<22}{'kbit/s rest':>12}{'kbit/s speak':>13}{'CPU ms/frame':>13}{'sessions/core':>14}"
          f"{'mouth dB rest':>14}{'speak median':>13}{'speak p5':>9}")
    rows = [("WebSocket JPEG q85", "jpeg", 0)] + [(f"WebRTC {c.upper()} {k} kbit/s", c, k)
                                                 for c in ("h264", "vp8") for k in args.video_kbps_list]
    for name, codec, kbps in rows:
        at_rest, speaking = (run_codec(codec, kbps, runs[r], box) for r in ("rest", "speaking"))
        per_frame = speaking.cpu_ms
        print(f"{name:<22}{at_rest.kbps:>12.0f}{speaking.kbps:>13.0f}{per_frame:>13.2f}"
              f"{1000 / (per_frame * FPS):>14.1f}{np.median(at_rest.psnr[5:]):>14.1f}"
              f"{np.median(speaking.psnr[5:]):>13.1f}{np.percentile(speaking.psnr[5:], 5):>9.1f}")
    print("(CPU ms/frame: speaking, composite + conversion + encode; sessions/core: 1 s / (25 x that); "
          "mouth dB: PSNR of the mouth box, median at rest, median and 5th percentile speaking, first 5 "
          "frames left out; kbit/s: what the encoder produced, first key frame included)")
    session_cpu(args, models, store.root)


class _Viewer:
    """An aiortc receiver of one WebRTC session of avatar "bench720" (video and audio drained, counted)."""

    def __init__(self) -> None:
        from aiortc import RTCPeerConnection

        self.pc = RTCPeerConnection()
        self.channel = self.pc.createDataChannel("control")
        self.pc.addTransceiver("video", direction="recvonly")
        self.pc.addTransceiver("audio", direction="recvonly")
        self.received = {"video": 0, "audio": 0}
        self.answer = ""
        self.pc.on("track", self._drain)

    def _drain(self, track) -> None:
        from aiortc.mediastreams import MediaStreamError

        async def drain():
            with contextlib.suppress(MediaStreamError):
                while True:
                    await track.recv()
                    self.received[track.kind] += 1
        asyncio.ensure_future(drain())

    async def connect(self, port: int) -> None:
        from aiortc import RTCSessionDescription

        await self.pc.setLocalDescription(await self.pc.createOffer())
        request = urllib.request.Request(f"http://127.0.0.1:{port}/whep/bench720", self.pc.localDescription.sdp.encode(),
                                         {"Content-Type": "application/sdp"})
        self.answer = await asyncio.to_thread(lambda: urllib.request.urlopen(request, timeout=60).read().decode())
        await self.pc.setRemoteDescription(RTCSessionDescription(self.answer, "answer"))
        while self.received["video"] < 25:
            await asyncio.sleep(0.1)

    @property
    def codec(self) -> str:
        return next((line.split()[1].split("/")[0] for line in self.answer.splitlines()
                     if line.startswith("a=rtpmap:") and "/90000" in line), "?")


def session_cpu(args, models: Path, avatars: Path, idle_counts: tuple[int, ...] = (1, 4)) -> None:
    """The server's CPU seconds per second with one WebRTC session at rest, then speaking (PCM fed in real
    time over the data channel); then with 1 and 4 sessions at rest (after the shared rest stream is made:
    what each more idle viewer costs)."""
    port = args.port + 1
    cmd = [sys.executable, "-m", "musetalk.cli.main", "-q", "serve", "--models", str(models), "--avatars",
           str(avatars), "--port", str(port), "--device", args.device, "--max-sessions", "1",
           "--latency-budget-ms", str(args.budget_ms), "--video-kbps", str(args.video_kbps)]
    server = subprocess.Popen(cmd)
    try:
        _wait_up(port, server)

        async def measure() -> tuple:
            viewer = _Viewer()
            await viewer.connect(port)
            frames = viewer.received["video"]
            idle = await _cpu_per_second(server.pid, 8.0)
            idle_fps, frames = (viewer.received["video"] - frames) / 8.0, viewer.received["video"]
            from musetalk.audio import load_audio

            pcm = (np.clip(load_audio(args.audio)[: 16000 * 9], -1, 1) * 32767).astype("<i2").tobytes()

            async def speak():
                start = time.perf_counter()
                for k, offset in enumerate(range(0, len(pcm), 1280)):  # 40 ms chunks at real-time pace
                    await asyncio.sleep(max(0.0, start + k * 0.04 - time.perf_counter()))
                    viewer.channel.send(pcm[offset: offset + 1280])

            feeding = asyncio.ensure_future(speak())
            await asyncio.sleep(0.5)
            speaking = await _cpu_per_second(server.pid, 8.0)
            speaking_fps = (viewer.received["video"] - frames) / 8.5
            await feeding
            await viewer.pc.close()
            return idle, speaking, viewer.codec, idle_fps, speaking_fps

        idle, speaking, codec, idle_fps, speaking_fps = asyncio.run(measure())
        print(f"\nserver CPU of one WebRTC session ({codec} {args.video_kbps} kbit/s, 720p, budget "
              f"{args.budget_ms:g} ms): {idle:.2f} s/s at rest ({idle_fps:.1f} fps received), {speaking:.2f} s/s "
              f"speaking ({speaking_fps:.1f} fps received; the model included)")

        async def idle_viewers(count: int) -> float:
            viewers = [_Viewer() for _ in range(count)]
            for viewer in viewers:
                await viewer.connect(port)
            await asyncio.sleep(3.0)  # every viewer reaches a keyframe of the shared rest stream
            cpu = await _cpu_per_second(server.pid, 8.0)
            for viewer in viewers:
                await viewer.pc.close()
            await asyncio.sleep(1.0)
            return cpu

        costs = [asyncio.run(idle_viewers(n)) for n in idle_counts]
        per_viewer = (costs[-1] - costs[0]) / (idle_counts[-1] - idle_counts[0])
        print(f"idle WebRTC viewers (the shared rest stream): {', '.join(f'{n}: {c:.2f} s/s' for n, c in zip(idle_counts, costs))}; "
              f"each more idle viewer {per_viewer:.3f} s/s, against {idle:.2f} s/s for the first (its encoding "
              f"of the rest stream included) and {speaking:.2f} s/s speaking")
    finally:
        server.terminate()
        server.wait()


async def _cpu_per_second(pid: int, seconds: float) -> float:
    def cpu() -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / 100.0  # utime + stime, clock ticks of 10 ms

    before, start = cpu(), time.perf_counter()
    await asyncio.sleep(seconds)
    return (cpu() - before) / (time.perf_counter() - start)


def _wait_up(port: int, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read())
            return
        except OSError:
            if server.poll() is not None:
                raise RuntimeError("the server exited") from None
            time.sleep(0.5)
    raise RuntimeError("the server did not start")
