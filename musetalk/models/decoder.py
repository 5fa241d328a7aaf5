"""Latent decoders behind one interface: the full sd-vae-ft-mse decoder and TAESD's tiny decoder.

Both turn the UNet's output (scaled SD latents, the x0.18215 space) into images in [-1, 1]:
- ``vae``: ``AutoencoderKL.decode(latents / 0.18215)`` (its config's scaling factor), about 49 M parameters;
- ``tiny``: TAESD (diffusers ``AutoencoderTiny``, weights ``madebyollin/taesd``) decodes the scaled latents
  as they are (scaling factor 1.0), about 1.2 M parameters: much faster, softer on fine detail (teeth).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, AutoencoderTiny

from ..errors import CheckpointError

DECODERS = ("vae", "tiny")
TAESD_SCALE = 1.0  # TAESD maps the already-scaled latents straight to RGB


@dataclass
class LatentDecoder:
    """``network.decode(latents / scale).sample``: float (N, 3, 8h, 8w) RGB in [-1, 1] on the network's device."""

    name: str
    network: AutoencoderKL | AutoencoderTiny
    scale: float

    def to_images(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents (N, 4, h, w) -> images (N, 3, 8h, 8w) in [-1, 1], the network's dtype."""
        return self.network.decode(latents.to(self.network.dtype) / self.scale).sample


def vae_decoder(vae: AutoencoderKL) -> LatentDecoder:
    return LatentDecoder("vae", vae, float(vae.config.scaling_factor))


def load_tiny_decoder(folder: Path, device: str | torch.device, dtype: torch.dtype) -> LatentDecoder:
    """TAESD from ``folder`` (``config.json`` + ``diffusion_pytorch_model.safetensors``, as on the hub)."""
    try:
        taesd = AutoencoderTiny.from_pretrained(str(folder), local_files_only=True, torch_dtype=dtype)
    except (OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"cannot load the tiny decoder from {folder}/: {str(exc).splitlines()[0]}") from exc
    return LatentDecoder("tiny", taesd.to(device).eval().requires_grad_(False), TAESD_SCALE)


def images_to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images (N, 3, H, W) in [-1, 1] -> uint8 (N, H, W, 3) RGB on the same device, rounded as the
    official code does (in float32)."""
    scaled = (images.float() / 2 + 0.5).clamp(0, 1) * 255
    return scaled.round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
