"""Speech synthesis speed: seconds of speech made per second of compute, and the time to the first sentence
(what a `say` waits before its first frame can be planned), with the bundled Piper voice on this machine.

    .venv/bin/python bench/speech.py              # a 5-sentence paragraph, 3 runs
    .venv/bin/python bench/speech.py --voice other.onnx --runs 5
    .venv/bin/python bench/speech.py --first-frame          # text to first frame through the server (tiny models)

``--first-frame`` opens a live session on musk.png (prepared with --size random models) and, with the
synthesizer warm, times each ``say`` from sending it to its ``audio`` message (first sentence ready), its
``speaking`` state (the utterance's first frame is next) and that first frame (sent, or skipped when late).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from musetalk.speech import SAMPLE_RATE, Synthesizer

MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"

PARAGRAPH = ("Good morning, and welcome to the show. Today we talk about real-time avatars that speak whatever "
             "you type. The voice is made on this machine, without any network. Each sentence is ready before the "
             "next one starts, so the face can move while the rest is still being made. Thank you for listening.")


def measure(synth: Synthesizer, text: str) -> dict:
    """Speech seconds, compute seconds and seconds to the first sentence of one synthesis of ``text``."""
    started = time.perf_counter()
    first = None
    samples = 0
    for part in synth.sentences(text):
        first = first if first is not None else time.perf_counter() - started
        samples += len(part)
    elapsed = time.perf_counter() - started
    return {"speech_s": samples / SAMPLE_RATE, "compute_s": elapsed, "first_sentence_s": first}


def first_frame_times(ws, text: str) -> dict:
    """Seconds from sending ``say`` to its audio message, its speaking state and its first frame."""
    started = time.perf_counter()
    ws.send_text(json.dumps({"type": "say", "text": text}))
    times: dict = {}
    while "first_frame_s" not in times:
        message = ws.receive()
        now = time.perf_counter() - started
        kind = "frame" if message.get("bytes") is not None else json.loads(message["text"])["type"]
        if kind == "audio":
            times.setdefault("audio_s", now)
        elif kind == "state" and "audio_s" in times:
            times["speaking_s"] = now
        elif kind in ("frame", "skip") and "speaking_s" in times:
            times["first_frame_s"] = now
    while json.loads(ws.receive().get("text") or "{}").get("state") != "rest":
        continue
    return times


def server_first_frame(voice: str | None, size: str, runs: int, budget_s: float) -> dict:
    from fastapi.testclient import TestClient

    from musetalk import MuseTalk
    from musetalk.models.random_init import write_random_models
    from musetalk.realtime.avatar import AvatarStore
    from musetalk.realtime.engine import Engine
    from musetalk.realtime.server import create_app

    folder = Path(tempfile.mkdtemp(prefix="bench-speech-"))
    mt = MuseTalk.from_pretrained(write_random_models(folder / "models", size=size))
    store = AvatarStore(folder / "avatars", mt)
    store.prepare(MEDIA / "musk.png", "photo")
    synth = Synthesizer(voice)
    with Engine(mt, batch_size=8, latency_budget_s=budget_s) as engine, \
            TestClient(create_app(store, engine, synthesizer=synth)) as client, \
            client.websocket_connect("/ws/photo?live=1") as ws:
        first_frame_times(ws, "Warm up.")
        runs = [first_frame_times(ws, PARAGRAPH) for _ in range(runs)]
    return {key: round(float(np.median([r[key] for r in runs])), 3) for key in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voice", help="Piper .onnx (default: the bundled en_US-joe-medium)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--first-frame", action="store_true", help="time text to first frame through the server")
    parser.add_argument("--size", choices=("tiny", "full"), default="tiny", help="random models for --first-frame")
    parser.add_argument("--budget-ms", type=float, default=200.0, help="the engine's latency budget (--first-frame)")
    args = parser.parse_args()
    if args.first_frame:
        print(json.dumps(server_first_frame(args.voice, args.size, args.runs, args.budget_ms / 1000), indent=2))
        return
    started = time.perf_counter()
    synth = Synthesizer(args.voice)
    load_s = time.perf_counter() - started
    synth.synthesize("Warm up.")
    runs = [measure(synth, PARAGRAPH) for _ in range(args.runs)]
    speech = sum(r["speech_s"] for r in runs)
    compute = sum(r["compute_s"] for r in runs)
    print(json.dumps({"voice": str(synth.voice_path.name), "load_s": round(load_s, 2),
                      "speech_s_per_run": round(runs[0]["speech_s"], 2),
                      "speech_seconds_per_second": round(speech / compute, 2),
                      "first_sentence_s": round(min(r["first_sentence_s"] for r in runs), 3)}, indent=2))


if __name__ == "__main__":
    main()
