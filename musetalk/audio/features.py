"""Whisper encoder features and their per-video-frame windows, as MuseTalk computes them.

Whisper yields 50 feature frames per second. Each video frame i takes 10 consecutive feature frames
(all 5 hidden states each) starting at floor(i * 50 / fps) in a zero-padded sequence, flattened to
(50, 384). Unlike the official code, fps is NOT truncated to an integer: 29.97 fps video gets
floor(seconds * 29.97) frames whose windows stay aligned with the audio.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .load import SAMPLE_RATE

FEATURE_RATE = 50
SEGMENT_SAMPLES = 30 * SAMPLE_RATE
PAD_LEFT = 2
PAD_RIGHT = 2
WINDOW = 2 * (PAD_LEFT + PAD_RIGHT + 1)


def frame_count(num_samples: int, fps: float) -> int:
    """Video frames covered by ``num_samples`` of 16 kHz audio: floor(seconds x fps)."""
    return math.floor((num_samples / SAMPLE_RATE) * fps)


@torch.inference_mode()
def whisper_hidden_states(encoder, extractor, samples: np.ndarray, device, dtype: torch.dtype) -> np.ndarray:
    """16 kHz mono float32 (N,) -> float32 (floor(N / 16000 * 50), L + 1, D): every encoder hidden state
    (embedding output and each layer's output) per 20 ms feature frame. Audio is encoded in 30 s segments."""
    outputs = []
    for start in range(0, max(len(samples), 1), SEGMENT_SAMPLES):
        segment = samples[start : start + SEGMENT_SAMPLES]
        mel = extractor(segment, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
        hidden = encoder(mel.to(device=device, dtype=dtype), output_hidden_states=True).hidden_states
        outputs.append(torch.stack(hidden, dim=2)[0].float().cpu())
    states = torch.cat(outputs, dim=0)
    return states[: math.floor((len(samples) / SAMPLE_RATE) * FEATURE_RATE)].numpy()


def first_feature_frame(frame: int, fps: float) -> int:
    """Feature frame where the window of video ``frame`` starts: floor(frame x 50 / fps) - 2 x ceil(50 / fps)
    (negative near the start: the window reaches into the zero padding)."""
    step = FEATURE_RATE / fps
    return math.floor(frame * step) - math.ceil(step) * PAD_LEFT


def window_index(start: int, stop: int, fps: float) -> np.ndarray:
    """int64 (stop - start, 10): the feature frames of the windows of video frames ``start..stop-1``, the same
    for the offline features, the streamed ones and the training samples."""
    starts = np.array([first_feature_frame(i, fps) for i in range(start, stop)], dtype=np.int64)
    return starts.reshape(-1, 1) + np.arange(WINDOW)[None, :]


def gather_windows(states: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Hidden states (F, S, D) and feature-frame indices int (N, 10) -> prompts float32 (N, 10 x S, D);
    row ``t * S + s`` is hidden state ``s`` of the window's t-th feature frame, zeros outside 0..F-1."""
    valid = (index >= 0) & (index < len(states))
    windows = states[np.clip(index, 0, max(len(states) - 1, 0))].astype(np.float32)
    windows[~valid] = 0.0
    _, num_states, width = states.shape
    return windows.reshape(len(index), WINDOW * num_states, width)


def frame_windows(states: np.ndarray, num_samples: int, fps: float, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Hidden states (F, S, D) of ``num_samples`` audio -> prompts float32 (stop - start, 10 * S, D) for video
    frames ``start..stop-1`` (default: all T = floor(seconds x fps) frames).

    Row ``t * S + s`` of a prompt is hidden state ``s`` of feature frame ``t`` of the window; frame i's
    window starts at feature frame floor(i * 50 / fps) - 2 * ceil(50 / fps) (zeros outside the audio).
    """
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    count = frame_count(num_samples, fps)
    stop = count if stop is None else min(stop, count)
    return gather_windows(states, window_index(start, stop, fps))
