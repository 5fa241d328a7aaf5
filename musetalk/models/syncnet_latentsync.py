"""The LatentSync pixel SyncNet used by MuseTalk's stage-2 lip-sync loss (ByteDance/LatentSync
``latentsync_syncnet.pt``), rebuilt to load that checkpoint's key layout:

``{audio,visual}_encoder.conv_in.*``, ``.down_blocks.{i}.{norm1,conv1,norm2,conv2,conv_shortcut,downsample_conv}.*``,
``.norm_out.*``; the file wraps them in ``{"state_dict": ...}``.

Audio input: (B, 1, 80, 52) log-mel window (16 video frames at 25 fps); visual input: (B, 48, 128, 256),
16 frames x 3 channels of the lower half of the 256x256 face crop, pixels in [-1, 1].
Embeddings are L2-normalised (B, C) vectors; sync = their cosine similarity.
Not the Chung & Zisserman SyncNet used for LSE metrics (that is ``syncnet_v2``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import check_state_dict, read_state_dict

Factor = int | tuple[int, int]


@dataclass(frozen=True)
class EncoderConfig:
    in_channels: int
    block_out_channels: tuple[int, ...]
    downsample_factors: tuple[Factor, ...]
    norm_num_groups: int = 32


@dataclass(frozen=True)
class SyncNetConfig:
    """Defaults: LatentSync ``syncnet_16_pixel`` (what MuseTalk's configs/training/syncnet.yaml uses)."""

    audio: EncoderConfig = field(default_factory=lambda: EncoderConfig(
        1, (32, 64, 128, 256, 512, 1024, 2048), ((2, 1), 2, 2, 1, 2, 2, (2, 3))))
    visual: EncoderConfig = field(default_factory=lambda: EncoderConfig(
        48, (64, 128, 256, 256, 512, 1024, 2048, 2048), ((1, 2), 2, 2, 2, 2, 2, 2, 2)))

    @classmethod
    def from_dict(cls, data: dict) -> "SyncNetConfig":
        def encoder(d: dict) -> EncoderConfig:
            factors = tuple(tuple(f) if isinstance(f, (list, tuple)) else int(f) for f in d["downsample_factors"])
            return EncoderConfig(int(d["in_channels"]), tuple(d["block_out_channels"]), factors,
                                 int(d.get("norm_num_groups", 32)))

        return cls(encoder(data["audio"]), encoder(data["visual"]))


class ResnetDown(nn.Module):
    """GroupNorm-SiLU-conv x2 residual block, then an optional strided 3x3 conv with asymmetric zero padding."""

    def __init__(self, in_channels: int, out_channels: int, factor: Factor, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=1e-6)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=1e-6)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None
        self.downsample_conv = None
        if factor != 1:
            self.downsample_conv = nn.Conv2d(out_channels, out_channels, 3, stride=factor)
            # F.pad order: (left, right, top, bottom); an axis that is not strided is padded on both sides.
            self.pad = (0, 1, 0, 1)
            if isinstance(factor, tuple) and factor[0] == 1:
                self.pad = (0, 1, 1, 1)
            elif isinstance(factor, tuple) and factor[1] == 1:
                self.pad = (1, 1, 0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        x = h + (self.conv_shortcut(x) if self.conv_shortcut is not None else x)
        if self.downsample_conv is not None:
            x = self.downsample_conv(F.pad(x, self.pad))
        return x


class DownEncoder(nn.Module):
    """conv_in -> one :class:`ResnetDown` per width -> GroupNorm -> ReLU; (B, C_in, H, W) -> (B, C_last, h, w)."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        widths = cfg.block_out_channels
        self.conv_in = nn.Conv2d(cfg.in_channels, widths[0], 3, padding=1)
        ins = (widths[0],) + widths[:-1]
        self.down_blocks = nn.ModuleList(
            ResnetDown(i, o, f, cfg.norm_num_groups) for i, o, f in zip(ins, widths, cfg.downsample_factors))
        self.norm_out = nn.GroupNorm(cfg.norm_num_groups, widths[-1], eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        return F.relu(self.norm_out(x))


class LatentSyncNet(nn.Module):
    """Audio and visual encoders producing unit-length embeddings (B, C) whose cosine is the sync score."""

    def __init__(self, config: SyncNetConfig | None = None) -> None:
        super().__init__()
        self.config = config or SyncNetConfig()
        self.audio_encoder = DownEncoder(self.config.audio)
        self.visual_encoder = DownEncoder(self.config.visual)

    def embed_audio(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, 1, 80, 52) log-mel -> (B, C) unit vectors."""
        return F.normalize(self.audio_encoder(mel).flatten(1), dim=1)

    def embed_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, 3 x 16, 128, 256) lower-half frames in [-1, 1] -> (B, C) unit vectors."""
        return F.normalize(self.visual_encoder(frames).flatten(1), dim=1)

    def similarity(self, mel: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """Cosine similarity (B,) of audio and frames."""
        return (self.embed_audio(mel) * self.embed_frames(frames)).sum(dim=1)


def load_latentsync_syncnet(path: str | Path | None, config: SyncNetConfig | None = None) -> LatentSyncNet:
    """Frozen SyncNet with the published weights at ``path`` (random weights when None: tests only)."""
    model = LatentSyncNet(config)
    if path is not None:
        path = Path(path)
        state = read_state_dict(path)
        check_state_dict(model, state, path)
        model.load_state_dict(state, strict=True)
    return model.requires_grad_(False).eval()
