"""Faces on sun.mp4 with synthetic occluders and a second person pasted in (musk.png, monalisa.png): short
detection gaps are interpolated, and after a loss the tracker never switches to the other person."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from musetalk.face import FaceAnalyzer
from musetalk.face.gaps import interpolate_gaps, missing_runs
from musetalk.face.types import FaceRecord
from musetalk.video.io import read_image

FRAMES = 30
HEAD = (slice(120, 420), slice(130, 430))  # sun's head in sun.mp4 (rows, columns), 300 x 300


def _paint_over_head(frame: np.ndarray, rec: FaceRecord) -> None:
    x1, y1, x2, y2 = rec.crop_box
    frame[max(0, y1 - 60):y2 + 40, max(0, x1 - 40):x2 + 40] = (200, 60, 60)


def test_missing_runs_between_found_frames():
    found = [False, True, False, False, True, True, False, True, False]
    assert missing_runs(found) == [(2, 4), (6, 7)]  # the runs at either end have no neighbour on one side


def test_interpolated_gap_lies_between_its_neighbours():
    a = FaceRecord(True, box=[0, 0, 100, 100], landmarks=np.zeros((68, 2)), crop_box=[0, 0, 100, 100], score=1.0)
    b = FaceRecord(True, box=[40, 0, 140, 100], landmarks=np.full((68, 2), 40.0), crop_box=[40, 0, 140, 100], score=1.0)
    out = interpolate_gaps([a, FaceRecord.missing(), FaceRecord.missing(), FaceRecord.missing(), b],
                           lambda lm, box: np.round(box), max_gap=3)
    assert [r.found for r in out] == [True] * 5 and [r.score for r in out[1:4]] == [0.0, 0.0, 0.0]
    assert [float(r.landmarks[0, 0]) for r in out] == [0.0, 10.0, 20.0, 30.0, 40.0]
    np.testing.assert_array_equal(out[2].crop_box, [20, 0, 120, 100])
    short = interpolate_gaps([a, FaceRecord.missing(), FaceRecord.missing(), b], lambda lm, box: box, max_gap=1)
    assert [r.found for r in short] == [True, False, False, True]


@pytest.fixture(scope="module")
def clean(sun_frames) -> list[FaceRecord]:
    return FaceAnalyzer(smooth=False).analyze_all(sun_frames[:FRAMES])


@pytest.mark.parametrize("gap", [1, 3, 5])
def test_short_occlusions_are_interpolated_not_passed_through(sun_frames, clean, gap):
    """sun.mp4 with the face painted over for ``gap`` frames from frame 10: every frame keeps a face (no
    flicker between synced and passed-through frames), within a few pixels of the unoccluded landmarks."""
    frames = [f.copy() for f in sun_frames[:FRAMES]]
    for i in range(10, 10 + gap):
        _paint_over_head(frames[i], clean[i])
    recs = FaceAnalyzer(smooth=False).analyze_all(frames)
    assert all(r.found for r in recs)
    assert [r.score == 0.0 for r in recs[9:11 + gap]] == [False] + [True] * gap + [False]
    error = [np.abs(recs[i].landmarks - clean[i].landmarks).mean() for i in range(10, 10 + gap)]
    assert max(error) < 1.5, error  # measured 0.24, 0.33, 0.39 px for gaps of 1, 3, 5
    without = FaceAnalyzer(smooth=False, max_gap=0).analyze_all(frames)
    assert sum(not r.found for r in without) == gap  # what the interpolation replaced


def _face_of(path) -> np.ndarray:
    """A square crop around the face of a photo, resized to 200 x 200."""
    image = read_image(path)
    rec = FaceAnalyzer(smooth=False).analyze(image)
    x1, y1, x2, y2 = rec.box
    side = 1.8 * max(x2 - x1, y2 - y1)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    top, left = int(max(cy - side / 2, 0)), int(max(cx - side / 2, 0))
    crop = image[top:int(top + side), left:int(left + side)]
    return cv2.resize(crop, (200, 200), interpolation=cv2.INTER_AREA)


def _with_second_person(frame: np.ndarray, face: np.ndarray) -> np.ndarray:
    """A 600 x 1000 canvas: sun's head at the left (enlarged to 360 x 360, so hers is the largest face), the
    other person at the right (200 x 200)."""
    canvas = np.full((600, 1000, 3), 90, np.uint8)
    canvas[20:380, 40:400] = cv2.resize(frame[HEAD], (360, 360), interpolation=cv2.INTER_LINEAR)
    canvas[100:300, 700:900] = face
    return canvas


@pytest.mark.parametrize("other", ["musk.png", "monalisa.png"])
def test_tracker_keeps_the_person_after_losing_them(sun_frames, media, other):
    """sun is followed (the largest face); her head is painted over for 8 frames while another person stays
    in view: those frames pass through, and sun is followed again afterwards, never the other person."""
    face = _face_of(media / other)
    frames = [_with_second_person(f, face) for f in sun_frames[:FRAMES]]
    for frame in frames[10:18]:
        frame[10:390, 30:410] = (200, 60, 60)
    recs = FaceAnalyzer().analyze_all(frames)
    found = [r.found for r in recs]
    assert found == [True] * 10 + [False] * 8 + [True] * 12
    centres = [(r.box[0] + r.box[2]) / 2 for r in recs if r.found]
    assert max(centres) < 400  # always sun, at the left
    switching = FaceAnalyzer(keep_identity=False).analyze_all(frames)  # the nearest face, whoever it is
    assert all(r.found for r in switching[10:]) and min((r.box[0] + r.box[2]) / 2 for r in switching[10:]) > 600


def test_streamed_gap_filling_equals_the_whole_clip(sun_frames, clean):
    """The dub's frame stream (GapFiller) fills the same gaps as analyze_all, holding back only gap frames."""
    frames = [f.copy() for f in sun_frames[:FRAMES]]
    for i in [*range(4, 7), *range(12, 19)]:  # a 3-frame gap (filled) and a 7-frame one (passed through)
        _paint_over_head(frames[i], clean[i])
    whole = FaceAnalyzer().analyze_all(frames)
    analyzer = FaceAnalyzer()
    analyzer.reset()
    filler = analyzer.gap_filler(frames[0].shape)
    streamed, most_held = [], 0
    for k, frame in enumerate(frames):
        streamed += filler.push(k, analyzer.analyze(frame))
        most_held = max(most_held, k + 1 - len(streamed))
    streamed += filler.finish()
    assert [k for k, _ in streamed] == list(range(FRAMES)) and most_held == 5  # never more than max_gap frames
    assert [r.found for _, r in streamed] == [r.found for r in whole] == [True] * 12 + [False] * 7 + [True] * 11
    for (_, a), b in zip(streamed, whole):
        np.testing.assert_array_equal(a.landmarks, b.landmarks)
        np.testing.assert_array_equal(a.crop_box, b.crop_box)
