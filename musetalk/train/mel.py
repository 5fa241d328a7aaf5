"""Log-mel spectrogram of the LatentSync/Wav2Lip SyncNet audio front end, and the per-sample window.

16 kHz audio, pre-emphasis 0.97, STFT n_fft 800 / hop 200 / Hann 800 (80 mel frames per second),
80 Slaney mel bins 55..7600 Hz, 20 log10 amplitude - 20 dB, scaled symmetrically to [-4, 4] over a
100 dB range. A sample of 16 video frames at 25 fps takes 52 mel frames starting at int(80 x start / fps).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

SAMPLE_RATE = 16000
N_FFT = 800
HOP = 200
N_MELS = 80
MEL_FPS = SAMPLE_RATE / HOP
WINDOW_FRAMES = 52
_MIN_DB, _REF_DB, _MAX_ABS = -100.0, 20.0, 4.0


@lru_cache(maxsize=1)
def _mel_basis() -> torch.Tensor:
    from transformers.audio_utils import mel_filter_bank

    bank = mel_filter_bank(N_FFT // 2 + 1, N_MELS, 55.0, 7600.0, SAMPLE_RATE, norm="slaney", mel_scale="slaney")
    return torch.from_numpy(bank.T.astype(np.float32))  # (80, 401)


def log_mel(samples: np.ndarray) -> np.ndarray:
    """16 kHz mono float32 (N,) -> float32 (80, 1 + N // 200) normalised log-mel in [-4, 4]."""
    x = torch.from_numpy(np.asarray(samples, np.float32))
    x = torch.cat([x[:1], x[1:] - 0.97 * x[:-1]]) if len(x) else torch.zeros(N_FFT)
    spec = torch.stft(x, N_FFT, HOP, N_FFT, window=torch.hann_window(N_FFT), center=True, pad_mode="constant",
                      return_complex=True).abs()
    db = 20 * torch.log10(torch.clamp(_mel_basis() @ spec, min=1e-5)) - _REF_DB
    scaled = 2 * _MAX_ABS * (db - _MIN_DB) / -_MIN_DB - _MAX_ABS
    return scaled.clamp(-_MAX_ABS, _MAX_ABS).numpy()


def mel_window(mel: np.ndarray, start_frame: int, fps: float = 25.0, length: int = WINDOW_FRAMES) -> np.ndarray:
    """(80, M) -> (80, length) starting at video frame ``start_frame``; past the end it is padded with the floor value."""
    start = int(MEL_FPS * start_frame / fps)
    window = mel[:, start : start + length]
    if window.shape[1] < length:
        window = np.pad(window, ((0, 0), (0, length - window.shape[1])), constant_values=-_MAX_ABS)
    return window.astype(np.float32, copy=False)
