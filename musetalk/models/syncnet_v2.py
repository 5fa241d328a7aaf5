"""SyncNet of Chung & Zisserman ("Out of time", ACCV 2016 workshops) in the key layout of the published
``syncnet_v2.model`` checkpoint, the network behind the LSE-C / LSE-D lip-sync scores.

Two towers map 0.2 s of speech and 5 video frames to 1024-d embeddings; in sync, the two are close.
- audio tower ``netcnnaud`` + ``netfcaud``: input float32 (N, 1, 13, 20) = 13 MFCCs x 20 steps of 10 ms.
- lip tower ``netcnnlip`` + ``netfclip``: input float32 (N, 3, 5, 224, 224) = BGR channels x 5 frames x
  224 x 224 face crops, raw pixel values 0..255 (no normalisation: the published weights expect that).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError
from .checkpoint import read_state_dict

EMBED_DIM = 1024


def _conv2d(cin: int, cout: int, kernel: tuple[int, int] | int = 3) -> list[nn.Module]:
    padding = 1 if kernel == 3 else 0
    return [nn.Conv2d(cin, cout, kernel, padding=padding), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _conv3d(cin: int, cout: int, kernel: tuple[int, int, int], stride: tuple[int, int, int] = (1, 1, 1),
            padding: tuple[int, int, int] = (0, 0, 0)) -> list[nn.Module]:
    return [nn.Conv3d(cin, cout, kernel, stride=stride, padding=padding), nn.BatchNorm3d(cout), nn.ReLU(inplace=True)]


def _head(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, dim))


class SyncNetV2(nn.Module):
    """The published SyncNet; module indices match ``syncnet_v2.model`` (``netcnnaud.0.weight``, ...)."""

    def __init__(self, embed_dim: int = EMBED_DIM) -> None:
        super().__init__()
        self.netcnnaud = nn.Sequential(
            *_conv2d(1, 64), nn.MaxPool2d(1, 1),
            *_conv2d(64, 192), nn.MaxPool2d(3, stride=(1, 2)),
            *_conv2d(192, 384),
            *_conv2d(384, 256),
            *_conv2d(256, 256), nn.MaxPool2d(3, stride=2),
            *_conv2d(256, 512, (5, 4)),
        )
        self.netfcaud = _head(embed_dim)
        self.netfclip = _head(embed_dim)
        self.netcnnlip = nn.Sequential(
            *_conv3d(3, 96, (5, 7, 7), stride=(1, 2, 2)), nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2)),
            *_conv3d(96, 256, (1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
            *_conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)),
            *_conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)),
            *_conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2)),
            *_conv3d(256, 512, (1, 6, 6)),
        )

    def forward_aud(self, mfcc: torch.Tensor) -> torch.Tensor:
        """(N, 1, 13, 20) MFCC windows -> (N, 1024) audio embeddings."""
        return self.netfcaud(self.netcnnaud(mfcc).flatten(1))

    def forward_lip(self, clips: torch.Tensor) -> torch.Tensor:
        """(N, 3, 5, 224, 224) BGR 0..255 face clips -> (N, 1024) video embeddings."""
        return self.netfclip(self.netcnnlip(clips).flatten(1))


def load_syncnet_v2(path: str | Path) -> SyncNetV2:
    """The network with the weights of ``path`` (the published ``syncnet_v2.model`` or a state dict in
    its layout), in eval mode on CPU. BatchNorm ``num_batches_tracked`` counters may be absent."""
    path = Path(path)
    state = read_state_dict(path)
    net = SyncNetV2()
    expected = net.state_dict()
    required = {k for k in expected if not k.endswith("num_batches_tracked")}
    missing = sorted(required - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        first = (missing or unexpected)[0]
        raise CheckpointError(f"{path} is not a syncnet_v2 checkpoint: {len(missing)} missing and {len(unexpected)} "
                              f"unexpected keys (first: {first}); give the published syncnet_v2.model")
    for key, value in state.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise CheckpointError(f"{path} is not a syncnet_v2 checkpoint: {key} has shape {tuple(value.shape)}, "
                                  f"expected {tuple(expected[key].shape)}")
    net.load_state_dict(state, strict=False)
    return net.eval()
