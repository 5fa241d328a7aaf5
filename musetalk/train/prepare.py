"""``musetalk train prepare``: a folder of talking-head videos -> training shards (see :mod:`.shards`).

Per clip: re-time to 25 fps (nearest source frame in time), face analysis frame by frame, 256x256 crops,
landmarks, crop boxes, a head-pose estimate, the 16 kHz audio, its whisper hidden states and SyncNet
log-mel. Stretches without a usable face are skipped and listed with the reason in ``skipped.json``;
a finished clip is never redone (its ``meta.json`` exists), so an interrupted run resumes.
"""
from __future__ import annotations

import json
import logging
import math
import re
import shutil
from pathlib import Path
from typing import Callable, Iterable, Iterator

import cv2
import numpy as np
import torch
from tqdm.auto import tqdm

from ..audio.features import whisper_hidden_states
from ..audio.load import load_audio
from ..errors import MuseTalkError
from ..models.layout import resolve_models_dir
from ..models.whisper import load_whisper
from ..video.io import probe, read_frames
from .mel import log_mel
from .shards import FPS, DataError, clips_dir, write_shard

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v"}
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".m4a", ".ogg")
# Generic 3D face (mm) for the pose estimate: nose tip, chin, eye outer corners, mouth corners.
_POSE_POINTS = (30, 8, 36, 45, 48, 54)
_MODEL_3D = np.array([(0, 0, 0), (0, -63.6, -12.5), (-43.3, 32.7, -26), (43.3, 32.7, -26),
                      (-28.9, -28.9, -24.1), (28.9, -28.9, -24.1)], np.float64)


def find_videos(videos_dir: Path) -> list[Path]:
    """Video files under ``videos_dir`` (recursive), sorted."""
    if not videos_dir.is_dir():
        raise DataError(f"videos folder not found: {videos_dir}")
    videos = sorted(p for p in videos_dir.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    if not videos:
        raise DataError(f"no videos ({', '.join(sorted(VIDEO_SUFFIXES))}) in {videos_dir}/")
    return videos


def clip_name(video: Path, videos_dir: Path) -> str:
    """File-system-safe unique name from the path relative to ``videos_dir``: a/b c.mp4 -> a_b_c."""
    rel = video.relative_to(videos_dir).with_suffix("")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "_".join(rel.parts))


def audio_source(video: Path, has_audio: bool) -> Path:
    """The video itself when it has sound, else a sidecar audio file with the same stem (clip.mp4 + clip.wav)."""
    if has_audio:
        return video
    for suffix in AUDIO_SUFFIXES:
        sidecar = video.with_suffix(suffix)
        if sidecar.is_file():
            return sidecar
    raise DataError(f"{video.name} has no audio track and no sidecar {video.stem}.wav/.flac/.mp3/.m4a beside it")


def retime_indices(num_source: int, source_fps: float, fps: float = FPS) -> np.ndarray:
    """Source frame shown at each output frame j (time j / fps): the nearest earlier-or-equal one.
    (num_source,) at source_fps -> (floor(num_source x fps / source_fps),) int64."""
    count = math.floor(num_source * fps / source_fps + 1e-9)
    return np.minimum(np.floor(np.arange(count) * source_fps / fps + 1e-9).astype(np.int64), num_source - 1)


def retimed_frames(video: Path, fps: float = FPS) -> Iterator[np.ndarray]:
    """Frames of ``video`` on a ``fps`` timeline (frames repeated or dropped; nothing interpolated)."""
    info = probe(video)
    source_fps = float(info.fps)
    j = 0
    for i, frame in enumerate(read_frames(video)):
        while math.floor(j * source_fps / fps + 1e-9) == i:
            yield frame
            j += 1
    log.debug("%s: %d frames at %.3f fps -> %d at %g fps", video, i + 1, source_fps, j, fps)


