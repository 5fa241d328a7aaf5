"""Face-analysis speed and crop-box jitter on sun.mp4.

Prints frames/s of FaceAnalyzer.analyze (detection/tracking + landmarks + smoothing + crop box, decoding
excluded) on sun.mp4 at 576x768 and on the same frames letterboxed into 1280x720, and the crop-box jitter
(mean |second difference|, px) without and with smoothing.

    .venv/bin/python bench/face.py [--media ../shared/media] [--frames 550]
"""
from __future__ import annotations

import argparse
import itertools
import logging
import time
from pathlib import Path

import cv2
import numpy as np

from musetalk.face import FaceAnalyzer, jitter
from musetalk.video.io import read_frames

log = logging.getLogger("bench.face")
MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"


def letterbox_720p(frame: np.ndarray) -> np.ndarray:
    """uint8 (720, 1280, 3): ``frame`` scaled to 720 px high, centred, edges replicated sideways."""
    h, w = frame.shape[:2]
    scaled = cv2.resize(frame, (round(w * 720 / h), 720), interpolation=cv2.INTER_LINEAR)
    left = (1280 - scaled.shape[1]) // 2
    return cv2.copyMakeBorder(scaled, 0, 0, left, 1280 - scaled.shape[1] - left, cv2.BORDER_REPLICATE)


def timed_analysis(frames: list[np.ndarray], smooth: bool) -> tuple[float, list]:
    """(frames per second, records) of one pass over ``frames`` after a warm-up frame."""
    analyzer = FaceAnalyzer(smooth=smooth)
    analyzer.analyze(frames[0])
    analyzer.reset()
    start = time.perf_counter()
    records = [analyzer.analyze(f) for f in frames]
    return len(frames) / (time.perf_counter() - start), records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--media", type=Path, default=MEDIA)
    parser.add_argument("--frames", type=int, default=550)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    frames = list(itertools.islice(read_frames(args.media / "sun.mp4"), args.frames))
    h, w = frames[0].shape[:2]
    fps_raw, raw = timed_analysis(frames, smooth=False)
    fps_smooth, smooth = timed_analysis(frames, smooth=True)
    wide = [letterbox_720p(f) for f in frames]
    fps_720, recs_720 = timed_analysis(wide, smooth=True)
    box_raw = jitter(np.stack([r.crop_box for r in raw]))
    box_smooth = jitter(np.stack([r.crop_box for r in smooth]))
    lag = np.abs(np.stack([r.crop_box for r in smooth]) - np.stack([r.crop_box for r in raw])).mean()
    log.info("sun.mp4 %dx%d, %d frames: %.1f fps (smoothing off), %.1f fps (on); faces found %d/%d",
             w, h, len(frames), fps_raw, fps_smooth, sum(r.found for r in smooth), len(frames))
    log.info("1280x720 letterboxed: %.1f fps; faces found %d/%d", fps_720, sum(r.found for r in recs_720),
             len(frames))
    log.info("crop-box jitter (mean |2nd difference|, px): %.3f raw -> %.3f smoothed (%.1fx less); "
             "mean |smoothed - raw| %.2f px", box_raw, box_smooth, box_raw / max(box_smooth, 1e-9), lag)


if __name__ == "__main__":
    main()
