"""``evaluate``: score pairs of (generated, source, audio) clips and write the table (and the report)."""
from __future__ import annotations

import csv
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..face import FaceAnalyzer, crop_face, mouth_opening
from ..models.layout import resolve_models_dir
from ..models.syncnet_v2 import load_syncnet_v2
from .av_offset import estimate_offset, speech_envelope
from .csim import DlibFaceEmbedder, cosine_similarity
from .fid import fid_from_features
from .image_metrics import mouth_box, region_scores
from .inception import WEIGHTS_NAME, FIDInception, load_fid_inception
from .lmd import frame_lmd
from .lse import lse
from .pairs import Clip, EvalPair, check_lengths, load_clip, load_pair_audio, recorded_dub_fps, require_video

log = logging.getLogger(__name__)

SYNCNET_NAME = "syncnet_v2.model"
METRICS = ("psnr_face", "ssim_face", "psnr_mouth", "ssim_mouth", "lmd", "csim", "fid", "lse_c", "lse_d",
           "sync_offset", "av_offset", "av_corr", "dub_fps")
COLUMNS = ("clip", "protocol", "frames", "fps", *METRICS)


@dataclass
class ClipResult:
    """Scores of one pair (``row``: None where a metric does not apply or its weights are missing) and the
    per-frame data the report draws: psnr_face float (T,) (NaN without a face), mouth opening of the
    generated clip and speech envelope (dB) float (T,), the frames and records of both clips."""

    pair: EvalPair
    row: dict[str, object]
    psnr_frames: np.ndarray
    mouth: np.ndarray
    envelope: np.ndarray
    generated: Clip
    source: Clip
    fid_features: tuple[np.ndarray, np.ndarray] | None = None


