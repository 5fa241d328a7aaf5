"""Shared fixtures: the sample media and tiny random models in the official layout."""
from __future__ import annotations

from pathlib import Path

import musetalk  # noqa: F401  (first: sets the OpenMP wait policy before torch loads)
import pytest
import torch

MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"


@pytest.fixture(scope="session")
def media() -> Path:
    """Folder with sun.mp4 (576x768, 25 fps, 550 frames), sun.wav (44.1 kHz mono, 22.49 s), musk.png,
    monalisa.png, sit.jpeg."""
    assert MEDIA.is_dir(), f"sample media missing: {MEDIA}"
    return MEDIA


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> Path:
    """A models folder with tiny random UNets (v1.5 .pth and v1.0 .bin), VAE and whisper, official layout."""
    from musetalk.models.random_init import write_random_models

    return write_random_models(tmp_path_factory.mktemp("models"), size="tiny")


@pytest.fixture(scope="session")
def tiny_musetalk(tiny_models):
    """A loaded :class:`MuseTalk` on CPU (v1.5, float32) built from ``tiny_models``."""
    from musetalk import MuseTalk

    torch.manual_seed(0)
    return MuseTalk.from_pretrained(tiny_models, version="v1.5")


@pytest.fixture(scope="session")
def synthesizer():
    """A :class:`musetalk.speech.Synthesizer` with the bundled Piper voice (en_US-joe-medium)."""
    from musetalk.speech import Synthesizer

    return Synthesizer()
