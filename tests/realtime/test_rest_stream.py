"""The shared rest stream: the avatar's rest loop encoded once, keyframes where viewers may join, every
position decoding to the source frame the rest loop shows there."""
from __future__ import annotations

import time
import types
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from musetalk.realtime.outputs.rest_stream import KEY_INTERVAL, MAX_CYCLE, RestStreams, cycle_length, encode_rest_loop

MEDIA = Path(__file__).resolve().parents[2].parent / "shared" / "media"


class Frames:
    """``count`` source frames made on demand: musk.png at ``size``, frame k brightened by 12 x k."""

    def __init__(self, count: int, size: tuple[int, int]) -> None:
        self.base = cv2.cvtColor(cv2.resize(cv2.imread(str(MEDIA / "musk.png")), size), cv2.COLOR_BGR2RGB)
        self.shape = (count, *self.base.shape)

    def __getitem__(self, k: int) -> np.ndarray:
        return np.clip(self.base.astype(np.int16) + 12 * k, 0, 255).astype(np.uint8)


def fake_avatar(count: int, name: str = "a", size: tuple[int, int] = (320, 180)):
    """What the rest stream reads of an Avatar: ``count`` frames in ping-pong order, fps, name, meta."""
    order = np.array(list(range(count)) + list(range(count - 1, -1, -1)))
    return types.SimpleNamespace(frames=Frames(count, size), order=order, fps=25.0, name=name,
                                 meta={"fingerprint": "f"}, source_index=lambda i: int(order[i % len(order)]))


def test_cycle_is_whole_loops_and_whole_key_intervals_when_short():
    assert [cycle_length(n) for n in (2, 8, 50, 98, 120)] == [KEY_INTERVAL, 200, 50, 98, 120]


@pytest.mark.parametrize("codec", ["H264", "VP8"])
@pytest.mark.parametrize("count", [1, 4])
def test_every_position_decodes_to_its_rest_frame_from_any_keyframe(codec, count):
    avatar = fake_avatar(count)
    stream = encode_rest_loop(avatar, codec, 1500)
    assert stream.cycle == cycle_length(2 * count)
    assert [p for p in range(stream.cycle) if stream.joinable(p)] == list(range(0, stream.cycle, KEY_INTERVAL))
    for join in [p for p in range(stream.cycle) if stream.joinable(p)][-2:]:
        decoder = av.CodecContext.create("h264" if codec == "H264" else "vp8", "r")
        worst = np.inf
        for index in range(join, join + stream.cycle + 3):  # once round the cycle and into the next
            pictures = decoder.decode(stream.packet(index, index * 3600, av.time_base))
            assert len(pictures) == 1
            expected = avatar.frames[avatar.source_index(index)].astype(np.float64)
            error = np.mean((pictures[0].to_ndarray(format="rgb24") - expected) ** 2)
            worst = min(worst, 10 * np.log10(255 ** 2 / error))
        assert worst > 32, (join, worst)


def test_registry_encodes_once_and_refuses_what_cannot_be_shared(caplog):
    streams = RestStreams(1500)
    photo, long_video, odd = fake_avatar(1, "photo"), fake_avatar(MAX_CYCLE // 2 + 1, "long"), fake_avatar(1, "odd", (321, 180))
    deadline = time.monotonic() + 60
    while streams.get(photo, "H264") is None:
        assert time.monotonic() < deadline, "the photo's rest stream was not made"
        time.sleep(0.02)
    assert streams.get(photo, "H264") is streams.get(photo, "H264") and streams.encodings == 1
    assert streams.get(photo, "AV1") is None
    caplog.set_level("INFO", "musetalk.realtime.outputs.rest_stream")
    for avatar in (long_video, odd):
        assert streams.get(avatar, "H264") is None
    while caplog.text.count("not shared: each viewer encodes its own") < 2:
        assert time.monotonic() < deadline, caplog.text
        time.sleep(0.02)
    assert f"avatar long: rest loop of {2 * (MAX_CYCLE // 2 + 1)} frames (320x180) not shared" in caplog.text
    assert "avatar odd: rest loop of 2 frames (321x180) not shared" in caplog.text
    assert streams.get(long_video, "H264") is None and streams.get(odd, "H264") is None and streams.encodings == 1
