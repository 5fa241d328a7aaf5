"""Speech synthesis speed: seconds of speech made per second of compute, and the time to the first sentence
(what a `say` waits before its first frame can be planned), with the bundled Piper voice on this machine.

    .venv/bin/python bench/speech.py              # a 5-sentence paragraph, 3 runs
    .venv/bin/python bench/speech.py --voice other.onnx --runs 5
"""
from __future__ import annotations

import argparse
import json
import time

from musetalk.speech import SAMPLE_RATE, Synthesizer

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voice", help="Piper .onnx (default: the bundled en_US-joe-medium)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
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
