"""Speech synthesis with the real bundled Piper voice: rate, durations, sentences, determinism, refusals."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from musetalk.speech import MAX_TEXT_CHARS, SAMPLE_RATE, SpeechError, Synthesizer, check_text

THREE = "The quick brown fox jumps over the lazy dog. Did you see it? It ran into the woods!"


def test_import_loads_neither_torch_nor_piper():
    code = "import sys, musetalk.speech; print('torch' in sys.modules, 'piper' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_one_array_per_sentence_at_16k(synthesizer):
    parts = list(synthesizer.sentences(THREE))
    assert len(parts) == 3
    native = [c.audio_float_array for c in synthesizer._voice.synthesize(THREE, synthesizer._config)]
    assert synthesizer.native_rate == 22050 and SAMPLE_RATE == 16000
    for part, raw in zip(parts, native):
        assert part.dtype == np.float32 and part.ndim == 1
        assert abs(len(part) - len(raw) * 16000 / 22050) <= 1  # resampled 22.05 -> 16 kHz, same duration
        assert np.abs(part).max() <= 1.0 and np.abs(part).max() > 0.3
    whole = synthesizer.synthesize(THREE)
    assert np.array_equal(whole, np.concatenate(parts))


def test_duration_follows_the_words(synthesizer):
    short = synthesizer.synthesize("Hello.")
    sentence = "It was a bright cold day in April, and the clocks were striking thirteen for everyone in town."
    long = synthesizer.synthesize(sentence)
    words = len(sentence.split())
    seconds = len(long) / SAMPLE_RATE
    assert words / 4.5 < seconds < words / 1.5, seconds  # 1.5 to 4.5 words a second
    assert 0.2 < len(short) / SAMPLE_RATE < 1.5
    # the middle of a sentence is speech, not silence
    middle = long[len(long) // 4 : 3 * len(long) // 4]
    assert np.sqrt(np.mean(middle**2)) > 0.03


def test_same_text_same_samples(synthesizer):
    assert np.array_equal(synthesizer.synthesize(THREE), synthesizer.synthesize(THREE))


def test_text_limits():
    assert MAX_TEXT_CHARS == 1000
    assert check_text("  " + "a" * 1000 + "\n") == "a" * 1000
    with pytest.raises(SpeechError, match=r"^text of 1001 characters is too long: at most 1000 at once; "):
        check_text("a" * 1001)
    with pytest.raises(SpeechError, match=r"^no text to speak: give at least one word$"):
        check_text(" \n\t")


def test_refuses_text_it_cannot_speak(synthesizer):
    with pytest.raises(SpeechError, match=r"^no text to speak"):
        next(synthesizer.sentences(""))
    with pytest.raises(SpeechError, match=r"^text of 1199 characters is too long"):
        synthesizer.synthesize("word " * 240)
    with pytest.raises(SpeechError, match=r"^nothing to speak in '\.\.\.': give words, not only punctuation$"):
        synthesizer.synthesize("...")


def test_refuses_missing_voice_files(tmp_path, synthesizer):
    missing = tmp_path / "nobody.onnx"
    with pytest.raises(SpeechError, match=rf"^voice file not found: {missing}: give a Piper voice \.onnx"):
        Synthesizer(missing)
    lonely = tmp_path / "lonely.onnx"
    lonely.symlink_to(synthesizer.voice_path)
    with pytest.raises(SpeechError, match=rf"^voice {lonely} has no lonely\.onnx\.json beside it"):
        Synthesizer(lonely)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    (tmp_path / "broken.onnx.json").symlink_to(synthesizer.voice_path.with_name("en_US-joe-medium.onnx.json"))
    with pytest.raises(SpeechError, match=rf"^cannot load the voice {broken}: \w+; give a Piper voice"):
        Synthesizer(broken)


def test_other_voice_by_path(tmp_path, synthesizer):
    """Any Piper voice loads from its path (here a copy of the bundled one under another name)."""
    other = tmp_path / "other.onnx"
    other.symlink_to(synthesizer.voice_path)
    (tmp_path / "other.onnx.json").symlink_to(synthesizer.voice_path.with_name("en_US-joe-medium.onnx.json"))
    assert np.array_equal(Synthesizer(other).synthesize("Hello."), synthesizer.synthesize("Hello."))
