"""What an evaluation returns: one row of scores per pair (or the reason it could not be scored), the mean
row and notes, with their CSV, JSON and markdown forms. Shared by :mod:`.run` (which fills them) and
:mod:`.report` (which draws them)."""
from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .pairs import Clip, EvalPair

METRICS = ("psnr_face", "ssim_face", "psnr_mouth", "ssim_mouth", "lmd", "csim", "id_distance", "same_person",
           "fid", "lse_c", "lse_d", "sync_offset", "av_offset", "av_corr", "av_conf", "dub_fps")
COLUMNS = ("clip", "protocol", "frames", "fps", *METRICS, "note")


@dataclass
class ClipResult:
    """Scores of one pair (``row``: None where a metric does not apply, cannot be measured or its weights are
    missing; ``note`` says why for the AV offset) and the per-frame data the report draws: psnr_face float
    (T,) (NaN without a face), mouth opening of the generated clip and speech envelope (dB) float (T,), the
    face records of both clips (the report decodes the frames it shows again)."""

    pair: EvalPair
    row: dict[str, object]
    psnr_frames: np.ndarray
    mouth: np.ndarray
    envelope: np.ndarray
    generated: Clip
    source: Clip
    fid_features: tuple[np.ndarray, np.ndarray] | None = None


@dataclass(frozen=True)
class PairFailure:
    """A pair that could not be scored: its name, protocol and the one-line reason."""

    label: str
    protocol: str
    error: str

    @property
    def row(self) -> dict[str, object]:
        row: dict[str, object] = dict.fromkeys(COLUMNS)
        row.update(clip=self.label, protocol=self.protocol, frames=0, note=f"failed: {self.error}")
        return row


@dataclass
class EvalResult:
    """Every pair in input order (scored or failed), the mean row over the scored ones and notes on metrics
    that could not run."""

    outcomes: list[ClipResult | PairFailure]
    mean: dict[str, object]
    notes: list[str] = field(default_factory=list)

    @property
    def clips(self) -> list[ClipResult]:
        return [c for c in self.outcomes if isinstance(c, ClipResult)]

    @property
    def failures(self) -> list[PairFailure]:
        return [c for c in self.outcomes if isinstance(c, PairFailure)]

    @property
    def rows(self) -> list[dict[str, object]]:
        return [c.row for c in self.outcomes] + [self.mean]

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
        payload = {"clips": [c.row for c in self.outcomes], "mean": self.mean, "notes": self.notes}
        (out / "metrics.json").write_text(json.dumps(payload, indent=2, default=_json_value))
        return out / "metrics.csv", out / "metrics.json"


def _json_value(value: object) -> object:
    if isinstance(value, np.bool_):
        return bool(value)
    return float(value) if isinstance(value, np.generic) else str(value)


def format_value(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.3f}"
    return str(value)
