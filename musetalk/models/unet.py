"""The MuseTalk UNet: a diffusers ``UNet2DConditionModel`` (SD v1.4 shape, 8 input channels,
audio cross-attention of width 384) built from the official ``musetalk.json``."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from accelerate import init_empty_weights
from diffusers import UNet2DConditionModel

from ..errors import CheckpointError
from .checkpoint import load_checked


def read_unet_config(path: Path) -> dict:
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"UNet config not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"UNet config {path} is not valid JSON: {exc}") from None
    return {k: v for k, v in config.items() if not k.startswith("_")}


def build_unet(config: dict, empty: bool = False) -> UNet2DConditionModel:
    """UNet from a config dict; ``empty`` builds it on the meta device (weights loaded later)."""
    if empty:
        with init_empty_weights():
            return UNet2DConditionModel(**config)
    return UNet2DConditionModel(**config)


def load_unet(config_path: Path, weights_path: Path, device: str | torch.device, dtype: torch.dtype) -> UNet2DConditionModel:
    """Official UNet (config JSON + plain state dict with diffusers key names) in eval mode."""
    unet = build_unet(read_unet_config(config_path), empty=True)
    load_checked(unet, weights_path, dtype)
    return unet.to(device).eval().requires_grad_(False)
