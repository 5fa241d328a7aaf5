"""What is evaluated: pairs of (generated video, source video or photo, driving audio) under a protocol,
read from the command line, a CSV file or a folder, and the decoded clips with their face analysis.

Protocols:
- ``reconstruction``: the source dubbed with its own audio; generated frame i is compared with source frame i
  (all metrics, pixel ones included).
- ``cross-audio``: dubbed with other speech; no pixel reference, so only LSE, CSIM, FID and the AV offset.
"""
from __future__ import annotations

import csv
import itertools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..audio.load import load_audio
from ..errors import FaceError, MuseTalkError, VideoError
from ..face import FaceAnalyzer, FaceRecord
from ..video.io import IMAGE_SUFFIXES, is_image, probe, read_frames, read_image

log = logging.getLogger(__name__)

PROTOCOLS = ("reconstruction", "cross-audio")
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm")
CSV_COLUMNS = ("generated", "source", "audio", "protocol", "name", "dub_fps")


class EvalInputError(MuseTalkError):
    """An evaluation input is missing, inconsistent or unusable."""


@dataclass(frozen=True)
class EvalPair:
    """One clip to score. ``audio`` None: the generated video's own audio track. ``dub_fps``: end-to-end
    frames per second of the dub that made it, when known (else read from ``<generated>.json``)."""

    generated: Path
    source: Path
    audio: Path | None = None
    protocol: str = "reconstruction"
    name: str = ""
    dub_fps: float | None = None

    def __post_init__(self) -> None:
        for name in ("generated", "source", "audio"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value))
        if self.protocol not in PROTOCOLS:
            raise EvalInputError(f"unknown protocol {self.protocol!r} for {self.generated}: use one of {', '.join(PROTOCOLS)}")
        for label, path in (("generated video", self.generated), ("source", self.source), ("audio", self.audio)):
            if path is not None and not Path(path).is_file():
                raise EvalInputError(f"{label} file not found: {path}")
        if self.protocol == "reconstruction" and is_image(self.source):
            raise EvalInputError(f"reconstruction needs a source video, {self.source} is a photo: use --protocol cross-audio")

    @property
    def label(self) -> str:
        return self.name or Path(self.generated).stem


@dataclass(frozen=True)
class BadPair:
    """A row of a pairs CSV that does not form a pair: its name, protocol and why."""

    label: str
    protocol: str
    error: EvalInputError


def _path(value: str | None, base: Path) -> Path | None:
    return (base / value) if value else None


def pairs_from_csv(path: Path) -> list[EvalPair | BadPair]:
    """Rows with columns generated, source and optional audio, protocol, name, dub_fps; relative paths are
    relative to the CSV's folder. A row naming a missing file or an unknown protocol becomes a
    :class:`BadPair` (reported in its row by ``evaluate``)."""
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"generated", "source"} <= set(reader.fieldnames):
            raise EvalInputError(f"{path} needs a header with at least the columns generated,source "
                                 f"(optional: {', '.join(CSV_COLUMNS[2:])})")
        rows = list(reader)
    return [_pair_from_row(r, number, path) for number, r in enumerate(rows, start=2)]


def _pair_from_row(row: dict[str, str], line: int, path: Path) -> EvalPair | BadPair:
    protocol = row.get("protocol") or "reconstruction"
    name = row.get("name") or Path(row["generated"] or f"line{line}").stem
    try:
        return EvalPair(generated=_path(row["generated"], path.parent), source=_path(row["source"], path.parent),
                        audio=_path(row.get("audio"), path.parent), protocol=protocol, name=name,
                        dub_fps=float(row["dub_fps"]) if row.get("dub_fps") else None)
    except EvalInputError as exc:
        return BadPair(name, protocol, EvalInputError(f"{path} line {line}: {exc}"))


def _find(folder: Path, stem: str, suffixes: tuple[str, ...]) -> Path | None:
    return next((folder / f"{stem}{s}" for s in suffixes if (folder / f"{stem}{s}").is_file()), None)


