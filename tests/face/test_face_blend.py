"""Blend masks, paste-back, colour matching, serialisation, BiSeNet and the debug overlay."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from musetalk.errors import CheckpointError
from musetalk.face import (BlendMask, FaceRecord, draw_debug_overlay, expanded_box, load_face_parser,
                           load_records, make_blend_mask, match_colour, paste_face, save_records)
from musetalk.models.bisenet import BiSeNet, load_bisenet
from musetalk.models.random_init import write_face_parser


@pytest.mark.parametrize("mode", ["jaw", "raw", "neck"])
def test_landmark_mask_is_feathered_lower_face(sun_frames, sun_raw, mode):
    rec = sun_raw[0]
    mask = make_blend_mask(sun_frames[0].shape, rec, mode)
    m = mask.mask
    assert m.dtype == np.float32 and m.min() >= 0.0 and m.max() <= 1.0 and m.max() > 0.95
    ex = expanded_box(rec.crop_box)
    assert mask.box.tolist() == ex.tolist()  # inside the frame here
    assert not m[: m.shape[0] // 2 - m.shape[0] // 20].any()  # nothing above the upper boundary (+ feather)
    edges = np.concatenate([m[0], m[-1], m[:, 0], m[:, -1]])
    assert edges.max() < 1e-3  # no visible rectangle
    assert max(np.abs(np.diff(m, axis=0)).max(), np.abs(np.diff(m, axis=1)).max()) < 0.2  # no hard edges
    mouth = rec.landmarks[62] - mask.box[:2]
    assert m[int(mouth[1]), int(mouth[0])] > 0.9
    nose_tip = rec.landmarks[33] - mask.box[:2]
    assert m[int(nose_tip[1]) - 3, int(nose_tip[0])] < 0.5


def test_paste_leaves_outside_pixels_identical(sun_frames, sun_raw):
    frame, rec = sun_frames[0], sun_raw[0]
    mask = make_blend_mask(frame.shape, rec)
    face = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    out = paste_face(frame, face, rec, mask)
    assert out.shape == frame.shape and out.dtype == np.uint8
    x1, y1, x2, y2 = mask.box
    outside = np.ones(frame.shape[:2], bool)
    outside[y1:y2, x1:x2] = False
    assert np.array_equal(out[outside], frame[outside])
    inside = out[y1:y2, x1:x2]
    assert np.array_equal(inside[mask.mask == 0], frame[y1:y2, x1:x2][mask.mask == 0])
    assert not np.array_equal(inside, frame[y1:y2, x1:x2])


def test_pasting_the_own_crop_changes_little(sun_frames, sun_raw):
    from musetalk.face import crop_face

    frame, rec = sun_frames[0], sun_raw[0]
    out = paste_face(frame, crop_face(frame, rec), rec, make_blend_mask(frame.shape, rec))
    assert np.abs(out.astype(int) - frame).mean() < 0.5


def test_mask_clipped_at_the_frame_edge(sun_frames, sun_raw):
    frame, rec = sun_frames[0], sun_raw[0]
    shifted = FaceRecord(True, rec.box - [200, 0, 200, 0], rec.landmarks - [200, 0],
                         np.maximum(rec.crop_box - [200, 0, 200, 0], 0))
    mask = make_blend_mask(frame.shape, shifted)
    assert mask.box[0] == 0 and mask.mask.shape == (mask.box[3] - mask.box[1], mask.box[2] - mask.box[0])
    out = paste_face(frame, np.zeros((256, 256, 3), np.uint8), shifted, mask)
    assert np.array_equal(out[:, mask.box[2]:], frame[:, mask.box[2]:])


def test_colour_matching_removes_a_cast(sun_frames, sun_raw):
    from musetalk.face import crop_face

    frame, rec = sun_frames[0], sun_raw[0]
    x1, y1, x2, y2 = rec.crop_box
    target = frame[y1:y2, x1:x2]
    cast = np.clip(target.astype(int) + [40, -20, 0], 0, 255).astype(np.uint8)
    fixed = match_colour(cast, target, np.ones(target.shape[:2], np.float32))
    assert np.abs(fixed.astype(int) - target).mean() < 0.3 * np.abs(cast.astype(int) - target).mean()
    mask = make_blend_mask(frame.shape, rec)
    face = crop_face(frame, rec)
    face = np.clip(face.astype(int) + [40, -20, 0], 0, 255).astype(np.uint8)
    plain, matched = (paste_face(frame, face, rec, mask, colour_match=c) for c in (False, True))
    assert np.abs(matched.astype(int) - frame).mean() < np.abs(plain.astype(int) - frame).mean()


def test_records_and_masks_serialise(tmp_path, sun_frames, sun_raw):
    rec = sun_raw[3]
    again = FaceRecord.from_dict(rec.to_dict())
    assert again.found and np.array_equal(again.landmarks, rec.landmarks)
    assert np.array_equal(again.crop_box, rec.crop_box) and again.crop_box.dtype == np.int32
    np.savez(tmp_path / "r.npz", **rec.to_dict())
    with np.load(tmp_path / "r.npz") as data:
        assert np.array_equal(FaceRecord.from_dict(data).box, rec.box)
    records = [rec, FaceRecord.missing(), sun_raw[4]]
    save_records(tmp_path / "all.npz", records)
    loaded = load_records(tmp_path / "all.npz")
    assert [r.found for r in loaded] == [True, False, True]
    assert np.array_equal(loaded[2].landmarks, sun_raw[4].landmarks)
    mask = make_blend_mask(sun_frames[3].shape, rec)
    data = mask.to_dict()
    assert data["mask"].dtype == np.uint8
    back = BlendMask.from_dict(data)
    assert np.array_equal(back.box, mask.box) and np.abs(back.mask - mask.mask).max() <= 0.5 / 255 + 1e-6
    assert FaceRecord.from_dict({k: v.tolist() for k, v in rec.to_dict().items()}).found


def _write_random_bisenet(root) -> None:
    write_face_parser(root)


def test_bisenet_official_key_layout():
    keys = BiSeNet().state_dict()
    for key in ("cp.resnet.conv1.weight", "cp.resnet.layer2.0.downsample.0.weight", "cp.resnet.layer4.1.bn2.running_var",
                "cp.arm16.conv.conv.weight", "cp.arm32.conv_atten.weight", "cp.arm32.bn_atten.bias",
                "cp.conv_head32.conv.weight", "cp.conv_avg.bn.weight", "ffm.convblk.conv.weight", "ffm.conv1.weight",
                "ffm.conv2.weight", "conv_out.conv.conv.weight", "conv_out.conv_out.weight",
                "conv_out16.conv_out.weight", "conv_out32.conv.bn.running_mean"):
        assert key in keys
    assert keys["conv_out.conv_out.weight"].shape == (19, 256, 1, 1)
    assert keys["cp.conv_avg.conv.weight"].shape == (128, 512, 1, 1)


def test_bisenet_random_weights_load_and_parse(tmp_path, sun_frames, sun_raw):
    _write_random_bisenet(tmp_path)
    parser = load_face_parser(tmp_path)
    assert parser is not None
    with torch.no_grad():
        logits = parser.net(torch.zeros(1, 3, 64, 64))
    assert logits.shape == (1, 19, 64, 64)
    frame, rec = sun_frames[0], sun_raw[0]
    mask = make_blend_mask(frame.shape, rec, "jaw", parser=parser, frame=frame)
    assert mask.mask.shape == (mask.box[3] - mask.box[1], mask.box[2] - mask.box[0])
    assert 0.0 <= mask.mask.min() and mask.mask.max() <= 1.0
    assert load_face_parser(tmp_path / "empty") is None


def test_bisenet_wrong_file_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "bad.pth"
    torch.save({"cp.resnet.conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError):
        load_bisenet(path)


def test_debug_overlay_and_cli(tmp_path, media, sun_frames, sun_raw):
    frame, rec = sun_frames[0], sun_raw[0]
    overlay = draw_debug_overlay(frame, rec, make_blend_mask(frame.shape, rec))
    assert overlay.shape == frame.shape and not np.array_equal(overlay, frame)
    assert not np.array_equal(draw_debug_overlay(frame, FaceRecord.missing()), frame)
    from musetalk.cli.main import main

    out = tmp_path / "debug.png"
    assert main(["face-debug", str(media / "musk.png"), "-o", str(out)]) == 0
    assert out.is_file() and out.stat().st_size > 1000


def test_bisenet_checkpoint_without_batch_counters_loads(tmp_path):
    """Checkpoints saved by old PyTorch have no BatchNorm num_batches_tracked; other missing keys still fail."""
    from musetalk.errors import CheckpointError

    path = write_face_parser(tmp_path)
    state = torch.load(path)
    trimmed = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    assert len(trimmed) < len(state)
    torch.save(trimmed, path)
    net = load_bisenet(path)
    assert torch.equal(net.state_dict()["cp.resnet.conv1.weight"], state["cp.resnet.conv1.weight"])
    del trimmed["cp.resnet.conv1.weight"]
    torch.save(trimmed, path)
    with pytest.raises(CheckpointError, match=r"1 missing keys \(first: cp.resnet.conv1.weight\)"):
        load_bisenet(path)


def test_default_blend_mode_has_one_definition():
    from musetalk.face import default_blend_mode
    from musetalk.realtime.avatars.store import PrepareSettings

    assert default_blend_mode("v1.5") == "jaw" and default_blend_mode("v1.0") == "raw"
    for version in ("v1.5", "v1.0"):
        assert PrepareSettings().resolved(version).blend_mode == default_blend_mode(version)


def test_paste_blend_is_the_weighted_mean_rounded(sun_frames, sun_raw):
    """Inside the mask box the paste is face x w + frame x (1 - w), rounded (within one level of float
    round-off); weights 0 and 1 give the frame and the resized face exactly."""
    import cv2

    frame, rec = sun_frames[0], sun_raw[0]
    mask = make_blend_mask(frame.shape, rec)
    face = np.random.default_rng(3).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    out = paste_face(frame, face, rec, mask)
    x1, y1, x2, y2 = (int(v) for v in rec.crop_box)
    mx1, my1, mx2, my2 = (int(v) for v in mask.box)
    large = frame[my1:my2, mx1:mx2].copy()
    resized = cv2.resize(face, (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR)
    ix1, iy1, ix2, iy2 = max(x1, mx1), max(y1, my1), min(x2, mx2), min(y2, my2)
    large[iy1 - my1:iy2 - my1, ix1 - mx1:ix2 - mx1] = resized[iy1 - y1:iy2 - y1, ix1 - x1:ix2 - x1]
    base, w = frame[my1:my2, mx1:mx2].astype(np.float64), mask.mask[..., None].astype(np.float64)
    expected = np.rint(base + w * (large - base))
    inside = out[my1:my2, mx1:mx2].astype(np.float64)
    assert np.abs(inside - expected).max() <= 1
    assert np.array_equal(inside[mask.mask == 1], large[mask.mask == 1])
    assert np.array_equal(inside[mask.mask == 0], base[mask.mask == 0])
