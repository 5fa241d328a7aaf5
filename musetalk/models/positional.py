"""Sinusoidal positional encoding added to the audio prompts before the UNet cross-attention."""
from __future__ import annotations

import math
from functools import lru_cache

import torch


@lru_cache(maxsize=4)
def sinusoidal_table(length: int, d_model: int = 384) -> torch.Tensor:
    """(length, d_model) float32: PE[p, 2k] = sin(p / 10000^(2k/d)), PE[p, 2k+1] = cos(same)."""
    position = torch.arange(0, length, dtype=torch.float).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
    table = torch.zeros(length, d_model)
    table[:, 0::2] = torch.sin(position * div_term)
    table[:, 1::2] = torch.cos(position * div_term)
    return table


def add_positional_encoding(prompts: torch.Tensor) -> torch.Tensor:
    """prompts (B, L, D) -> prompts + PE[:L] (computed in float32, returned in the input dtype)."""
    table = sinusoidal_table(prompts.shape[1], prompts.shape[2]).to(prompts.device)
    return (prompts.float() + table).to(prompts.dtype)