def pairs_from_folder(folder: Path, protocol: str) -> list[EvalPair]:
    """``folder/generated/NAME.mp4`` with ``folder/source/NAME.(video or image)`` and optional
    ``folder/audio/NAME.(wav|mp3|flac|m4a)``."""
    generated = sorted(p for p in (folder / "generated").glob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
    if not generated:
        raise EvalInputError(f"no videos in {folder / 'generated'}: a pairs folder holds generated/, source/ "
                             "and optionally audio/ with matching file names")
    pairs = []
    for gen in generated:
        source = _find(folder / "source", gen.stem, VIDEO_SUFFIXES + tuple(sorted(IMAGE_SUFFIXES)))
        if source is None:
            raise EvalInputError(f"no source for {gen.name} in {folder / 'source'}: add a video or photo named {gen.stem}.*")
        audio = _find(folder / "audio", gen.stem, (".wav", ".flac", ".mp3", ".m4a"))
        pairs.append(EvalPair(gen, source, audio, protocol, gen.stem))
    return pairs


def recorded_dub_fps(generated: Path) -> float | None:
    """End-to-end frames per second that ``musetalk dub --stats <video>.json`` recorded beside its output
    (key ``result.frames_per_second``); None when absent."""
    sidecar = generated.with_name(generated.name + ".json")
    if not sidecar.is_file():
        return None
    try:
        value = json.loads(sidecar.read_text()).get("result", {}).get("frames_per_second")
    except (json.JSONDecodeError, AttributeError):
        return None
    return float(value) if isinstance(value, (int, float)) else None


@dataclass
class Clip:
    """A clip's frame rate and face analysis (one record per frame). Its frames are not kept: they are
    decoded again, in order, when a metric needs them (memory flat in the clip's length)."""

    path: Path
    fps: float
    records: list[FaceRecord]

    @property
    def num_frames(self) -> int:
        return len(self.records)

    @property
    def found(self) -> np.ndarray:
        """bool (T,): frames with a face."""
        return np.array([r.found for r in self.records], dtype=bool)

    def frames(self) -> Iterator[np.ndarray]:
        """The clip's frames in order, uint8 (H, W, 3) RGB (a photo: its one image), one per record."""
        return _decoded(self.path, self.num_frames)

    def frame(self, index: int) -> np.ndarray:
        """Frame ``index`` (decoded from the start of the clip)."""
        return next(itertools.islice(self.frames(), index, None))


def _decoded(path: Path, max_frames: int | None) -> Iterator[np.ndarray]:
    """uint8 (H, W, 3) RGB frames of a video (the first ``max_frames``) or the one image of a photo."""
    if is_image(path):
        return iter([read_image(path)])
    return itertools.islice(read_frames(path), max_frames)


def load_clip(path: Path, analyzer: FaceAnalyzer, max_frames: int | None = None) -> Clip:
    """The face analysis (unsmoothed landmarks) of a video's frames (the first ``max_frames``) or a photo,
    decoded one at a time. Raises :class:`FaceError` when no frame has a face."""
    fps = 25.0 if is_image(path) else float(probe(path).fps)
    records = analyzer.analyze_all(_decoded(path, max_frames))
    if not any(r.found for r in records):
        raise FaceError(f"no face found in {path} ({len(records)} frames): give a clip with a visible frontal face")
    return Clip(path, fps, records)


def load_pair_audio(pair: EvalPair) -> np.ndarray:
    """float32 (N,) 16 kHz driving audio: the pair's audio file, else the generated video's track."""
    try:
        return load_audio(pair.audio or pair.generated)
    except MuseTalkError as exc:
        raise EvalInputError(f"{exc}; give the driving audio with --audio") from None


def check_lengths(pair: EvalPair, generated: Clip, source: Clip, audio: np.ndarray, tolerance: int = 1) -> int:
    """Number of frames to score; raises :class:`EvalInputError` when frame rates or lengths disagree by more
    than ``tolerance`` frames (reconstruction: generated vs source; always: generated vs audio)."""
    n = generated.num_frames
    audio_frames = int(len(audio) * generated.fps / 16000)
    if audio_frames < n - tolerance:
        raise EvalInputError(f"{pair.generated} has {n} frames but its audio covers only {audio_frames}: "
                             "give the audio the clip was dubbed with")
    if pair.protocol == "reconstruction":
        if abs(source.fps - generated.fps) > 1e-3:
            raise EvalInputError(f"frame rates differ: {pair.generated} {generated.fps:g} fps, {pair.source} "
                                 f"{source.fps:g} fps; reconstruction compares frame by frame")
        if abs(source.num_frames - n) > tolerance:
            raise EvalInputError(f"lengths differ: {pair.generated} has {n} frames, {pair.source} has "
                                 f"{source.num_frames}; for a dub with other speech use --protocol cross-audio")
        n = min(n, source.num_frames)
    return n


def require_video(path: Path) -> None:
    """Raise :class:`VideoError` unless ``path`` is a video file."""
    if is_image(path):
        raise VideoError(f"{path} is a photo; the generated clip must be a video")
