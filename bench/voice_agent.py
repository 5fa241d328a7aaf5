"""The Pipecat video service: time from the first TTS audio frame of an utterance to its first spoken
picture pushed downstream, in-process and against a ``musetalk serve`` on this machine. (Named
voice_agent.py: a bench/pipecat.py run as a script would shadow the pipecat package.)

A Pipecat pipeline [MuseTalkVideoService, sink] speaks ``--utterances`` utterances of ``--seconds`` of
sun.wav (22.05 kHz TTS frames of 20 ms, sent at once as TTS services do), each after the previous one has
finished and the avatar is back at rest. The figure is the service's own TTFB metric
(``MuseTalkVideoService.latencies``); its floor is the live session's playout delay: the audio a frame
needs after its time (whisper window, look-ahead, one frame) plus the latency budget.

    .venv/bin/python bench/voice_agent.py                                   # CPU, tiny random models
    .venv/bin/python bench/voice_agent.py --size full --device cuda --budget-ms 200
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MEDIA = ROOT.parent / "shared" / "media"
log = logging.getLogger("bench.voice_agent")


def tts_audio(path: Path, seconds: float, rate: int = 22050) -> np.ndarray:
    """``seconds`` of ``path`` from its 2nd second, int16 mono at ``rate``."""
    import soundfile
    import soxr

    samples, native = soundfile.read(path, dtype="float32", always_2d=True)
    samples = samples.mean(axis=1)[native * 2: int(native * (2 + seconds))]
    return np.clip(np.round(soxr.resample(samples, native, rate) * 32768), -32768, 32767).astype(np.int16)


async def speak(service, audio: np.ndarray, utterances: int, rate: int = 22050) -> list[float]:
    """Run a pipeline [error tap, ``service``, sink]; return the service's latencies (s) over ``utterances``."""
    from pipecat.frames.frames import (EndFrame, ErrorFrame, OutputImageRawFrame, TTSAudioRawFrame, TTSStartedFrame,
                                       TTSStoppedFrame)
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.worker import PipelineWorker
    from pipecat.processors.frame_processor import FrameProcessor
    from pipecat.workers.runner import WorkerRunner

    marks: list[dict] = []
    errors: list[str] = []

    class Sink(FrameProcessor):
        async def process_frame(self, frame, direction):
            await super().process_frame(frame, direction)
            if isinstance(frame, OutputImageRawFrame):
                marks.append(frame.metadata["musetalk"])
            await self.push_frame(frame, direction)

    class ErrorTap(FrameProcessor):
        async def process_frame(self, frame, direction):
            await super().process_frame(frame, direction)
            if isinstance(frame, ErrorFrame):
                errors.append(frame.error)
            await self.push_frame(frame, direction)

    chunk = rate // 50
    frames = [TTSAudioRawFrame(audio=audio[i: i + chunk].tobytes(), sample_rate=rate, num_channels=1)
              for i in range(0, len(audio), chunk)]
    task = PipelineWorker(Pipeline([ErrorTap(), service, Sink()]), idle_timeout_secs=None, enable_rtvi=False)
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(task)

    async def wait(condition, timeout=300.0):
        deadline = time.monotonic() + timeout
        while not condition():
            if errors or time.monotonic() > deadline:
                raise SystemExit(f"bench/voice_agent.py: {errors[0] if errors else 'no progress in 300 s'}")
            await asyncio.sleep(0.02)

    async def script():
        await wait(lambda: len(marks) >= 25)
        for k in range(utterances):
            await task.queue_frames([TTSStartedFrame(), *frames, TTSStoppedFrame()])
            await wait(lambda: len(service.latencies) > k)
            await wait(lambda: len(marks) > 10 and not any(m["speech"] for m in marks[-10:]))
        await task.queue_frame(EndFrame())

    await asyncio.gather(runner.run(), script())
    return service.latencies


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(args, models: str, avatars: str, port: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "musetalk.cli.main", "serve", "--models", models, "--avatars", avatars,
               "--port", str(port), "--device", args.device, "--decoder", args.decoder, "--batch-size",
               str(args.batch_size), "--latency-budget-ms", str(args.budget_ms), "--max-sessions", "2"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while True:
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("bench/voice_agent.py: musetalk serve did not start")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).close()
            return process
        except OSError:
            time.sleep(0.2)


def summary(latencies: list[float]) -> dict:
    ms = np.array(latencies) * 1000
    return {"utterances": len(ms), "median_ms": round(float(np.median(ms)), 1), "min_ms": round(float(ms.min()), 1),
            "max_ms": round(float(ms.max()), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", help="models folder (default: random weights of --size)")
    parser.add_argument("--size", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--decoder", choices=("vae", "tiny"), default="tiny")
    parser.add_argument("--avatar", default=str(MEDIA / "musk.png"), help="video or photo (default musk.png)")
    parser.add_argument("--audio", default=str(MEDIA / "sun.wav"))
    parser.add_argument("--seconds", type=float, default=2.0, help="speech per utterance")
    parser.add_argument("--utterances", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--budget-ms", type=float, default=200.0, help="the engine's latency budget")
    parser.add_argument("--skip-remote", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from loguru import logger

    logger.remove()  # Pipecat's per-frame debug log would cost more than what is measured
    from musetalk.integrations.pipecat import MuseTalkVideoService
    from musetalk.models.random_init import write_random_models
    from musetalk.realtime.engine.session import audio_delay
    from musetalk.realtime.engine.streaming import DEFAULT_LOOKAHEAD_S

    work = Path(tempfile.mkdtemp(prefix="bench-pipecat-"))
    models = args.models or str(write_random_models(work / "models", size=args.size))
    avatars = str(work / "avatars")
    options = dict(models=models, avatars=avatars, device=args.device, decoder=args.decoder,
                   batch_size=args.batch_size, latency_budget_ms=args.budget_ms, max_sessions=2)
    local = MuseTalkVideoService(avatar="bench", **options)
    from musetalk.integrations.pipecat import shared_backend

    backend = shared_backend(local.options)
    avatar = backend.store.prepare(args.avatar, "bench")
    audio = tts_audio(Path(args.audio), args.seconds)
    floor_ms = (audio_delay(avatar.fps, DEFAULT_LOOKAHEAD_S) + args.budget_ms / 1000) * 1000
    results = {"device": args.device, "models": args.models or f"random {args.size}", "decoder": args.decoder,
               "budget_ms": args.budget_ms, "playout_delay_ms": round(floor_ms, 1),
               "in_process": summary(asyncio.run(speak(local, audio, args.utterances)))}
    print(f"in-process: {results['in_process']}", flush=True)
    if not args.skip_remote:
        backend.engine.close()  # the server gets the machine to itself
        port = free_port()
        server = serve(args, models, avatars, port)
        try:
            remote = MuseTalkVideoService(server=f"http://127.0.0.1:{port}", avatar="bench")
            results["remote"] = summary(asyncio.run(speak(remote, audio, args.utterances)))
            print(f"remote: {results['remote']}", flush=True)
        finally:
            server.terminate()
            server.wait(timeout=60)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
