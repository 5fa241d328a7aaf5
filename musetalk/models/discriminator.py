"""Multi-scale patch discriminators (pix2pix style, as in MuseTalk's stage 2): one instance judges the
whole face, another the mouth region. Least-squares objective, feature maps kept for feature matching."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def scale_key(scale: float) -> str:
    """Module-dict key of a pyramid scale: 0.5 -> "0-5" (dots are not allowed in module names)."""
    return str(float(scale)).replace(".", "-")


class DownBlock(nn.Module):
    """4x4 valid conv (optionally spectral-normalised) -> instance norm (optional) -> LeakyReLU(0.2) -> 2x2 avg-pool (optional)."""

    def __init__(self, in_channels: int, out_channels: int, norm: bool, pool: bool, spectral_norm: bool) -> None:
        super().__init__()
        conv = nn.Conv2d(in_channels, out_channels, kernel_size=4)
        self.conv = nn.utils.spectral_norm(conv) if spectral_norm else conv
        self.norm = nn.InstanceNorm2d(out_channels, affine=True) if norm else nn.Identity()
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.norm(self.conv(x)), 0.2)
        return F.avg_pool2d(x, 2) if self.pool else x


class PatchDiscriminator(nn.Module):
    """Images (N, 3, H, W) in [-1, 1] -> (feature maps of each block, prediction map (N, 1, h, w))."""

    def __init__(self, channels: int = 3, block_expansion: int = 32, num_blocks: int = 4, max_features: int = 512,
                 spectral_norm: bool = True) -> None:
        super().__init__()
        widths = [channels] + [min(max_features, block_expansion * 2 ** (i + 1)) for i in range(num_blocks)]
        self.blocks = nn.ModuleList(
            DownBlock(widths[i], widths[i + 1], norm=i > 0, pool=i < num_blocks - 1, spectral_norm=spectral_norm)
            for i in range(num_blocks)
        )
        head = nn.Conv2d(widths[-1], 1, kernel_size=1)
        self.head = nn.utils.spectral_norm(head) if spectral_norm else head

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        features = []
        for block in self.blocks:
            x = block(x)
            features.append(x)
        return features, self.head(x)


class MultiScaleDiscriminator(nn.Module):
    """One :class:`PatchDiscriminator` per pyramid scale. ``forward`` takes {scale: images} (an image
    pyramid) and returns {scale: (feature maps, prediction map)}."""

    def __init__(self, scales: tuple[float, ...] = (1.0,), **kwargs) -> None:
        super().__init__()
        self.scales = tuple(float(s) for s in scales)
        self.discs = nn.ModuleDict({scale_key(s): PatchDiscriminator(**kwargs) for s in self.scales})

    def forward(self, pyramid: dict[float, torch.Tensor]) -> dict[float, tuple[list[torch.Tensor], torch.Tensor]]:
        return {s: self.discs[scale_key(s)](pyramid[s]) for s in self.scales}
