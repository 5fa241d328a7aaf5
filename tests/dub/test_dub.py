"""End-to-end dubbing with tiny random models on real media: timing, audio, pixels, no-face frames."""
from __future__ import annotations

import json
import math
from fractions import Fraction

import av
import numpy as np
import soundfile as sf

from musetalk.pipeline.dub import DubOptions, dub
from musetalk.pipeline.source import pingpong_index
from musetalk.video import probe, read_frames

from .conftest import write_clip

FAST = dict(progress=False)


def audio_seconds(path) -> float:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        return float(stream.duration * stream.time_base)


def test_pingpong_order_matches_official_cycle():
    n = 4
    cycle = list(range(n)) + list(range(n))[::-1]
    assert [pingpong_index(i, n) for i in range(20)] == [cycle[i % (2 * n)] for i in range(20)]


def test_video_longer_than_audio_is_cut(tmp_path, tiny_musetalk, clip40, speech1s, captured):
    out = tmp_path / "out.mp4"
    result = dub(clip40, speech1s, out, DubOptions(**FAST, stats=str(tmp_path / "stats.json")), model=tiny_musetalk)
    info = probe(out)
    assert result.frames == info.num_frames == 25 and info.fps == 25 and (info.width, info.height) == (576, 768)
    assert abs(audio_seconds(out) - 1.0) < 1e-3
    assert len(captured) == 25
    record = json.loads((tmp_path / "stats.json").read_text())
    assert record["result"]["frames"] == 25 and record["result"]["frames_per_second"] > 0
    source = list(read_frames(clip40))
    for i in (0, 12, 24):  # rows above the mask box are the source's own pixels, bit for bit
        np.testing.assert_array_equal(captured[i][:150], source[i][:150])
        assert not np.array_equal(captured[i], source[i])


def test_video_shorter_than_audio_plays_forward_and_backward(tmp_path, tiny_musetalk, clip10, speech1s, captured):
    out = tmp_path / "pingpong.mp4"
    assert dub(clip10, speech1s, out, DubOptions(**FAST), model=tiny_musetalk).frames == 25
    assert probe(out).num_frames == 25
    decoded = [f for f in read_frames(clip10)]
    for i in range(25):  # the top rows identify which source frame was shown
        np.testing.assert_array_equal(captured[i][:100], decoded[pingpong_index(i, 10)][:100])


def test_photo_source(tmp_path, tiny_musetalk, media, speech1s):
    out = tmp_path / "photo.mp4"
    result = dub(media / "musk.png", speech1s, out, DubOptions(fps=30, **FAST), model=tiny_musetalk)
    info = probe(out)
    assert result.frames == info.num_frames == 30 and info.fps == 30 and (info.width, info.height) == (474, 266)
    assert abs(audio_seconds(out) - 1.0) < 1e-3


def test_ntsc_source_keeps_its_true_rate(tmp_path, tiny_musetalk, sun_frames, speech1s):
    clip = write_clip(tmp_path / "ntsc.mp4", sun_frames[:30], fps=Fraction(30000, 1001))
    assert probe(clip).fps == Fraction(30000, 1001)
    out = tmp_path / "ntsc_out.mp4"
    result = dub(clip, speech1s, out, DubOptions(**FAST), model=tiny_musetalk)
    assert probe(out).fps == Fraction(30000, 1001)
    assert result.frames == probe(out).num_frames == math.floor(1.0 * 30000 / 1001) == 29


def test_odd_size_is_kept(tmp_path, tiny_musetalk, sun_frames, speech1s):
    clip = write_clip(tmp_path / "odd.mp4", [np.ascontiguousarray(f[:767, :575]) for f in sun_frames[:5]])
    out = tmp_path / "odd_out.mp4"
    dub(clip, speech1s, out, DubOptions(end=0.2, **FAST), model=tiny_musetalk)
    info = probe(out)
    assert (info.width, info.height, info.num_frames) == (575, 767, 5)


def test_no_face_stretch_passes_through_in_place(tmp_path, tiny_musetalk, sun_frames, speech1s, captured):
    frames = [f.copy() for f in sun_frames[:25]]
    for k in range(10, 16):
        frames[k][:] = 128  # face painted over for 6 frames (up to 5 would be interpolated): a flat grey frame
    clip = write_clip(tmp_path / "gap.mp4", frames)
    decoded = list(read_frames(clip))
    captured.clear()
    out = tmp_path / "gap_out.mp4"
    result = dub(clip, speech1s, out, DubOptions(**FAST), model=tiny_musetalk)
    assert result.frames == 25 and result.frames_without_face == 6
    for k in range(10, 16):
        np.testing.assert_array_equal(captured[k], decoded[k])
    for k in (9, 16):
        assert not np.array_equal(captured[k], decoded[k])
        np.testing.assert_array_equal(captured[k][:150], decoded[k][:150])


def test_start_end_cut_the_audio(tmp_path, tiny_musetalk, clip40, media):
    out = tmp_path / "cut.mp4"
    result = dub(clip40, media / "sun.wav", out, DubOptions(start=2.0, end=2.6, **FAST), model=tiny_musetalk)
    assert result.frames == 15 == probe(out).num_frames
    assert abs(audio_seconds(out) - 0.6) < 1e-3


def test_debug_overlay_written(tmp_path, tiny_musetalk, media, speech1s):
    overlay = tmp_path / "overlay.png"
    dub(media / "musk.png", speech1s, tmp_path / "o.mp4", DubOptions(end=0.2, debug_overlay=str(overlay), **FAST),
        model=tiny_musetalk)
    import cv2

    image = cv2.imread(str(overlay))
    assert image is not None and image.shape == (266, 474, 3)


def test_stereo_48k_audio_is_muxed_at_its_own_rate(tmp_path, tiny_musetalk, clip10, media):
    samples, rate = sf.read(media / "sun.wav", dtype="float32")
    import soxr

    stereo = soxr.resample(samples[:rate // 2], rate, 48000)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([stereo, stereo], axis=1), 48000)
    out = tmp_path / "stereo_out.mp4"
    assert dub(clip10, path, out, DubOptions(**FAST), model=tiny_musetalk).frames == 12
    with av.open(str(out)) as container:
        stream = container.streams.audio[0]
        assert (stream.rate, stream.channels) == (48000, 2)
    assert abs(audio_seconds(out) - 0.5) < 1e-3


def test_parsing_blend_with_bisenet_weights(tmp_path, tiny_models, clip10, speech1s, captured):
    out = tmp_path / "parsed.mp4"
    dub(clip10, speech1s, out, DubOptions(models=str(tiny_models), blend="parsing", end=0.2, **FAST))
    source = list(read_frames(clip10))
    assert probe(out).num_frames == 5 and len(captured) == 5
    np.testing.assert_array_equal(captured[0][:150], source[0][:150])


def test_large_buffers_are_mapped_on_glibc():
    import platform

    from musetalk.pipeline.memory import map_large_buffers

    assert map_large_buffers() == (platform.libc_ver()[0] == "glibc")
