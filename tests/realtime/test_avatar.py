"""Avatar preparation: what is stored, the round trip, fingerprints that force re-preparation, errors, CLI."""
from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest

from musetalk.errors import FaceError
from musetalk.realtime.avatar import AvatarError, AvatarStore, PrepareSettings

from .conftest import VIDEO_FRAMES


def test_round_trip(store, tiny_musetalk):
    fresh = AvatarStore(store.root, tiny_musetalk)
    start = time.perf_counter()
    avatar = fresh.load("video")
    assert time.perf_counter() - start < 0.5
    prepared = store.load("video")
    assert avatar is not prepared
    n = VIDEO_FRAMES
    assert avatar.frames.shape == (n, 768, 576, 3) and avatar.frames.dtype == np.uint8
    assert avatar.latents.shape == (n, 8, 32, 32) and avatar.latents.dtype == np.float32
    assert avatar.order.tolist() == [0, 1, 2, 3, 3, 2, 1, 0]
    assert [avatar.source_index(i) for i in range(10)] == [0, 1, 2, 3, 3, 2, 1, 0, 0, 1]
    np.testing.assert_array_equal(avatar.frames, prepared.frames)
    np.testing.assert_array_equal(avatar.crops, prepared.crops)
    expected = tiny_musetalk.unet_input(np.asarray(avatar.crops), np.asarray(avatar.crops)).numpy()
    np.testing.assert_allclose(avatar.latents, expected, atol=1e-5)
    for i in range(n):
        assert avatar.records[i].found
        np.testing.assert_array_equal(avatar.records[i].crop_box, prepared.records[i].crop_box)
        a, b = avatar.mask(i), prepared.mask(i)
        np.testing.assert_array_equal(a.box, b.box)
        np.testing.assert_array_equal(a.mask, b.mask)
        assert 0 < a.mask.max() <= 1
    assert avatar.info() == {"name": "video", "fps": 25.0, "width": 576, "height": 768, "num_frames": n,
                             "faces": n, "source_name": "sun.mp4", "created": avatar.meta["created"]}
    assert [a["name"] for a in fresh.list()] == ["photo", "video"]


def test_up_to_date_is_not_prepared_again(store, media):
    before = (store.root / "photo" / "avatar.json").stat().st_mtime_ns
    store.prepare(media / "musk.png", "photo")
    assert (store.root / "photo" / "avatar.json").stat().st_mtime_ns == before


def test_changed_source_is_refused_until_prepared_again(tmp_path, tiny_musetalk, media):
    source = tmp_path / "face.png"
    shutil.copy(media / "musk.png", source)
    store = AvatarStore(tmp_path / "avatars", tiny_musetalk)
    first = store.prepare(source, "face")
    assert first.meta["width"] == 474
    shutil.copy(media / "monalisa.png", source)
    with pytest.raises(AvatarError, match=f"avatar 'face' is stale \\(source {source} changed\\): prepare it again"):
        store.load("face")
    again = store.prepare(source, "face")
    assert again.meta["width"] == 300 and again.meta["fingerprint"] != first.meta["fingerprint"]
    assert AvatarStore(store.root, tiny_musetalk).load("face").meta["fingerprint"] == again.meta["fingerprint"]


def test_changed_model_is_refused_until_prepared_again(tmp_path, tiny_models, tiny_musetalk, media):
    from musetalk import MuseTalk

    source = tmp_path / "face.png"
    shutil.copy(media / "musk.png", source)
    AvatarStore(tmp_path / "avatars", tiny_musetalk).prepare(source, "face")
    other = AvatarStore(tmp_path / "avatars", MuseTalk.from_pretrained(tiny_models, version="v1.0"))
    with pytest.raises(AvatarError, match="avatar 'face' is stale \\(prepared for model"):
        other.load("face")
    reprepared = other.prepare(source, "face")
    assert reprepared.meta["model"]["version"] == "v1.0" and reprepared.meta["blend_mode"] == "raw"


def test_errors(tmp_path, tiny_musetalk, media):
    store = AvatarStore(tmp_path / "avatars", tiny_musetalk)
    with pytest.raises(AvatarError, match="invalid avatar name"):
        store.prepare(media / "musk.png", "../evil")
    with pytest.raises(AvatarError, match="not found"):
        store.prepare(tmp_path / "missing.mp4", "x")
    with pytest.raises(AvatarError, match="no avatar named"):
        store.load("nobody")
    with pytest.raises(AvatarError, match="no avatar named"):
        store.remove("nobody")
    import cv2

    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((200, 200, 3), 127, np.uint8))
    with pytest.raises(FaceError, match="no face"):
        store.prepare(blank, "blank")
    assert store.list() == []


def test_cli_prepare_list_remove(tmp_path, tiny_models, media, capsys):
    from musetalk.cli.main import main

    avatars = str(tmp_path / "avatars")
    assert main(["avatar", "prepare", str(media / "musk.png"), "--name", "musk", "--avatars", avatars,
                 "--models", str(tiny_models), "--device", "cpu"]) == 0
    meta = json.loads((tmp_path / "avatars" / "musk" / "avatar.json").read_text())
    assert meta["num_frames"] == 1 and meta["mask"] == "landmarks"
    capsys.readouterr()
    assert main(["avatar", "list", "--avatars", avatars]) == 0
    out = capsys.readouterr().out
    assert "musk" in out and "474x266" in out
    assert main(["avatar", "remove", "musk", "--avatars", avatars]) == 0
    assert main(["avatar", "remove", "musk", "--avatars", avatars]) == 1
    assert "no avatar named 'musk'" in capsys.readouterr().err


def test_settings_are_part_of_the_fingerprint(store, media):
    avatar = store.prepare(media / "musk.png", "photo", PrepareSettings(extra_margin=20))
    assert avatar.meta["settings"]["extra_margin"] == 20
    assert store.prepare(media / "musk.png", "photo").meta["settings"]["extra_margin"] == 10
