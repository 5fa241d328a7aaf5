"""MFCCs as the ``python_speech_features`` package computes them with its defaults (the audio input that
the published SyncNet was trained on): pre-emphasis 0.97, 25 ms rectangular frames every 10 ms, 512-point
power spectrum, 26 mel filters (0 Hz .. Nyquist), log, orthonormal DCT-II, 13 coefficients, cepstral
lifter 22, and coefficient 0 replaced by the log frame energy."""
from __future__ import annotations

import numpy as np
from scipy.fft import dct

EPS = np.finfo(float).eps


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(num_filters: int, nfft: int, rate: int) -> np.ndarray:
    """Triangular filters on FFT bins, float64 (num_filters, nfft // 2 + 1), edges evenly spaced in mel
    between 0 Hz and rate / 2 and rounded down to bins."""
    mels = np.linspace(_hz_to_mel(0.0), _hz_to_mel(rate / 2), num_filters + 2)
    bins = np.floor((nfft + 1) * _mel_to_hz(mels) / rate)
    bank = np.zeros((num_filters, nfft // 2 + 1))
    for j in range(num_filters):
        left, centre, right = bins[j], bins[j + 1], bins[j + 2]
        rising = np.arange(int(left), int(centre))
        falling = np.arange(int(centre), int(right))
        bank[j, rising] = (rising - left) / (centre - left)
        bank[j, falling] = (right - falling) / (right - centre)
    return bank


def _frames(signal: np.ndarray, length: int, step: int) -> np.ndarray:
    """Zero-padded frames (num_frames, length); at least one frame."""
    count = 1 if len(signal) <= length else 1 + int(np.ceil((len(signal) - length) / step))
    padded = np.concatenate([signal, np.zeros((count - 1) * step + length - len(signal))])
    index = np.arange(length)[None, :] + step * np.arange(count)[:, None]
    return padded[index]


def mfcc(signal: np.ndarray, rate: int = 16000, num_ceps: int = 13, num_filters: int = 26, nfft: int = 512,
         win_s: float = 0.025, step_s: float = 0.01, preemph: float = 0.97, lifter: int = 22) -> np.ndarray:
    """(N,) samples (any scale; SyncNet expects 16-bit integer scale) -> float64 (num_frames, num_ceps),
    100 frames per second with the defaults."""
    signal = np.asarray(signal, dtype=np.float64)
    emphasised = np.append(signal[:1], signal[1:] - preemph * signal[:-1])
    length = int(np.floor(win_s * rate + 0.5))
    step = int(np.floor(step_s * rate + 0.5))
    power = np.abs(np.fft.rfft(_frames(emphasised, length, step), nfft)) ** 2 / nfft
    energy = power.sum(axis=1)
    energy[energy == 0] = EPS
    bands = power @ mel_filterbank(num_filters, nfft, rate).T
    bands[bands == 0] = EPS
    ceps = dct(np.log(bands), type=2, axis=1, norm="ortho")[:, :num_ceps]
    ceps *= 1.0 + (lifter / 2.0) * np.sin(np.pi * np.arange(num_ceps) / lifter)
    ceps[:, 0] = np.log(energy)
    return ceps
