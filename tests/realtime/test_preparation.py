"""Avatar preparation streams (memory flat in the video's length) and yields to live sessions."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from musetalk.realtime.avatars.store import AvatarStore, PrepareSettings

LOOP_FRAMES = 4
SIZE = (288, 384)  # width, height: sun.mp4 at half size keeps the test fast


@pytest.fixture(scope="module")
def looped(tmp_path_factory, media):
    """``looped(seconds)``: sun.mp4's first 4 frames at half size, looped to ``seconds`` at 25 fps, as an mp4
    with the face records of its frames (so no face analysis runs): (video path, records path)."""
    import cv2

    from musetalk.face import FaceAnalyzer, save_records
    from musetalk.video.io import VideoWriter, read_frames

    folder = tmp_path_factory.mktemp("looped")
    frames = [cv2.resize(f, SIZE, interpolation=cv2.INTER_AREA)
              for f, _ in zip(read_frames(media / "sun.mp4"), range(LOOP_FRAMES))]
    analyzer = FaceAnalyzer(version="v1.5", smooth=False)
    records = [analyzer.analyze(f) for f in frames]
    assert all(r.found for r in records)

    def make(seconds: int):
        video, faces = folder / f"loop{seconds}.mp4", folder / f"loop{seconds}.npz"
        with VideoWriter(video, *SIZE, 25) as writer:
            for i in range(25 * seconds):
                writer.write(frames[i % LOOP_FRAMES])
        save_records(faces, [records[i % LOOP_FRAMES] for i in range(25 * seconds)])
        return video, faces

    return make


def preparation_peak(root, mt, video, faces, name: str) -> int:
    """Peak bytes traced (numpy arrays and Python objects) beyond those already held, from the start of
    preparing ``video`` (in a fresh store) until its files are written (the "save" progress, before the avatar
    is loaded)."""
    peaks = []

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "save":
            peaks.append(tracemalloc.get_traced_memory()[1])

    store = AvatarStore(root, mt)
    tracemalloc.reset_peak()
    held = tracemalloc.get_traced_memory()[0]
    store.prepare(video, name, PrepareSettings(face_records=str(faces)), progress=progress)
    return peaks[0] - held


@pytest.mark.slow
def test_preparation_memory_is_flat_in_the_video_length(tmp_path, tiny_musetalk, looped):
    """Preparing 60 s (1500 frames) needs no more than 4 MB beyond what 10 s (250 frames) needs.

    The bound: what grows with the length is bookkeeping, about 2 KB a frame (the face record kept for
    records.npz and the one read from the records file, ~0.7 KB each with their arrays; offsets and a mask
    box, 32 bytes), so 1250 more frames add about 2.5 MB. Holding the video instead (the JPEGs, ~20 KB a
    frame here, and the latents, 32 KB) would add over 60 MB."""
    short, long = looped(10), looped(60)
    tracemalloc.start()
    try:
        peak_short = preparation_peak(tmp_path / "avatars", tiny_musetalk, *short, "short")
        peak_long = preparation_peak(tmp_path / "avatars", tiny_musetalk, *long, "long")
    finally:
        tracemalloc.stop()
    store = AvatarStore(tmp_path / "avatars", tiny_musetalk)
    assert [store.load(n).num_frames for n in ("short", "long")] == [250, 1500]
    assert peak_long - peak_short < 4e6, (peak_short, peak_long)
