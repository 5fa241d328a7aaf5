"""``evaluate``: score pairs of (generated, source, audio) clips and write the table (and the report)."""
from __future__ import annotations

import itertools
import logging
import os
from dataclasses import dataclass, field
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


class _Features:
    """Inception features of face crops given one at a time, computed ``BATCH`` at once (the network's own
    batch, so the figures equal one call on all crops); only one batch of crops is held."""

    BATCH = 16

    def __init__(self, net: FIDInception, device: str) -> None:
        self.net, self.device = net, device
        self.pending: list[np.ndarray] = []
        self.done: list[np.ndarray] = []
        self.count = 0

    def add(self, crop: np.ndarray) -> None:
        self.pending.append(crop)
        self.count += 1
        if len(self.pending) == self.BATCH:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            self.done.append(self.net.features(np.stack(self.pending), device=self.device))
            self.pending = []

    def result(self) -> np.ndarray:
        """float (K, D) features of every crop added, in order."""
        self._flush()
        return np.concatenate(self.done)


@dataclass
class _Scores:
    """What the pass over a pair's frames gathers: per-frame region scores, descriptors, FID features."""

    n: int
    face: list = field(default_factory=list)
    mouth: list = field(default_factory=list)
    lmds: list = field(default_factory=list)
    gen_ids: list = field(default_factory=list)
    src_ids: list = field(default_factory=list)
    psnr_frames: np.ndarray = field(init=False)  # float (n,): face PSNR per frame, NaN where not scored

    def __post_init__(self) -> None:
        self.psnr_frames = np.full(self.n, np.nan)

    def pixel_row(self) -> dict[str, float | None]:
        """PSNR/SSIM (face crop box and mouth box of the source) and LMD over frames with a face in both."""
        return {"psnr_face": _mean([f[0] for f in self.face]), "ssim_face": _mean([f[1] for f in self.face]),
                "psnr_mouth": _mean([m[0] for m in self.mouth]), "ssim_mouth": _mean([m[1] for m in self.mouth]),
                "lmd": _mean(self.lmds)}

    def identity(self, protocol: str) -> IdentityScore | None:
        """CSIM and descriptor distance: reconstruction pairs frame i with source frame i; cross-audio compares
        every generated frame with the mean source identity."""
        if not self.gen_ids or not self.src_ids:
            return None
        if protocol == "reconstruction":
            return identity_scores(np.stack(self.gen_ids), np.stack(self.src_ids))
        return identity_scores(np.stack(self.gen_ids), np.mean(self.src_ids, axis=0)[None])


def _score_frames(pair: EvalPair, gen: Clip, src: Clip, n: int, embedder: DlibFaceEmbedder | None,
                  fid: tuple[_Features, _Features] | None, stride: int) -> _Scores:
    """One pass over the first ``n`` generated frames and every source frame, decoded one at a time: pixel
    scores and LMD (reconstruction), descriptors of every ``stride``-th frame, FID crops of frames with a face."""
    scores = _Scores(n)
    reconstruction = pair.protocol == "reconstruction"
    gen_frames = itertools.islice(gen.frames(), n)
    for i, (g, s) in enumerate(itertools.zip_longest(gen_frames, src.frames())):
        g_rec = gen.records[i] if g is not None else None
        s_rec = src.records[i] if s is not None else None
        if reconstruction and g is not None and s is not None and g_rec.found and s_rec.found:
            scores.face.append(region_scores(s, g, s_rec.crop_box))
            scores.mouth.append(region_scores(s, g, mouth_box(s_rec.landmarks, s.shape)))
            scores.lmds.append(frame_lmd(s_rec.landmarks, g_rec.landmarks, s_rec.crop_box))
            scores.psnr_frames[i] = scores.face[-1][0]
        if embedder is not None and i % stride == 0:
            if reconstruction:
                if g is not None and s is not None and g_rec.found and s_rec.found:
                    scores.gen_ids.append(embedder(g, g_rec.landmarks))
                    scores.src_ids.append(embedder(s, s_rec.landmarks))
            else:
                if g is not None and g_rec.found:
                    scores.gen_ids.append(embedder(g, g_rec.landmarks))
                if s is not None and s_rec.found:
                    scores.src_ids.append(embedder(s, s_rec.landmarks))
        if fid is not None:
            if s is not None and s_rec.found:
                fid[0].add(crop_face(s, s_rec))
            if g is not None and g_rec.found:
                fid[1].add(crop_face(g, g_rec))
    return scores


def evaluate_pair(pair: EvalPair, analyzer: FaceAnalyzer, embedder: DlibFaceEmbedder | None,
                  syncnet: torch.nn.Module | None, inception: FIDInception | None, max_frames: int | None = None,
                  csim_stride: int = 1, device: str = "cpu") -> ClipResult:
    """All metrics of one pair. The frames are streamed (face analysis; one pass for the pixel, identity and
    FID metrics; one for LSE), never all held: memory is flat in the clips' length."""
    require_video(pair.generated)
    gen = load_clip(pair.generated, analyzer, max_frames)
    src = load_clip(pair.source, analyzer, max_frames)
    audio = load_pair_audio(pair)
    n = check_lengths(pair, gen, src, audio)
    row: dict[str, object] = {"clip": pair.label, "protocol": pair.protocol, "frames": n, "fps": gen.fps}
    row.update(dict.fromkeys(METRICS), note=None)
    fid = None if inception is None else (_Features(inception, device), _Features(inception, device))
    scores = _score_frames(pair, gen, src, n, embedder, fid, csim_stride)
    if pair.protocol == "reconstruction":
        row.update(scores.pixel_row())
    if identity := scores.identity(pair.protocol):
        row.update(csim=identity.cosine, id_distance=identity.distance, same_person=identity.same_person)
    features = None
    if fid is not None and min(fid[0].count, fid[1].count) >= 2:
        features = (fid[0].result(), fid[1].result())
        row["fid"] = fid_from_features(*features)
    found = gen.found[:n]
    if syncnet is not None:
        boxes = np.stack([r.box for r in gen.records[:n]])
        boxes[~found] = boxes[found].mean(axis=0)
        scores_sync = lse(syncnet, itertools.islice(gen.frames(), n), boxes, audio, gen.fps, device=device)
        row.update(lse_c=scores_sync.confidence, lse_d=scores_sync.distance, sync_offset=scores_sync.offset)
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
    return ClipResult(pair, row, scores.psnr_frames, mouth, envelope, gen, src, features)


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
    """``score(pair) -> ClipResult`` for every pair, in order; a pair that fails (a :class:`MuseTalkError`, any
    other error as an internal one, or a pair that could not be formed) becomes a :class:`PairFailure` and the
    others are still scored. When every pair fails, the first error is raised."""
    outcomes: list[ClipResult | PairFailure] = []
    first_error: Exception | None = None
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
        except Exception as exc:  # a bug met by one pair: reported in its row (traceback logged), the others go on
            log.error("%s not scored: internal error", pair.label, exc_info=exc)
            outcomes.append(PairFailure(pair.label, pair.protocol, f"internal error: {exc.__class__.__name__}: {exc}"))
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
