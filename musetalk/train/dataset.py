"""Training samples from prepared shards: n consecutive frames of one clip, each with a reference frame
(SIS or random), its audio prompt, the mouth box, and the SyncNet mel window of the sample.

Items are addressed by ``(epoch, batch_number, item)`` tuples from :class:`EpochBatchSampler`, and all
randomness of an item is seeded by (seed, epoch, item): a resumed run sees exactly the same samples.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..audio.features import gather_windows, window_index
from .mel import mel_window
from .sampling import normalize_landmarks, random_reference, sis_reference
from .shards import FPS, ClipShard, DataError

MOUTH = slice(48, 68)
SYNC_FRAMES = 16


def prompt_window(states: np.ndarray, frame: int, fps: float = FPS) -> np.ndarray:
    """Whisper hidden states (F, 5, 384) -> the (50, 384) prompt of video ``frame``, as
    :func:`musetalk.audio.frame_windows` builds it (10 feature frames x 5 layers, zero-padded)."""
    return gather_windows(states, window_index(frame, frame + 1, fps))[0]


def mouth_boxes(normalized: np.ndarray, padding: int) -> np.ndarray:
    """Normalised landmarks (F, 68, 2) in crop pixels -> int64 (F, 4) x1,y1,x2,y2 mouth boxes padded
    by ``padding`` px, clipped to the crop and at least 8 px wide/high."""
    mouth = normalized[:, MOUTH]
    lo = np.floor(mouth.min(axis=1) - padding)
    hi = np.ceil(mouth.max(axis=1) + padding)
    lo = np.clip(lo, 0, 248)
    hi = np.clip(np.maximum(hi, lo + 8), 8, 256)
    return np.concatenate([lo, hi], axis=1).astype(np.int64)


def to_tensor(crops: np.ndarray, size: int = 256) -> torch.Tensor:
    """uint8 (F, 256, 256, 3) -> float32 (F, 3, size, size) in [-1, 1] (area-resized when size != 256)."""
    crops = np.asarray(crops)
    if size != crops.shape[1]:
        crops = np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA) for c in crops])
    return torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


@dataclass
class ClipIndex:
    """One clip's usable rows: ``train`` rows (the reference pool), window starts, held-out rows."""

    shard: ClipShard
    normalized: np.ndarray
    train_rows: np.ndarray
    starts: np.ndarray
    holdout_rows: np.ndarray


def index_clip(shard: ClipShard, n_frames: int, min_face_size: float, holdout_fraction: float) -> ClipIndex:
    """Split a clip: its last ``holdout_fraction`` of rows are held out; windows of ``n_frames``
    consecutive rows lie inside one segment, in the training part, with faces >= ``min_face_size`` px."""
    kept = shard.meta["kept"]
    cut = kept - int(round(holdout_fraction * kept))
    big = (shard.crop_boxes[:, 3] - shard.crop_boxes[:, 1]) >= min_face_size
    starts = []
    for s, e in shard.segments:
        for run_start, run_stop in _runs(big[s:min(e, cut)]):
            starts += range(s + run_start, s + run_stop - n_frames + 1)
    train_rows = np.flatnonzero(big[:cut])
    holdout = np.arange(cut, kept)
    return ClipIndex(shard, normalize_landmarks(shard.landmarks, shard.crop_boxes), train_rows,
                     np.asarray(starts, np.int64), holdout[big[cut:]])


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2], edges[1::2]))


