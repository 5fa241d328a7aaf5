"""Incremental audio prompts: the same windows and frame count as offline, whatever the chunking."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from musetalk.audio.features import frame_count, frame_windows, whisper_hidden_states
from musetalk.realtime.engine.streaming import SEGMENT_STATES, FeatureStream, encode_plans, states_in

from .conftest import uneven_chunks


def fake_states(plan) -> np.ndarray:
    """What an encoder would give, with every value = global feature-frame index + 1 (0 is padding)."""
    n = sum(plan.num_states)
    return np.broadcast_to((plan.first_state + np.arange(n, dtype=np.float32) + 1)[:, None, None], (n, 5, 384))


def stream_prompts(stream: FeatureStream, chunks, encode=fake_states) -> np.ndarray:
    out = []
    for chunk in chunks:
        stream.push(chunk)
        if (plan := stream.plan()) is not None:
            out.append(stream.prompts(plan, encode(plan)))
    stream.finish()
    while (plan := stream.plan()) is not None:
        out.append(stream.prompts(plan, encode(plan)))
    return np.concatenate(out) if out else np.zeros((0, 50, 384), np.float32)


@pytest.mark.parametrize("seconds, fps", [(3.37, 25.0), (1.0, 29.97), (2.5, 30.0), (0.3, 25.0), (4.0, 12.5),
                                          (0.05, 25.0), (65.3, 25.0)])
def test_windows_and_count_match_offline(seconds, fps):
    """Frame count floor(S x fps) and each frame's feature frames equal the offline windows, also across
    30 s segments, with uneven chunks."""
    n = int(seconds * 16000)
    stream = FeatureStream(fps, lookahead_s=0.4)
    got = stream_prompts(stream, uneven_chunks(np.zeros(n, np.float32), seed=n, largest=20000))
    states = np.broadcast_to((np.arange(states_in(n), dtype=np.float32) + 1)[:, None, None], (states_in(n), 5, 384))
    expected = frame_windows(np.ascontiguousarray(states), n, fps)
    assert len(got) == frame_count(n, fps) == math.floor(seconds * fps + 1e-9)
    np.testing.assert_array_equal(got, expected)


def test_plans_follow_the_offline_segments():
    stream = FeatureStream(25.0, lookahead_s=0.4)
    seen = []
    for chunk in uneven_chunks(np.zeros(16000 * 70, np.float32), largest=30000):
        stream.push(chunk)
        if (plan := stream.plan()) is not None:
            seen.append(plan)
    assert all(p.first_state % SEGMENT_STATES == 0 for p in seen)
    assert all(len(w) <= 480000 for p in seen for w in p.windows)
    assert [p.start for p in seen[1:]] == [p.stop for p in seen[:-1]]
    assert any(len(p.windows) == 2 for p in seen)  # frames straddling a segment boundary


def test_lookahead_gates_frames():
    """Frame i (25 fps) uses feature frames up to 2i + 5; it waits for 0.4 s of audio after them."""
    stream = FeatureStream(25.0, lookahead_s=0.4)
    stream.push(np.zeros((2 * 10 + 6) * 320 + 6400 - 1, np.float32))
    assert stream.ready(stream.total) == 10
    stream.push(np.zeros(1, np.float32))
    assert stream.ready(stream.total) == 11
    stream.finish()
    assert stream.ready(stream.total) == frame_count(stream.total, 25.0)
    with pytest.raises(ValueError):
        stream.push(np.zeros(3, np.float32))


def test_whole_clip_at_once_equals_offline(tiny_musetalk, speech):
    """Audio that all arrives before the first encoding gives the offline prompts exactly."""
    mt = tiny_musetalk
    clip = speech[: 16000 * 3 + 517]
    encode = lambda plan: encode_plans(mt.whisper, mt.feature_extractor, [plan], mt.device, mt.dtype)[0]  # noqa: E731
    got = stream_prompts(FeatureStream(25.0), [clip], encode)
    np.testing.assert_allclose(got, mt.features_from_samples(clip, 25.0), atol=1e-5)


def test_batched_encoding_equals_single(tiny_musetalk, speech):
    """Windows of several sessions in one whisper batch give what each gives alone."""
    mt = tiny_musetalk
    plans = []
    for n in (16000, 27000):
        stream = FeatureStream(25.0, lookahead_s=0.2)
        stream.push(speech[:n])
        plans.append(stream.plan())
    batched = encode_plans(mt.whisper, mt.feature_extractor, plans, mt.device, mt.dtype)
    for plan, states in zip(plans, batched):
        single = whisper_hidden_states(mt.whisper, mt.feature_extractor, plan.windows[0], mt.device, torch.float32)
        np.testing.assert_allclose(states, single, atol=1e-4)


def test_20ms_chunks_match_offline(tiny_musetalk, speech):
    """Audio pushed in 20 ms chunks (as a microphone sends it): offline frame count; the frames planned
    after the end of the stream are the offline prompts exactly; earlier ones, encoded before their future
    audio arrived, differ from offline by under 1 % of the prompt magnitude."""
    mt = tiny_musetalk
    clip = speech[16000 * 2 : 16000 * 2 + 12960]  # 0.81 s: 20 frames
    plans = []

    def encode(plan):
        plans.append(plan)
        return encode_plans(mt.whisper, mt.feature_extractor, [plan], mt.device, mt.dtype)[0]

    got = stream_prompts(FeatureStream(25.0, lookahead_s=0.4), (clip[i : i + 320] for i in range(0, len(clip), 320)),
                         encode)
    offline = mt.features_from_samples(clip, 25.0)
    assert got.shape == offline.shape == (20, 50, 384)
    assert len(plans) > 5 and plans[0].stop < 20  # frames really were emitted while audio kept arriving
    tail = slice(plans[-1].start, plans[-1].stop)
    np.testing.assert_allclose(got[tail], offline[tail], atol=1e-5)
    relative = np.abs(got - offline).mean(axis=(1, 2)) / np.abs(offline).mean()
    assert relative.max() < 0.01
