"""VGG-19 feature extractor for the perceptual loss, loading the standard ImageNet state-dict layout
(``features.N.weight`` / ``features.N.bias``, as torchvision and most ports save it) without torchvision.
timm's ``vgg19.tv_in1k`` (torchvision's ImageNet weights, what ``musetalk download --train`` fetches) keeps
these names for the trunk and renames only the unused head (``pre_logits.fc1/fc2``, ``head.fc``).

The five feature maps are the activations after relu1_1, relu2_1, relu3_1, relu4_1 and relu5_1
(``features`` indices 1, 6, 11, 20, 29), the layers the MuseTalk/FOMM pyramid perceptual loss compares.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .checkpoint import check_state_dict, read_state_dict

# Convolution widths of VGG-19 ("E"); "M" is a 2x2 max-pool.
_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
# Index in ``features`` of the ReLU ending each of the five compared slices.
FEATURE_LAYERS = (1, 6, 11, 20, 29)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _features(width_divisor: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = 3
    for item in _LAYOUT:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            width = max(1, item // width_divisor)
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=False)]
            channels = width
    return nn.Sequential(*layers[: FEATURE_LAYERS[-1] + 1])  # nothing after relu5_1 is used


class VGG19(nn.Module):
    """Frozen VGG-19 trunk up to relu5_1.

    Input: images (N, 3, H, W) in [-1, 1] (MuseTalk's pixel range); they are mapped to [0, 1] and
    normalised with the ImageNet mean/std inside. Output: list of 5 feature maps, the first
    (N, 64, H, W), the last (N, 512, H/16, W/16). ``width_divisor`` > 1 builds a narrow copy for tests.
    """

    def __init__(self, width_divisor: int = 1) -> None:
        super().__init__()
        self.features = _features(width_divisor)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False).eval()

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = ((images + 1) / 2 - self.mean.to(images.dtype)) / self.std.to(images.dtype)
        outputs = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in FEATURE_LAYERS:
                outputs.append(x)
        return outputs


def load_vgg19(path: str | Path | None, width_divisor: int = 1) -> VGG19:
    """VGG-19 with ImageNet weights from ``path`` (keys ``features.N.*``; classifier keys are ignored),
    or random weights when ``path`` is None (tests, smoke runs)."""
    model = VGG19(width_divisor)
    if path is not None:
        path = Path(path)
        state = {k: v for k, v in read_state_dict(path).items() if k.startswith("features.")}
        state = {k: v for k, v in state.items() if int(k.split(".")[1]) <= FEATURE_LAYERS[-1]}
        check_state_dict(model, state, path)
        model.load_state_dict(state, strict=True)
    return model.requires_grad_(False).eval()
