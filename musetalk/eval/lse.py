"""LSE-C and LSE-D: the SyncNet lip-sync protocol of the literature (syncnet_python's ``run_pipeline`` crop
+ ``SyncNetInstance.evaluate``, as Wav2Lip's evaluation scripts use it).

1. Video at 25 fps; per frame a square face crop around the detector box: half size s and centre median-filtered
   over 13 frames, rows cy - s .. cy + 1.8 s, columns cx - 1.4 s .. cx + 1.4 s, frame padded with grey 110,
   resized to 224 x 224 (bilinear), BGR.
2. Audio at 16 kHz in 16-bit integer scale -> MFCC (13 x 100 per second).
3. Window i (i < min(frames, samples / 640) - 5): frames i .. i+4 against MFCC steps 4i .. 4i+19.
4. Distances d[i, j] = |v_i - a_{i+j-15}| for j = 0 .. 30 (audio embeddings outside the clip are zero),
   averaged over i -> mean curve; offset = 15 - argmin, LSE-D = min, LSE-C = median - min.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable, Iterator

import cv2
import numpy as np
import torch
from scipy.signal import medfilt

from ..errors import MuseTalkError
from .mfcc import mfcc

log = logging.getLogger(__name__)

SYNC_FPS = 25
CROP_SIZE = 224
CROP_SCALE = 0.4
PAD_VALUE = 110
WINDOW = 5
MFCC_PER_FRAME = 4
MFCC_WINDOW = 20
VSHIFT = 15
MEDIAN_KERNEL = 13


@dataclass(frozen=True)
class SyncScores:
    """``offset`` in frames (syncnet_python sign: positive when the audio leads the video), ``distance``
    (LSE-D, lower is better), ``confidence`` (LSE-C, higher is better), ``curve``: mean distance per
    candidate shift, float (2 * vshift + 1,)."""

    offset: int
    distance: float
    confidence: float
    curve: np.ndarray


def resample_to_25fps(num_frames: int, fps: float) -> np.ndarray:
    """Indices of the frames nearest to a 25 fps grid (what ``ffmpeg -r 25`` keeps), int (M,)."""
    count = int(np.floor(num_frames * SYNC_FPS / fps + 1e-6))
    return np.minimum(np.floor(np.arange(count) * fps / SYNC_FPS + 1e-6).astype(int), num_frames - 1)


def crop_boxes(boxes: np.ndarray) -> np.ndarray:
    """Detector boxes float (T, 4) x1,y1,x2,y2 -> SyncNet crop boxes float (T, 4) in full-frame pixels
    (median filter with zero padding at the ends, as the original; shorter kernel for clips under 13 frames)."""
    kernel = min(MEDIAN_KERNEL, len(boxes) - 1 + len(boxes) % 2)
    half = medfilt(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) / 2, kernel)
    cx = medfilt((boxes[:, 0] + boxes[:, 2]) / 2, kernel)
    cy = medfilt((boxes[:, 1] + boxes[:, 3]) / 2, kernel)
    grow = 1 + CROP_SCALE
    return np.stack([cx - half * grow, cy - half, cx + half * grow, cy + half * (1 + 2 * CROP_SCALE)], axis=1)


def crop_face(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) RGB frame + crop box -> uint8 (224, 224, 3) BGR crop; outside the frame is grey 110."""
    pad = int(max(box[2] - box[0], box[3] - box[1])) + 1
    padded = cv2.copyMakeBorder(frame[..., ::-1], pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    x1, y1, x2, y2 = (int(v + pad) for v in box)
    return cv2.resize(padded[y1:y2, x1:x2], (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_LINEAR)


def mfcc_for_syncnet(samples_16k: np.ndarray) -> np.ndarray:
    """float32 (N,) 16 kHz in [-1, 1] -> float32 (13, M) MFCCs of the 16-bit integer signal."""
    pcm = np.clip(np.round(samples_16k * 32768.0), -32768, 32767)
    return mfcc(pcm, 16000).T.astype(np.float32)


def window_count(num_frames: int, num_samples: int) -> int:
    """Number of 5-frame windows the protocol scores (it drops the last possible one, like the original)."""
    return min(num_frames, num_samples // 640) - WINDOW


@torch.no_grad()
def embed(net: torch.nn.Module, crops: Iterable[np.ndarray], samples_16k: np.ndarray, batch_size: int = 20,
          device: str = "cpu", num_crops: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """BGR crops uint8 (T, 224, 224, 3) at 25 fps + audio -> video and audio embeddings float32 (N, D) each.
    ``crops``: an array, or an iterator of ``num_crops`` crops read once, in order (only the crops of one
    batch of windows are held)."""
    total = len(crops) if num_crops is None else num_crops
    count = window_count(total, len(samples_16k))
    if count < 1:
        raise MuseTalkError(f"clip too short for SyncNet scoring: {total} frames at 25 fps; give at least 6 frames")
    ceps = torch.from_numpy(mfcc_for_syncnet(samples_16k))
    net = net.to(device).eval()
    pending, held = iter(crops), []
    v_out, a_out = [], []
    for start in range(0, count, batch_size):
        idx = range(start, min(count, start + batch_size))
        while len(held) < len(idx) + WINDOW - 1:  # held[0] is crop ``start``
            held.append(next(pending))
        video = torch.from_numpy(np.stack(held)).permute(3, 0, 1, 2).float()  # (3, T, 224, 224)
        clips = torch.stack([video[:, i - start:i - start + WINDOW] for i in idx]).to(device)
        mels = torch.stack([ceps[None, :, i * MFCC_PER_FRAME:i * MFCC_PER_FRAME + MFCC_WINDOW] for i in idx]).to(device)
        v_out.append(net.forward_lip(clips).float().cpu())
        a_out.append(net.forward_aud(mels).float().cpu())
        held = held[len(idx):]
    return torch.cat(v_out).numpy(), torch.cat(a_out).numpy()


def shift_distances(video: np.ndarray, audio: np.ndarray, vshift: int = VSHIFT) -> np.ndarray:
    """float (N, D) video and audio embeddings -> float (N, 2 vshift + 1): entry [i, j] is the distance of
    video window i to audio window i + j - vshift (zero vectors outside 0..N-1; torch's pairwise eps 1e-6)."""
    padded = np.concatenate([np.zeros((vshift, audio.shape[1])), audio, np.zeros((vshift, audio.shape[1]))])
    n = len(video)  # one shift at a time: (N, D) temporaries, not (N, 2 vshift + 1, D)
    return np.stack([np.linalg.norm(video - padded[j:j + n] + 1e-6, axis=1) for j in range(2 * vshift + 1)], axis=1)


def scores_from_distances(distances: np.ndarray, vshift: int = VSHIFT) -> SyncScores:
    """(N, 2 vshift + 1) distances -> offset, LSE-D and LSE-C of the clip."""
    curve = distances.mean(axis=0)
    best = int(np.argmin(curve))
    return SyncScores(offset=vshift - best, distance=float(curve[best]),
                      confidence=float(np.median(curve) - curve[best]), curve=curve)


def lse(net: torch.nn.Module, frames: Iterable[np.ndarray], boxes: np.ndarray, samples_16k: np.ndarray, fps: float,
        vshift: int = VSHIFT, batch_size: int = 20, device: str = "cpu") -> SyncScores:
    """LSE of a talking-face clip: its uint8 (H, W, 3) RGB frames (a list, or an iterator read once, in
    order), one face box per frame float (T, 4), the speech float32 (N,) at 16 kHz starting with frame 0,
    the frame rate."""
    keep = resample_to_25fps(len(boxes), fps) if abs(fps - SYNC_FPS) > 1e-3 else np.arange(len(boxes))
    boxes25 = crop_boxes(boxes[keep].astype(np.float64))
    video, audio = embed(net, _crops(frames, keep, boxes25), samples_16k, batch_size, device, num_crops=len(keep))
    scores = scores_from_distances(shift_distances(video, audio, vshift), vshift)
    log.debug("SyncNet: offset %d, LSE-D %.3f, LSE-C %.3f over %d windows", scores.offset, scores.distance,
              scores.confidence, len(video))
    return scores


def _crops(frames: Iterable[np.ndarray], keep: np.ndarray, boxes25: np.ndarray) -> Iterator[np.ndarray]:
    """The SyncNet crop of frame ``keep[j]`` with box ``boxes25[j]`` for every j, frames read in order
    (``keep`` never decreases: a frame is cropped as often as the 25 fps grid keeps it)."""
    j = 0
    for index, frame in enumerate(frames):
        while j < len(keep) and keep[j] == index:
            yield crop_face(frame, boxes25[j])
            j += 1
        if j == len(keep):
            return
