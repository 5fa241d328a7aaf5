"""The evaluation report: one HTML page (``index.html``) with the metrics table, and per clip side-by-side
strips (source / generated / amplified difference of the face crop; no difference against a photo source,
where it would only show the mouth and the pose differing) at its worst and best frames and a plot of the
mouth opening against the speech envelope over time. Images are PNG files beside the page."""
from __future__ import annotations

import html
import logging
import os
from pathlib import Path

import cv2
import numpy as np

from ..face import crop_face
from ..video.io import is_image
from .results import COLUMNS, ClipResult, EvalResult, format_value

log = logging.getLogger(__name__)

DIFF_GAIN = 4
STYLE = ("body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse}"
         "td,th{border:1px solid #bbb;padding:4px 8px;text-align:right}th{background:#eee}"
         "img{max-width:100%;border:1px solid #ccc}figure{display:inline-block;margin:0 1em 1em 0}")


def extreme_frames(clip: ClipResult) -> dict[str, int]:
    """Frames to show: worst and best face PSNR (reconstruction), else widest and most closed mouth."""
    if np.isfinite(clip.psnr_frames).any():
        return {"worst PSNR": int(np.nanargmin(clip.psnr_frames)), "best PSNR": int(np.nanargmax(clip.psnr_frames))}
    return {"widest mouth": int(np.argmax(clip.mouth)), "most closed mouth": int(np.argmin(clip.mouth))}


def has_difference_panel(clip: ClipResult) -> bool:
    """Whether the strips show a difference panel: not against a photo source."""
    return not is_image(clip.pair.source)


def strip(clip: ClipResult, index: int) -> np.ndarray:
    """uint8 (256, 768, 3) RGB: source crop | generated crop | |difference| x 4; uint8 (256, 512, 3) without
    the difference for a photo source. The source frame of a cross-audio pair is frame ``index`` modulo its
    length (a photo: the photo); both frames are decoded again from their files."""
    gen_rec = clip.generated.records[index]
    src_i = index % clip.source.num_frames
    src_rec = clip.source.records[src_i] if clip.source.records[src_i].found else gen_rec
    same_box = clip.pair.protocol == "reconstruction" and clip.source.records[src_i].found
    gen = crop_face(clip.generated.frame(index), src_rec if same_box else gen_rec)
    src = crop_face(clip.source.frame(src_i), src_rec)
    if not has_difference_panel(clip):
        return np.hstack([src, gen])
    diff = np.clip(np.abs(gen.astype(np.int16) - src.astype(np.int16)) * DIFF_GAIN, 0, 255).astype(np.uint8)
    return np.hstack([src, gen, diff])


def plot_curves(clip: ClipResult, path: Path) -> None:
    """PNG of the generated clip's mouth opening and the speech envelope (dB) against time (s)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    t = np.arange(len(clip.mouth)) / clip.generated.fps
    fig = Figure(figsize=(10, 3), dpi=100)
    ax = fig.add_subplot()
    ax.plot(t, clip.mouth, color="tab:red", label="mouth opening (generated)")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("mouth opening / face height")
    ax2 = ax.twinx()
    ax2.plot(t, clip.envelope, color="tab:blue", alpha=0.6, label="speech envelope")
    ax2.set_ylabel("speech level (dB)")
    fig.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path)


def _table(result: EvalResult) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(format_value(row.get(c)))}</td>" for c in COLUMNS) + "</tr>"
                   for row in result.rows)
    return f"<table id='metrics'><tr>{head}</tr>{body}</table>"


def _clip_section(clip: ClipResult, number: int, out: Path) -> str:
    parts = [f"<h2>{html.escape(clip.pair.label)} <small>({html.escape(clip.pair.protocol)})</small></h2>",
             f"<p>generated: {html.escape(str(clip.pair.generated))}<br>source: {html.escape(str(clip.pair.source))}</p>"]
    for label, index in extreme_frames(clip).items():
        name = f"clip{number}_{label.replace(' ', '_')}.png"
        cv2.imwrite(str(out / name), strip(clip, index)[..., ::-1])
        panels = f"source | generated | difference x{DIFF_GAIN}" if has_difference_panel(clip) else "source | generated"
        parts.append(f"<figure><img src='{name}' alt='{html.escape(label)}'><figcaption>{html.escape(label)}: frame "
                     f"{index} ({panels})</figcaption></figure>")
    plot = f"clip{number}_mouth_audio.png"
    plot_curves(clip, out / plot)
    parts.append(f"<figure><img src='{plot}' alt='mouth opening and speech envelope'>"
                 "<figcaption>mouth opening against the speech envelope</figcaption></figure>")
    return "\n".join(parts)


def write_report(result: EvalResult, report_dir: str | os.PathLike) -> Path:
    """Write ``index.html`` and its images into ``report_dir`` (created); returns the page's path."""
    out = Path(report_dir)
    out.mkdir(parents=True, exist_ok=True)
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in result.notes)
    sections = "\n".join(_clip_section(c, i, out) for i, c in enumerate(result.clips))
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>MuseTalk evaluation</title>"
            f"<style>{STYLE}</style></head><body><h1>MuseTalk evaluation</h1>{_table(result)}"
            f"{'<ul>' + notes + '</ul>' if notes else ''}{sections}</body></html>")
    path = out / "index.html"
    path.write_text(page)
    log.info("report written to %s", path)
    return path
