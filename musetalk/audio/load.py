"""Load audio from any file (or array) as float32 mono at 16 kHz, the way ``librosa.load(sr=16000)`` does:
decode to float, average the channels, resample with soxr "HQ"."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile
import soxr

from ..errors import AudioError

SAMPLE_RATE = 16000


def _decode_soundfile(path: Path) -> tuple[np.ndarray, int] | None:
    """(samples, channels) float32 and rate, or None when libsndfile does not know the format."""
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError):
        return None
    return data, rate


def _decode_pyav(path: Path) -> tuple[np.ndarray, int]:
    """(samples, channels) float32 and rate of the first audio stream of any container PyAV opens."""
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise AudioError(f"cannot read audio from {path}: not an audio or video file ({exc.__class__.__name__})") from None
    with container:
        if not container.streams.audio:
            raise AudioError(f"{path} has no audio track: give a wav/flac/mp3/m4a file or a video with sound")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp", layout=stream.layout.name, rate=stream.rate)
        chunks = []
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray())
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray())
        except av.error.FFmpegError as exc:
            raise AudioError(f"audio of {path} is corrupt ({exc}); re-encode it, e.g. to wav") from None
        rate = stream.rate
    if not chunks:
        return np.zeros((0, 1), np.float32), rate
    return np.concatenate(chunks, axis=1).T.astype(np.float32), rate


def to_mono_16k(samples: np.ndarray, rate: int) -> np.ndarray:
    """(N,) or (N, C) float at ``rate`` Hz -> (M,) float32 mono at 16 kHz (channel mean, soxr HQ)."""
    mono = samples.mean(axis=1) if samples.ndim == 2 else samples
    mono = np.asarray(mono, dtype=np.float32)
    if rate != SAMPLE_RATE and len(mono):
        mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
    return mono


def load_audio(source: str | os.PathLike | np.ndarray) -> np.ndarray:
    """Audio file (wav, flac, mp3, m4a, a video's audio track, ...) or a float array already at 16 kHz
    -> float32 (num_samples,) mono at 16 kHz."""
    if isinstance(source, np.ndarray):
        if source.ndim not in (1, 2) or not np.issubdtype(source.dtype, np.floating):
            raise AudioError("an in-memory audio array must be float, shape (samples,) or (samples, channels), at 16 kHz")
        return to_mono_16k(source, SAMPLE_RATE)
    return to_mono_16k(*decode_audio(source))


def decode_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Audio of a file at its own rate and channels: float32 (samples, channels) and the rate in Hz."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio file not found: {path}")
    samples, rate = _decode_soundfile(path) or _decode_pyav(path)
    if len(samples) == 0:
        raise AudioError(f"{path} contains no audio samples")
    return samples, rate