@dataclass
class EvalResult:
    """All clips, the mean row and notes on metrics that could not run."""

    clips: list[ClipResult]
    mean: dict[str, object]
    notes: list[str] = field(default_factory=list)

    @property
    def rows(self) -> list[dict[str, object]]:
        return [c.row for c in self.clips] + [self.mean]

    def to_markdown(self) -> str:
        """The table as GitHub markdown, 3 decimals, "-" for metrics that do not apply."""
        lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        lines += ["| " + " | ".join(format_value(row.get(k)) for k in COLUMNS) + " |" for row in self.rows]
        return "\n".join(lines + [f"\nnote: {n}" for n in self.notes])

    def write(self, out_dir: str | os.PathLike) -> tuple[Path, Path]:
        """``metrics.csv`` and ``metrics.json`` in ``out_dir`` (created)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "metrics.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows({k: "" if row.get(k) is None else row.get(k) for k in COLUMNS} for row in self.rows)
        payload = {"clips": [c.row for c in self.clips], "mean": self.mean, "notes": self.notes}
        (out / "metrics.json").write_text(json.dumps(payload, indent=2, default=_json_value))
        return out / "metrics.csv", out / "metrics.json"


def _json_value(value: object) -> object:
    return float(value) if isinstance(value, np.generic) else str(value)


def format_value(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def _model(value: torch.nn.Module | str | os.PathLike | None, default: Path, loader, label: str,
           notes: list[str]) -> torch.nn.Module | None:
    """A network given directly, loaded from a path, or from the models folder; None (with a note) when absent."""
    if isinstance(value, torch.nn.Module):
        return value.eval()
    path = Path(value) if value is not None else default
    if not path.is_file():
        notes.append(f"{label} skipped: weights not found at {path} (put the file there or pass its path)")
        log.warning(notes[-1])
        return None
    return loader(path)


def pixel_scores(gen: Clip, src: Clip, n: int) -> tuple[dict[str, float | None], np.ndarray]:
    """Reconstruction metrics over frames with a face in both clips: PSNR/SSIM (face crop box and mouth box
    of the source) and LMD; plus per-frame face PSNR float (n,) (NaN where skipped)."""
    face, mouth, lmds = [], [], []
    psnr_frames = np.full(n, np.nan)
    for i in range(n):
        s, g = src.records[i], gen.records[i]
        if not (s.found and g.found):
            continue
        face.append(region_scores(src.frames[i], gen.frames[i], s.crop_box))
        mouth.append(region_scores(src.frames[i], gen.frames[i], mouth_box(s.landmarks, src.frames[i].shape)))
        lmds.append(frame_lmd(s.landmarks, g.landmarks, s.crop_box))
        psnr_frames[i] = face[-1][0]
    return {"psnr_face": _mean([f[0] for f in face]), "ssim_face": _mean([f[1] for f in face]),
            "psnr_mouth": _mean([m[0] for m in mouth]), "ssim_mouth": _mean([m[1] for m in mouth]),
            "lmd": _mean(lmds)}, psnr_frames


def identity_score(embedder: DlibFaceEmbedder, gen: Clip, src: Clip, n: int, protocol: str, stride: int) -> float | None:
    """CSIM: reconstruction pairs frame i with source frame i; cross-audio compares every generated frame with
    the mean source identity. Every ``stride``-th frame is used."""
    frames = [i for i in range(0, n, stride) if gen.records[i].found]
    if protocol == "reconstruction":
        frames = [i for i in frames if src.records[i].found]
        if not frames:
            return None
        g = np.stack([embedder(gen.frames[i], gen.records[i].landmarks) for i in frames])
        s = np.stack([embedder(src.frames[i], src.records[i].landmarks) for i in frames])
        return float(cosine_similarity(g, s).mean())
    src_idx = [i for i in range(0, len(src.frames), stride) if src.records[i].found]
    if not frames or not src_idx:
        return None
    ref = np.mean([embedder(src.frames[i], src.records[i].landmarks) for i in src_idx], axis=0)
    g = np.stack([embedder(gen.frames[i], gen.records[i].landmarks) for i in frames])
    return float(cosine_similarity(g, ref[None]).mean())


def face_crops(clip: Clip, limit: int | None = None) -> np.ndarray:
    """uint8 (K, 256, 256, 3) RGB crops of the frames with a face (the first ``limit`` frames)."""
    return np.stack([crop_face(f, r) for f, r in list(zip(clip.frames, clip.records))[:limit] if r.found])


def evaluate_pair(pair: EvalPair, analyzer: FaceAnalyzer, embedder: DlibFaceEmbedder | None,
                  syncnet: torch.nn.Module | None, inception: FIDInception | None, max_frames: int | None = None,
                  csim_stride: int = 1, device: str = "cpu") -> ClipResult:
    """All metrics of one pair."""
    require_video(pair.generated)
    gen = load_clip(pair.generated, analyzer, max_frames)
    src = load_clip(pair.source, analyzer, max_frames)
    audio = load_pair_audio(pair)
    n = check_lengths(pair, gen, src, audio)
    row: dict[str, object] = {"clip": pair.label, "protocol": pair.protocol, "frames": n, "fps": gen.fps}
    row.update(dict.fromkeys(METRICS))
    psnr_frames = np.full(n, np.nan)
    if pair.protocol == "reconstruction":
        scores, psnr_frames = pixel_scores(gen, src, n)
        row.update(scores)
    if embedder is not None:
        row["csim"] = identity_score(embedder, gen, src, n, pair.protocol, csim_stride)
    features = None
    if inception is not None:
        crops_src, crops_gen = face_crops(src), face_crops(gen, n)
        if min(len(crops_src), len(crops_gen)) >= 2:
            features = (inception.features(crops_src, device=device), inception.features(crops_gen, device=device))
            row["fid"] = fid_from_features(*features)
    found = gen.found[:n]
    if syncnet is not None:
        boxes = np.stack([r.box for r in gen.records[:n]])
        boxes[~found] = boxes[found].mean(axis=0)
        scores = lse(syncnet, gen.frames[:n], boxes, audio, gen.fps, device=device)
        row.update(lse_c=scores.confidence, lse_d=scores.distance, sync_offset=scores.offset)
    mouth = np.array([mouth_opening(r.landmarks) if r.found else np.nan for r in gen.records[:n]])
    mouth[~found] = np.nanmean(mouth)
    envelope = speech_envelope(audio, gen.fps, n)
    if n >= 60:
        av = estimate_offset(mouth, envelope)
        row.update(av_offset=av.offset, av_corr=av.correlation)
    row["dub_fps"] = pair.dub_fps if pair.dub_fps is not None else recorded_dub_fps(pair.generated)
    log.info("%s: %s", pair.label, ", ".join(f"{k} {format_value(row[k])}" for k in METRICS if row[k] is not None))
    return ClipResult(pair, row, psnr_frames, mouth, envelope, gen, src, features)


def mean_row(clips: Sequence[ClipResult]) -> dict[str, object]:
    """Mean over clips of each metric; FID of the pooled features of all clips."""
    protocols = sorted({c.pair.protocol for c in clips})
    row: dict[str, object] = {"clip": "mean", "protocol": "+".join(protocols),
                              "frames": sum(int(c.row["frames"]) for c in clips), "fps": None}
    for key in METRICS:
        row[key] = _mean([c.row[key] for c in clips if c.row[key] is not None])
    pooled = [c.fid_features for c in clips if c.fid_features is not None]
    if len(pooled) > 1:
        row["fid"] = fid_from_features(np.concatenate([p[0] for p in pooled]), np.concatenate([p[1] for p in pooled]))
    return row


def evaluate(pairs: Sequence[EvalPair], out_dir: str | os.PathLike | None = None,
             report_dir: str | os.PathLike | None = None, models_dir: str | os.PathLike | None = None,
             syncnet: torch.nn.Module | str | os.PathLike | None = None,
             inception: torch.nn.Module | str | os.PathLike | None = None, identity: bool = True,
             max_frames: int | None = None, csim_stride: int = 1, device: str = "cpu") -> EvalResult:
    """Score every pair; write ``metrics.csv``/``metrics.json`` to ``out_dir`` and the HTML report to
    ``report_dir`` when given. ``syncnet``/``inception``: a network, a weights file, or None for
    ``models/syncnet/syncnet_v2.model`` and ``models/fid/pt_inception-2015-12-05-6726825d.pth``; missing
    weights skip that metric with a note. ``identity``: CSIM with dlib's face descriptor."""
    if not pairs:
        raise ValueError("evaluate needs at least one pair")
    root = resolve_models_dir(models_dir)
    notes: list[str] = []
    sync_net = _model(syncnet, root / "syncnet" / SYNCNET_NAME, load_syncnet_v2, "LSE-C/LSE-D", notes)
    fid_net = _model(inception, root / "fid" / WEIGHTS_NAME, load_fid_inception, "FID", notes)
    embedder = DlibFaceEmbedder() if identity else None
    analyzer = FaceAnalyzer(backend="dlib", smooth=False)
    clips = [evaluate_pair(p, analyzer, embedder, sync_net, fid_net, max_frames, csim_stride, device) for p in pairs]
    result = EvalResult(clips, mean_row(clips), notes)
    if out_dir is not None:
        result.write(out_dir)
    if report_dir is not None:
        from .report import write_report

        write_report(result, report_dir)
    return result
