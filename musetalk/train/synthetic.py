"""Synthetic prepared data (no video, no face analysis): smooth random crops, a template face whose
mouth opens and closes, random audio features. For the benchmark and tests of the training loop."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .mel import log_mel
from .shards import FPS, clips_dir, write_shard


def template_landmarks(opening: float, yaw: float = 0.0) -> np.ndarray:
    """iBUG-68 points (68, 2) of a frontal face in 256x256 crop pixels; ``opening`` (px) parts the inner
    lips, ``yaw`` (px) shifts the jaw contour sideways."""
    pts = np.zeros((68, 2), np.float32)
    t = np.linspace(np.pi, 0, 17)
    pts[0:17] = np.stack([128 + 110 * np.cos(t) + yaw, 120 + 120 * np.sin(t) * (t > 0) + 0 * t], 1)
    pts[17:27] = np.stack([np.linspace(50, 206, 10), np.full(10, 80.0)], 1)
    pts[27:36] = np.stack([np.r_[np.full(4, 128.0), np.linspace(108, 148, 5)], np.r_[np.linspace(95, 150, 4), np.full(5, 160.0)]], 1)
    pts[36:48] = np.stack([np.r_[np.linspace(70, 110, 6), np.linspace(146, 186, 6)], np.full(12, 105.0)], 1)
    a = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    pts[48:60] = np.stack([128 + 40 * np.cos(a), 195 + (12 + opening / 2) * np.sin(a)], 1)
    a = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    pts[60:68] = np.stack([128 + 28 * np.cos(a), 195 + (opening / 2) * np.sin(a)], 1)
    return pts


def write_synthetic_data(data_dir: str | Path, clips: int = 1, frames: int = 48, seed: int = 0) -> Path:
    """A prepared data folder of ``clips`` clips with ``frames`` frames each; returns ``data_dir``."""
    rng = np.random.default_rng(seed)
    data_dir = Path(data_dir)
    for c in range(clips):
        base = rng.integers(0, 256, (8, 8, 3)).astype(np.float32)
        small = base[None] + rng.normal(0, 20, (frames, 8, 8, 3))
        crops = np.clip(small.repeat(32, axis=1).repeat(32, axis=2), 0, 255).astype(np.uint8)
        openings = 20 * (1 + np.sin(np.arange(frames) / 3)) / 2
        landmarks = np.stack([template_landmarks(o, yaw=4 * np.sin(i / 7)) for i, o in enumerate(openings)])
        samples = (0.1 * rng.standard_normal(int(frames / FPS * 16000) + 1600)).astype(np.float32)
        states = rng.standard_normal((int(len(samples) / 16000 * 50), 5, 384)).astype(np.float16)
        meta = {"source": "synthetic", "fps": FPS, "num_frames": frames, "kept": frames, "segments": [[0, frames]],
                "skipped": []}
        write_shard(clips_dir(data_dir) / f"synthetic_{c:03d}", meta, crops=crops,
                    frame_index=np.arange(frames, dtype=np.int32), landmarks=landmarks.astype(np.float32),
                    crop_boxes=np.tile(np.array([0, 0, 256, 256], np.int32), (frames, 1)),
                    pose=np.zeros((frames, 3), np.float32), audio=samples, whisper=states, mel=log_mel(samples))
    return data_dir
