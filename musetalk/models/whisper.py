"""The frozen whisper-tiny encoder and its log-mel feature extractor (Hugging Face layout)."""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import WhisperFeatureExtractor, WhisperModel
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from ..errors import CheckpointError


def load_whisper(folder: Path, device: str | torch.device, dtype: torch.dtype) -> tuple[WhisperEncoder, WhisperFeatureExtractor]:
    """Encoder (eval, frozen) and feature extractor from an ``openai/whisper-tiny`` style folder."""
    try:
        extractor = WhisperFeatureExtractor.from_pretrained(str(folder), local_files_only=True)
        model = WhisperModel.from_pretrained(str(folder), local_files_only=True, dtype=dtype)
    except (OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"cannot load whisper from {folder}/: {str(exc).splitlines()[0]}") from exc
    encoder = model.get_encoder()
    return encoder.to(device).eval().requires_grad_(False), extractor
