"""Avatar preparation: what is stored, the round trip, fingerprints that force re-preparation, errors, CLI."""
from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest

from musetalk.errors import FaceError
from musetalk.realtime.avatars.store import AvatarError, AvatarStore, PrepareSettings

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
    assert meta["num_frames"] == 1 and meta["mask"] == "parsing"  # the models folder has the face parser
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


def test_frames_are_the_stored_jpegs_decoded(store):
    from musetalk.face import crop_face
    from musetalk.video.jpeg import decode_jpeg

    avatar = store.load("video")
    for i in range(VIDEO_FRAMES):
        frame = avatar.frames[i]
        np.testing.assert_array_equal(frame, decode_jpeg(avatar.frame_jpeg(i)))
        assert frame.shape == (768, 576, 3) and frame.dtype == np.uint8 and not frame.flags.writeable
        np.testing.assert_array_equal(avatar.crops[i], crop_face(frame, avatar.records[i]))
    assert avatar.frame_jpeg(0) == store.poster("video")
    with pytest.raises(IndexError):
        avatar.frames[VIDEO_FRAMES]


FRAME_BYTES = 768 * 576 * 3


def test_memory_cache_evicts_least_recently_used(store, tiny_musetalk):
    probe = AvatarStore(store.root, tiny_musetalk).load("video")
    cap = probe.nbytes + 2 * FRAME_BYTES + 1000
    lru = AvatarStore(store.root, tiny_musetalk, cache_mb=cap / 2**20)
    avatar = lru.load("video")
    assert lru.load("video") is avatar and lru.cache.bytes_used == avatar.nbytes
    decoded = [avatar.frames[i].copy() for i in range(3)]  # the third evicts the avatar, then frame 0
    key = avatar._serial
    assert lru.cache.keys() == [(key, "frame", 1), (key, "frame", 2)]
    assert lru.cache.bytes_used == 2 * FRAME_BYTES <= lru.cache.capacity_bytes
    hits = lru.cache.hits
    np.testing.assert_array_equal(avatar.frames[1], decoded[1])
    assert lru.cache.hits == hits + 1
    np.testing.assert_array_equal(avatar.frames[0], decoded[0])  # decoded again, evicting frame 2
    assert lru.cache.keys() == [(key, "frame", 1), (key, "frame", 0)]
    again = lru.load("video")
    assert again is not avatar and again.frames.shape == avatar.frames.shape


def test_memory_cache_smaller_than_a_frame_keeps_nothing_and_still_serves(store, tiny_musetalk):
    tiny = AvatarStore(store.root, tiny_musetalk, cache_mb=FRAME_BYTES / 2 / 2**20)
    avatar = tiny.load("video")
    np.testing.assert_array_equal(avatar.frames[2], store.load("video").frames[2])
    assert avatar.mask(2).mask.shape == store.load("video").mask(2).mask.shape
    assert all(key[1] == "mask" or key[0] == "avatar" for key in tiny.cache.keys())
    assert tiny.cache.bytes_used <= tiny.cache.capacity_bytes


def test_stored_size_per_frame(store):
    """sun.mp4 as an avatar, extrapolated from its first 4 frames: under 75 MB for all 550 frames. Measured
    once on all 550 frames (14 min of preparation on 2 loaded cores, too long for the suite): 65.9 MB (JPEG
    frames 44.6 MB, latents 18.0 MB, packed masks 3.1 MB, records 0.25 MB), where format 1 stored 730 MB of
    raw frames alone."""
    folder = store.root / "video"
    total = sum(p.stat().st_size for p in folder.iterdir())
    assert total / VIDEO_FRAMES * 550 < 75e6, total


def test_recorded_faces_replace_the_analysis(tmp_path, store, tiny_musetalk, media):
    """A machine without the landmark model prepares from face records: the same crops and latents."""
    from musetalk.face import save_records

    analysed = store.load("video")
    records = tmp_path / "sun.npz"
    save_records(records, list(analysed.records))
    fresh = AvatarStore(tmp_path / "avatars", tiny_musetalk)
    settings = PrepareSettings(max_frames=VIDEO_FRAMES, face_records=str(records))
    avatar = fresh.prepare(media / "sun.mp4", "recorded", settings)
    np.testing.assert_array_equal(avatar.crops, analysed.crops)
    np.testing.assert_allclose(avatar.latents, analysed.latents, atol=1e-5)
    too_few = tmp_path / "two.npz"
    save_records(too_few, list(analysed.records)[:2])
    with pytest.raises(FaceError, match=rf"^{too_few} holds the faces of 2 frames but the source has more: "):
        fresh.prepare(media / "sun.mp4", "short", PrepareSettings(max_frames=VIDEO_FRAMES, face_records=str(too_few)))
    with pytest.raises(FaceError, match="^face records not found: "):
        fresh.prepare(media / "sun.mp4", "none", PrepareSettings(face_records=str(tmp_path / "missing.npz")))
    assert [a["name"] for a in fresh.list()] == ["recorded"]
