"""Clips, speech and face records for bench/gpu.sh, made here from ../shared/media (only the repository
travels to a GPU machine, and it has no dlib landmark model: faces are analysed here, on CPU).

    python bench/gpu_media.py bench/media                       # sun720.mp4, sun1080.mp4 (+ .npz), speech.wav
    python bench/gpu_media.py OUT --heights 144 --seconds 0.4   # the dry run's small clip

Each clip is sun.mp4 letterboxed into a 16:9 frame of the given height; its ``.npz`` holds the face record
of every frame (musetalk.face.save_records); speech.wav is the first seconds of sun.wav.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import cv2
import numpy as np
import soundfile as sf

from musetalk.face import FaceAnalyzer, save_records
from musetalk.video import VideoWriter, probe, read_frames

MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"
log = logging.getLogger("bench.gpu_media")


def letterbox(frame: np.ndarray, height: int) -> np.ndarray:
    """uint8 (h, w, 3) RGB scaled to ``height`` rows and centred in a 16:9 black frame (width even)."""
    width = 2 * round(height * 16 / 9 / 2)
    scaled_w = min(width, round(frame.shape[1] * height / frame.shape[0]))
    scaled = cv2.resize(frame, (scaled_w, height), interpolation=cv2.INTER_AREA)
    out = np.zeros((height, width, 3), np.uint8)
    left = (width - scaled_w) // 2
    out[:, left : left + scaled_w] = scaled
    return out


def make_clip(source: Path, out: Path, height: int, frames: int) -> list[np.ndarray]:
    """Write the first ``frames`` frames of ``source`` letterboxed to ``height``; returns them."""
    info = probe(source)
    clip = []
    for frame in read_frames(source):
        if len(clip) == frames:
            break
        clip.append(letterbox(frame, height))
    with VideoWriter(out, clip[0].shape[1], clip[0].shape[0], info.fps, crf=28) as writer:
        for frame in clip:
            writer.write(frame)
    return clip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="folder to write (git-ignored bench/media for the GPU run)")
    parser.add_argument("--heights", nargs="+", type=int, default=[720, 1080])
    parser.add_argument("--seconds", type=float, default=6.0, help="length of the clips and the speech")
    parser.add_argument("--video", type=Path, default=MEDIA / "sun.mp4")
    parser.add_argument("--audio", type=Path, default=MEDIA / "sun.wav")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    fps = float(probe(args.video).fps)
    for height in args.heights:
        clip_path = args.out / f"sun{height}.mp4"
        clip = make_clip(args.video, clip_path, height, round(args.seconds * fps))
        records = FaceAnalyzer(fps=fps).analyze_all(clip)
        save_records(args.out / f"sun{height}.npz", records)
        log.info("%s: %d frames of %dx%d, %d with a face", clip_path, len(clip), clip[0].shape[1], height,
                 sum(r.found for r in records))
    samples, rate = sf.read(args.audio, dtype="float32")
    sf.write(args.out / "speech.wav", samples[: int(args.seconds * rate)], rate)


if __name__ == "__main__":
    main()
