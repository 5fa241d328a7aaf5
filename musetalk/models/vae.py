"""The frozen sd-vae-ft-mse autoencoder and the exact pre/post-processing MuseTalk applies."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL

from ..errors import CheckpointError

CROP_SIZE = 256


def load_vae(folder: Path, device: str | torch.device, dtype: torch.dtype) -> AutoencoderKL:
    try:
        vae = AutoencoderKL.from_pretrained(
            str(folder), local_files_only=True, torch_dtype=dtype,
            use_safetensors=(folder / "diffusion_pytorch_model.safetensors").is_file(),
        )
    except (OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"cannot load the VAE from {folder}/: {str(exc).splitlines()[0]}") from exc
    return vae.to(device).eval().requires_grad_(False)


def mask_lower_half(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) in [-1, 1] -> a copy with rows H/2.. set to -1 (black): the UNet's masked input, in
    training and inference alike."""
    masked = images.clone()
    masked[:, :, images.shape[2] // 2 :, :] = -1.0
    return masked


def crops_to_tensor(crops: np.ndarray, masked: bool, device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 (N, 256, 256, 3) RGB -> float32 (N, 3, 256, 256) in [-1, 1] on ``device``; ``masked``: rows 128..
    become -1. The uint8 crops travel (a quarter of the float bytes); the conversion runs on ``device``."""
    x = torch.from_numpy(np.ascontiguousarray(crops)).to(device).permute(0, 3, 1, 2).float() / 255.0
    x = (x - 0.5) / 0.5
    return mask_lower_half(x) if masked else x


@torch.no_grad()
def encode(vae: AutoencoderKL, images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) in [-1, 1] -> scaled latent means (N, 4, H/8, W/8), without gradient (training feeds them
    to the UNet it trains, so no inference-mode tensors). The mean makes runs repeatable."""
    images = images.to(device=vae.device, dtype=vae.dtype)
    return vae.config.scaling_factor * vae.encode(images).latent_dist.mean

