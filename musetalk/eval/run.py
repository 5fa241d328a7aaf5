"""``evaluate``: score pairs of (generated, source, audio) clips and write the table (and the report)."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import MuseTalkError
from ..face import FaceAnalyzer, crop_face, mouth_opening
from ..models.layout import SYNCNET_V2_FILE, resolve_models_dir
from ..models.syncnet_v2 import load_syncnet_v2
from .av_offset import estimate_offset, speech_envelope
from .csim import SAME_PERSON_DISTANCE, DlibFaceEmbedder, IdentityScore, identity_scores
from .fid import fid_from_features
from .image_metrics import mouth_box, region_scores
from .inception import WEIGHTS_NAME, FIDInception, load_fid_inception
from .lmd import frame_lmd
from .lse import lse
from .pairs import BadPair, Clip, EvalPair, check_lengths, load_clip, load_pair_audio, recorded_dub_fps, require_video
from .results import METRICS, ClipResult, EvalResult, PairFailure, format_value

log = logging.getLogger(__name__)

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


def identity_score(embedder: DlibFaceEmbedder, gen: Clip, src: Clip, n: int, protocol: str,
                   stride: int) -> IdentityScore | None:
    """CSIM and descriptor distance: reconstruction pairs frame i with source frame i; cross-audio compares
    every generated frame with the mean source identity. Every ``stride``-th frame is used."""
    frames = [i for i in range(0, n, stride) if gen.records[i].found]
    if protocol == "reconstruction":
        frames = [i for i in frames if src.records[i].found]
        if not frames:
            return None
        g = np.stack([embedder(gen.frames[i], gen.records[i].landmarks) for i in frames])
        s = np.stack([embedder(src.frames[i], src.records[i].landmarks) for i in frames])
        return identity_scores(g, s)
    src_idx = [i for i in range(0, len(src.frames), stride) if src.records[i].found]
    if not frames or not src_idx:
        return None
    ref = np.mean([embedder(src.frames[i], src.records[i].landmarks) for i in src_idx], axis=0)
    g = np.stack([embedder(gen.frames[i], gen.records[i].landmarks) for i in frames])
    return identity_scores(g, ref[None])


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
    row.update(dict.fromkeys(METRICS), note=None)
    psnr_frames = np.full(n, np.nan)
    if pair.protocol == "reconstruction":
        scores, psnr_frames = pixel_scores(gen, src, n)
        row.update(scores)
    if embedder is not None and (identity := identity_score(embedder, gen, src, n, pair.protocol, csim_stride)):
        row.update(csim=identity.cosine, id_distance=identity.distance, same_person=identity.same_person)
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
        row.update(av_offset=av.offset if av.measurable else None, av_corr=av.correlation, av_conf=av.confidence)
        if not av.measurable:
            row["note"] = f"AV offset not measurable: {av.problem}"
    row["dub_fps"] = pair.dub_fps if pair.dub_fps is not None else recorded_dub_fps(pair.generated)
    log.info("%s: %s", pair.label, ", ".join(f"{k} {format_value(row[k])}" for k in METRICS if row[k] is not None))
    return ClipResult(pair, row, psnr_frames, mouth, envelope, gen, src, features)


def mean_row(clips: Sequence[ClipResult]) -> dict[str, object]:
    """Mean over clips of each metric (clips where it is None, e.g. an AV offset that is not measurable, are
    left out); FID of the pooled features of all clips; same_person from the mean descriptor distance."""
    protocols = sorted({c.pair.protocol for c in clips})
    row: dict[str, object] = {"clip": "mean", "protocol": "+".join(protocols),
                              "frames": sum(int(c.row["frames"]) for c in clips), "fps": None}
    for key in METRICS:
        row[key] = _mean([c.row[key] for c in clips if c.row[key] is not None])
    if row["id_distance"] is not None:
        row["same_person"] = row["id_distance"] < SAME_PERSON_DISTANCE
    measured = sum(c.row["av_offset"] is not None for c in clips)
    row["note"] = f"AV offset measurable in {measured} of {len(clips)} clips"
    pooled = [c.fid_features for c in clips if c.fid_features is not None]
    if len(pooled) > 1:
        row["fid"] = fid_from_features(np.concatenate([p[0] for p in pooled]), np.concatenate([p[1] for p in pooled]))
    return row


def score_pairs(pairs: Sequence[EvalPair | BadPair], score) -> list[ClipResult | PairFailure]:
    """``score(pair) -> ClipResult`` for every pair, in order; a pair that fails with a :class:`MuseTalkError`
    (or could not be formed) becomes a :class:`PairFailure` and the others are still scored. When every pair
    fails, the first error is raised."""
    outcomes: list[ClipResult | PairFailure] = []
    first_error: MuseTalkError | None = None
    for pair in pairs:
        if isinstance(pair, BadPair):
            outcomes.append(PairFailure(pair.label, pair.protocol, str(pair.error)))
            first_error = first_error or pair.error
            continue
        try:
            outcomes.append(score(pair))
        except MuseTalkError as exc:
            log.error("%s not scored: %s", pair.label, exc)
            outcomes.append(PairFailure(pair.label, pair.protocol, str(exc)))
            first_error = first_error or exc
    if first_error is not None and not any(isinstance(o, ClipResult) for o in outcomes):
        raise first_error
    return outcomes


def evaluate(pairs: Sequence[EvalPair | BadPair], out_dir: str | os.PathLike | None = None,
             report_dir: str | os.PathLike | None = None, models_dir: str | os.PathLike | None = None,
             syncnet: torch.nn.Module | str | os.PathLike | None = None,
             inception: torch.nn.Module | str | os.PathLike | None = None, identity: bool = True,
             max_frames: int | None = None, csim_stride: int = 1, device: str = "cpu") -> EvalResult:
    """Score every pair; write ``metrics.csv``/``metrics.json`` to ``out_dir`` and the HTML report to
    ``report_dir`` when given. ``syncnet``/``inception``: a network, a weights file, or None for
    ``models/syncnet/syncnet_v2.model`` and ``models/fid/pt_inception-2015-12-05-6726825d.pth``; missing
    weights skip that metric with a note. ``identity``: CSIM with dlib's face descriptor. A pair that cannot be
    scored is reported in its row (``note``) while the others are scored."""
    if not pairs:
        raise ValueError("evaluate needs at least one pair")
    root = resolve_models_dir(models_dir)
    notes: list[str] = []
    sync_net = _model(syncnet, root / SYNCNET_V2_FILE, load_syncnet_v2, "LSE-C/LSE-D", notes)
    fid_net = _model(inception, root / "fid" / WEIGHTS_NAME, load_fid_inception, "FID", notes)
    embedder = DlibFaceEmbedder() if identity else None
    analyzer = FaceAnalyzer(backend="dlib", smooth=False)
    if embedder is not None:
        notes.append(f"CSIM: cosine of {embedder.name} face descriptors ({embedder.size}-d); same_person: mean "
                     f"descriptor distance id_distance < {SAME_PERSON_DISTANCE} (dlib's calibrated threshold)")
    outcomes = score_pairs(pairs, lambda p: evaluate_pair(p, analyzer, embedder, sync_net, fid_net, max_frames,
                                                          csim_stride, device))
    result = EvalResult(outcomes, mean_row([o for o in outcomes if isinstance(o, ClipResult)]), notes)
    if out_dir is not None:
        result.write(out_dir)
    if report_dir is not None:
        from .report import write_report

        write_report(result, report_dir)
    return result