class FrameWindows(Dataset):
    """Samples of ``n_frames`` consecutive frames over every clip.

    An item is a dict: target and reference float32 (F, 3, S, S) in [-1, 1] (S = ``image_size``, 256 as
    officially; smaller only for quick CPU runs); prompts float32 (F, 50, 384) (before the positional
    encoding); mouth_box int64 (F, 4) in pixels of the S x S image; mel float32 (1, 80, 52) for the
    sample's first frame (SyncNet); batch int (the sampler's position, for resume).
    """

    def __init__(self, shards: list[ClipShard], n_frames: int = 1, sample_method: str = "sis", top_k_ratio: float = 0.51,
                 min_gap: int = 5, min_face_size: float = 0, holdout_fraction: float = 0.1, mouth_padding: int = 10,
                 seed: int = 0, image_size: int = 256) -> None:
        if sample_method not in ("sis", "random"):
            raise DataError(f"data.sample_method must be sis or random, got {sample_method!r}")
        self.clips = [index_clip(s, n_frames, min_face_size, holdout_fraction) for s in shards]
        self.offsets = np.cumsum([0] + [len(c.starts) for c in self.clips])
        if self.offsets[-1] == 0:
            raise DataError(f"no training window of {n_frames} consecutive usable frames in {len(shards)} prepared clips "
                            f"(faces >= {min_face_size} px); add data or lower data.min_face_size / data.n_sample_frames")
        self.n_frames, self.sample_method, self.top_k_ratio = n_frames, sample_method, top_k_ratio
        self.min_gap, self.mouth_padding, self.seed, self.image_size = min_gap, mouth_padding, seed, image_size

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def locate(self, item: int) -> tuple[ClipIndex, int]:
        clip = int(np.searchsorted(self.offsets, item, side="right") - 1)
        return self.clips[clip], int(self.clips[clip].starts[item - self.offsets[clip]])

    def reference_rows(self, clip: ClipIndex, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A reference row (from the clip's training rows) for every target row."""
        pool = clip.train_rows
        targets = np.searchsorted(pool, rows)
        if self.sample_method == "sis":
            picks = [sis_reference(clip.normalized[pool], int(t), rng, self.top_k_ratio, self.n_frames, self.min_gap)
                     for t in targets]
        else:
            picks = [random_reference(len(pool), int(t), rng, self.min_gap) for t in targets]
        return pool[np.asarray(picks)]

    def __getitem__(self, key: tuple[int, int, int]) -> dict:
        epoch, batch, item = key
        clip, start = self.locate(item)
        rng = np.random.default_rng([self.seed, epoch, item])
        rows = np.arange(start, start + self.n_frames)
        return self.sample(clip, rows, self.reference_rows(clip, rows, rng)) | {"batch": batch}

    def sample(self, clip: ClipIndex, rows: np.ndarray, ref_rows: np.ndarray) -> dict:
        shard = clip.shard
        frames = shard.frame_index[rows]
        boxes = mouth_boxes(clip.normalized[rows], self.mouth_padding) * self.image_size // 256
        return {
            "target": to_tensor(shard.crops[rows], self.image_size),
            "reference": to_tensor(shard.crops[ref_rows], self.image_size),
            "prompts": torch.from_numpy(np.stack([prompt_window(shard.whisper, int(f)) for f in frames])),
            "mouth_box": torch.from_numpy(boxes),
            "mel": torch.from_numpy(mel_window(np.asarray(shard.mel), int(frames[0]))[None].copy()),
        }

    def holdout(self, clip: int = 0, limit: int | None = None) -> dict:
        """Held-out frames of one clip as one batch-like dict (F = number of frames); every frame's
        reference is the clip's last training frame (fixed, so errors compare across steps)."""
        index = self.clips[clip]
        rows = index.holdout_rows[:limit]
        if len(rows) == 0:
            raise DataError(f"clip {index.shard.name} has no held-out frames; raise data.holdout_fraction")
        refs = np.full(len(rows), index.train_rows[-1])
        return self.sample(index, rows, refs)


class EpochBatchSampler(Sampler):
    """Endless batches of ``(epoch, batch_number, item)`` keys: a fresh seeded permutation per epoch,
    this process's share (``rank::world``), incomplete batches dropped. Starts at ``(epoch, batch)``,
    so a resumed run continues with exactly the batches the interrupted one would have seen."""

    def __init__(self, num_items: int, batch_size: int, seed: int, rank: int = 0, world: int = 1,
                 epoch: int = 0, batch: int = 0) -> None:
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.rank, self.world, self.epoch, self.batch = rank, world, epoch, batch
        if self.batches_per_epoch() == 0:
            raise DataError(f"{num_items} training windows are fewer than one batch of {batch_size} per process "
                            f"x {world} processes; lower data.batch_size")

    def batches_per_epoch(self) -> int:
        return len(range(self.rank, self.num_items, self.world)) // self.batch_size

    def position(self, consumed: int) -> tuple[int, int]:
        """(epoch, batch) after ``consumed`` batches counted from epoch 0."""
        return divmod(consumed, self.batches_per_epoch())

    def __iter__(self):
        epoch, batch = self.epoch, self.batch
        while True:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.num_items)[self.rank :: self.world]
            for b in range(batch, self.batches_per_epoch()):
                items = order[b * self.batch_size : (b + 1) * self.batch_size]
                yield [(epoch, epoch * self.batches_per_epoch() + b, int(i)) for i in items]
            epoch, batch = epoch + 1, 0