def head_pose(landmarks: np.ndarray, width: int, height: int) -> np.ndarray:
    """Rough (yaw, pitch, roll) in degrees from six landmarks and a generic face (pinhole, focal = width)."""
    camera = np.array([[width, 0, width / 2], [0, width, height / 2], [0, 0, 1]], np.float64)
    image = landmarks[list(_POSE_POINTS)].astype(np.float64)
    image = image * np.array([1.0, -1.0]) + np.array([0.0, 2 * height / 2])  # y up, like the model
    ok, rvec, _ = cv2.solvePnP(_MODEL_3D, image, camera, None, flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        return np.zeros(3, np.float32)
    rot, _ = cv2.Rodrigues(rvec)
    pitch = math.degrees(math.atan2(rot[2, 1], rot[2, 2]))
    yaw = math.degrees(math.atan2(-rot[2, 0], math.hypot(rot[2, 1], rot[2, 2])))
    roll = math.degrees(math.atan2(rot[1, 0], rot[0, 0]))
    return np.array([yaw, pitch, roll], np.float32)


def runs(mask: Iterable[bool]) -> list[tuple[int, int]]:
    """[start, stop) runs of True in a boolean sequence."""
    out, start = [], None
    flags = list(mask)
    for i, flag in enumerate(flags + [False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            out.append((start, i))
            start = None
    return out


class Preparer:
    """Prepares clips one by one with a face analyzer and the frozen whisper encoder.

    ``analyzer_factory()`` returns an object with ``analyze(frame) -> FaceRecord`` and ``reset()``;
    ``crop(frame, record)`` returns the uint8 (256, 256, 3) crop (``musetalk.face`` by default).
    """

    def __init__(self, models_dir: str | Path | None = None, device: str = "cpu", min_stretch: int = 5,
                 analyzer_factory: Callable[[], object] | None = None, crop: Callable | None = None,
                 progress: bool = True) -> None:
        if analyzer_factory is None or crop is None:
            from ..face import FaceAnalyzer, crop_face

            analyzer_factory = analyzer_factory or (lambda: FaceAnalyzer(backend="dlib", version="v1.5"))
            crop = crop or crop_face
        self.analyzer = analyzer_factory()
        self.crop = crop
        self.min_stretch = min_stretch
        self.progress = progress
        self.device = torch.device(device)
        root = resolve_models_dir(models_dir)
        self.whisper, self.extractor = load_whisper(root / "whisper", self.device, torch.float32)

    def prepare_all(self, videos_dir: Path, data_dir: Path) -> dict:
        """Prepare every video of ``videos_dir`` into ``data_dir``; returns {"prepared", "resumed", "skipped"}."""
        videos = find_videos(videos_dir)
        out = clips_dir(data_dir)
        out.mkdir(parents=True, exist_ok=True)
        summary = {"prepared": [], "resumed": [], "skipped": []}
        for video in tqdm(videos, desc="prepare", unit="clip", disable=not self.progress):
            name = clip_name(video, videos_dir)
            folder = out / name
            if (folder / "meta.json").is_file():
                summary["resumed"].append(name)
                continue
            try:
                meta = self.prepare_clip(video, folder)
            except MuseTalkError as exc:
                log.warning("skipping %s: %s", video, exc)
                summary["skipped"].append({"clip": name, "source": str(video), "reason": str(exc)})
                continue
            summary["prepared"].append(name)
            summary["skipped"] += [{"clip": name, **s} for s in meta["skipped"]]
        self._write_skipped(data_dir, summary["skipped"])
        return summary

    @staticmethod
    def _write_skipped(data_dir: Path, new: list[dict]) -> None:
        """Merge into ``skipped.json`` the whole-clip skips of this run and every clip's skipped stretches."""
        path = data_dir / "skipped.json"
        whole = [s for s in new if "start" not in s]
        previous = json.loads(path.read_text()) if path.is_file() else []
        merged = {json.dumps(s, sort_keys=True): s for s in previous + whole}
        for meta_path in sorted(clips_dir(data_dir).glob("*/meta.json")):
            meta = json.loads(meta_path.read_text())
            for s in meta["skipped"]:
                item = {"clip": meta_path.parent.name, **s}
                merged[json.dumps(item, sort_keys=True)] = item
        done = {p.parent.name for p in clips_dir(data_dir).glob("*/meta.json")}
        items = [s for s in merged.values() if "start" in s or s["clip"] not in done]
        path.write_text(json.dumps(items, indent=1))

    def prepare_clip(self, video: Path, folder: Path) -> dict:
        """Write one clip's shard into ``folder`` (via ``folder.partial``); returns its meta."""
        info = probe(video)
        samples = load_audio(audio_source(video, info.has_audio))
        tmp = folder.with_name(folder.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self.analyzer.reset()
        found, index, landmarks, crop_boxes, poses = [], [], [], [], []
        total = math.floor(len(samples) / 16000 * FPS)  # frames with audio
        expected = min(total, len(retime_indices(info.num_frames, float(info.fps)))) if info.num_frames else total
        with open(tmp / "crops.u8", "wb") as crops_file:
            frames = tqdm(retimed_frames(video), total=expected, desc=video.stem, unit="frame", leave=False,
                          disable=not self.progress)
            for j, frame in enumerate(frames):
                if j >= total:
                    break
                rec = self.analyzer.analyze(frame)
                found.append(bool(rec.found))
                if not rec.found:
                    continue
                crops_file.write(np.ascontiguousarray(self.crop(frame, rec), np.uint8).tobytes())
                index.append(j)
                landmarks.append(np.asarray(rec.landmarks, np.float32))
                crop_boxes.append(np.asarray(rec.crop_box, np.int32))
                poses.append(head_pose(np.asarray(rec.landmarks), frame.shape[1], frame.shape[0]))
        meta = self._meta(video, found, tmp)
        if meta["kept"] == 0:
            shutil.rmtree(tmp)
            raise DataError(f"no usable face in {video.name} ({len(found)} frames)")
        keep = np.concatenate([np.arange(s, e) for s, e in meta.pop("_kept_runs")])
        positions = {frame: i for i, frame in enumerate(index)}
        rows = np.array([positions[f] for f in keep])
        self._compact_crops(tmp, rows, len(index))
        states = whisper_hidden_states(self.whisper, self.extractor, samples, self.device, torch.float32)
        write_shard(tmp, meta, frame_index=np.asarray(keep, np.int32),
                    landmarks=np.stack(landmarks)[rows], crop_boxes=np.stack(crop_boxes)[rows],
                    pose=np.stack(poses)[rows], audio=samples.astype(np.float32),
                    whisper=states.astype(np.float16), mel=log_mel(samples))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.replace(folder)
        log.info("%s: %d of %d frames kept, %d stretches skipped", video.name, meta["kept"], len(found), len(meta["skipped"]))
        return meta

    def _meta(self, video: Path, found: list[bool], folder: Path) -> dict:
        """Stretches of found faces; too-short ones and face-less ones go to ``skipped`` with the reason."""
        skipped = [{"start": s, "stop": e, "reason": "no face detected"} for s, e in runs(not f for f in found)]
        kept_runs = []
        for s, e in runs(found):
            if e - s < self.min_stretch:
                skipped.append({"start": s, "stop": e, "reason": f"face stretch shorter than {self.min_stretch} frames"})
            else:
                kept_runs.append((s, e))
        for item in skipped:
            log.info("%s: skipping frames %d..%d: %s", video.name, item["start"], item["stop"] - 1, item["reason"])
        segments, pos = [], 0
        for s, e in kept_runs:
            segments.append((pos, pos + e - s))
            pos += e - s
        return {"source": str(video), "fps": FPS, "num_frames": len(found), "kept": pos, "segments": segments,
                "skipped": sorted(skipped, key=lambda x: x["start"]), "_kept_runs": kept_runs}

    @staticmethod
    def _compact_crops(folder: Path, rows: np.ndarray, count: int) -> None:
        """Keep only ``rows`` of the raw crops file (in place when nothing is dropped)."""
        if len(rows) == count:
            return
        source = np.memmap(folder / "crops.u8", np.uint8, "r", shape=(count, 256, 256, 3))
        with open(folder / "crops.kept", "wb") as out:
            for row in rows:
                out.write(np.asarray(source[row]).tobytes())
        del source
        (folder / "crops.kept").replace(folder / "crops.u8")
