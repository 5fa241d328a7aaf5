"""A clip in sync by construction: a still real face whose mouth is opened, frame by frame, in proportion to
the loudness of real speech (the speech-band envelope that the AV offset measures)."""
from __future__ import annotations

import cv2
import numpy as np

from musetalk.eval.av_offset import speech_envelope

MAX_OPENING_PX = 14.0
MOUTH_DARK = (60, 25, 30)


def loudness(samples_16k: np.ndarray, fps: float, num_frames: int) -> np.ndarray:
    """float (num_frames,) in 0..1: the speech envelope between its 10th and 95th percentile, clipped."""
    env = speech_envelope(samples_16k, fps, num_frames)
    low, high = np.percentile(env, [10, 95])
    return np.clip((env - low) / (high - low), 0.0, 1.0)


def open_mouth(frame: np.ndarray, landmarks: np.ndarray, amount_px: float) -> np.ndarray:
    """uint8 (H, W, 3) RGB face with its 68 landmarks -> the same face with the lower lip and chin pulled down
    by up to ``amount_px`` pixels (most at the mouth centre, none at the corners) and the gap painted dark."""
    mouth = landmarks[60:68]
    cx, cy = mouth[:, 0].mean(), mouth[:, 1].mean()
    half_width = (mouth[:, 0].max() - mouth[:, 0].min()) / 2
    chin = landmarks[8, 1]
    h, w = frame.shape[:2]
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    across = np.sqrt(np.clip(1 - ((xs - cx) / (1.3 * half_width)) ** 2, 0, 1))
    below = np.clip(1 - (ys - cy) / (1.5 * (chin - cy)), 0, 1) * (ys >= cy)
    shift = amount_px * across * below
    out = cv2.remap(frame, xs, ys - shift, cv2.INTER_LINEAR)
    gap = (ys >= cy) & (ys < cy + amount_px * across * 0.8) & (np.abs(xs - cx) < half_width)
    out[gap] = MOUTH_DARK
    return out


def talking_frames(face: np.ndarray, landmarks: np.ndarray, openness: np.ndarray) -> list[np.ndarray]:
    """One frame per value of ``openness`` (0..1): the face with the mouth opened that much."""
    return [open_mouth(face, landmarks, MAX_OPENING_PX * float(o)) for o in openness]
