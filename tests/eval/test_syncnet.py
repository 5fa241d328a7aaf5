"""SyncNet network (published key layout) and the LSE protocol pieces."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from musetalk.errors import CheckpointError, MuseTalkError
from musetalk.eval import lse as L
from musetalk.eval.mfcc import mfcc
from musetalk.models.syncnet_v2 import SyncNetV2, load_syncnet_v2


def test_network_shapes_and_published_keys():
    net = SyncNetV2().eval()
    with torch.no_grad():
        assert net.forward_aud(torch.randn(2, 1, 13, 20)).shape == (2, 1024)
        assert net.forward_lip(torch.randn(2, 3, 5, 224, 224)).shape == (2, 1024)
    keys = net.state_dict()
    assert tuple(keys["netcnnaud.18.weight"].shape) == (512, 256, 5, 4)
    assert tuple(keys["netcnnlip.0.weight"].shape) == (96, 3, 5, 7, 7)
    assert tuple(keys["netcnnlip.18.weight"].shape) == (512, 256, 1, 6, 6)
    assert tuple(keys["netfcaud.3.weight"].shape) == (1024, 512)
    assert "netfclip.1.running_var" in keys


def test_checkpoint_without_batch_counters_loads_and_bad_one_is_named(tmp_path):
    torch.manual_seed(0)
    state = {k: v for k, v in SyncNetV2().state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "syncnet_v2.model")
    net = load_syncnet_v2(tmp_path / "syncnet_v2.model")
    assert torch.equal(net.netcnnlip[0].weight, state["netcnnlip.0.weight"])
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not a syncnet_v2 checkpoint"):
        load_syncnet_v2(tmp_path / "other.pth")


def test_mfcc_matches_python_speech_features():
    """Reference values computed once with python_speech_features 0.6 ``mfcc(x, 16000)``."""
    t = np.arange(4000) / 16000
    x = np.round(8000 * np.sin(2 * np.pi * 440 * t) + 3000 * np.sin(2 * np.pi * 1500 * t * (1 + t)))
    ceps = mfcc(x, 16000)
    assert ceps.shape == (24, 13)
    expected = [[20.032939, 12.741827, -22.001088, 12.793659], [20.254392, 11.658284, -38.817971, 31.40188],
                [20.284122, 15.207419, -56.396316, -9.817291]]
    np.testing.assert_allclose(ceps[[0, 10, 23]][:, [0, 1, 5, 12]], expected, atol=1e-5)


@pytest.mark.parametrize("shift", [-7, 0, 4, 12])
def test_offset_search_finds_planted_shift(shift):
    """Video window i is planted near audio window i + shift (audio delayed): offset = -shift."""
    rng = np.random.default_rng(shift + 20)
    audio = rng.normal(size=(120, 64))
    video = np.roll(audio, -shift, axis=0) + 0.3 * rng.normal(size=audio.shape)
    scores = L.scores_from_distances(L.shift_distances(video, audio))
    assert scores.offset == -shift
    assert scores.confidence > 1.0
    assert scores.distance == pytest.approx(scores.curve.min())
    assert scores.curve.shape == (31,)


def test_crop_boxes_follow_the_published_geometry():
    boxes = np.tile([100.0, 200.0, 200.0, 300.0], (20, 1))  # 100 px box, centre (150, 250)
    crop = L.crop_boxes(boxes)
    np.testing.assert_allclose(crop[0], [150 - 70, 250 - 50, 150 + 70, 250 + 90])
    frame = np.zeros((320, 240, 3), np.uint8)
    out = L.crop_face(frame, crop[0])
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    assert (out[-1] == L.PAD_VALUE).all()  # below the frame: grey padding


def test_resampling_and_window_count():
    np.testing.assert_array_equal(L.resample_to_25fps(6, 30.0), [0, 1, 2, 3, 4])
    assert L.window_count(100, 100 * 640) == 95
    with pytest.raises(MuseTalkError, match="too short"):
        L.embed(SyncNetV2(), np.zeros((4, 224, 224, 3), np.uint8), np.zeros(4 * 640, np.float32))


def test_lse_runs_on_real_frames_with_random_weights(sun_frames, sun_records, sun_audio):
    torch.manual_seed(0)
    frames = sun_frames[:12]
    boxes = np.stack([r.box for r in sun_records[:12]])
    net = SyncNetV2()
    scores = L.lse(net, frames, boxes, sun_audio, 25.0)
    crops = np.stack([L.crop_face(f, b) for f, b in zip(frames, L.crop_boxes(boxes.astype(np.float64)))])
    distances = L.shift_distances(*L.embed(net, crops, sun_audio))
    assert distances.shape == (7, 31)  # 12 frames: 7 windows of 5, each against 31 shifts
    curve = distances.mean(axis=0)
    assert scores.offset == 15 - int(np.argmin(curve)) and scores.distance == pytest.approx(curve.min())
    assert scores.confidence == pytest.approx(np.median(curve) - curve.min())
