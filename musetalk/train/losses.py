"""Losses on decoded pixels. Every function returns one value per image (N,) so that the per-sample
adapted weight can scale each sample's losses; :func:`per_sample` averages frames into samples.

Images are float (N, 3, H, W) in [-1, 1].
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from ..models.discriminator import MultiScaleDiscriminator
from ..models.syncnet_latentsync import LatentSyncNet
from ..models.vgg19 import VGG19


def per_sample(values: torch.Tensor, batch: int) -> torch.Tensor:
    """(B x F,) per image -> (B,) per sample (mean over its F frames)."""
    return values.view(batch, -1).mean(dim=1)


def l1_per_image(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error per image (N,)."""
    return (pred - target).abs().flatten(1).mean(dim=1)


class ImagePyramid(nn.Module):
    """{scale: image} for each scale, each downscaled with a Gaussian anti-aliasing blur
    (sigma = (1 / scale - 1) / 2) followed by nearest subsampling, as FOMM / MuseTalk do."""

    def __init__(self, scales: tuple[float, ...]) -> None:
        super().__init__()
        self.scales = tuple(float(s) for s in scales)
        for scale in self.scales:
            if scale != 1.0:
                self.register_buffer(self._name(scale), self._kernel(scale), persistent=False)

    @staticmethod
    def _name(scale: float) -> str:
        return "kernel_" + str(scale).replace(".", "_")

    @staticmethod
    def _kernel(scale: float) -> torch.Tensor:
        sigma = (1 / scale - 1) / 2
        size = 2 * round(sigma * 4) + 1
        grid = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
        g = torch.exp(-(grid**2) / (2 * sigma**2))
        g = g / g.sum()
        return (g[:, None] * g[None, :]).expand(3, 1, size, size).contiguous()

    def forward(self, images: torch.Tensor) -> dict[float, torch.Tensor]:
        out = {}
        for scale in self.scales:
            if scale == 1.0:
                out[scale] = images
                continue
            kernel = getattr(self, self._name(scale)).to(images.dtype)
            pad = kernel.shape[-1] // 2
            blurred = F.conv2d(F.pad(images, (pad, pad, pad, pad)), kernel, groups=3)
            step = int(round(1 / scale))
            out[scale] = blurred[:, :, ::step, ::step]
        return out


class PerceptualLoss(nn.Module):
    """VGG-19 pyramid loss: images resized to ``input_size``, a pyramid of ``scales``; per scale the
    mean absolute difference of the 5 feature maps, weighted, divided by the weight sum, summed over
    scales (the official formula). Returns (N,)."""

    def __init__(self, vgg: VGG19, scales: tuple[float, ...], layer_weights: tuple[float, ...], input_size: int = 224) -> None:
        super().__init__()
        self.vgg = vgg
        self.pyramid = ImagePyramid(scales)
        self.layer_weights = tuple(float(w) for w in layer_weights)
        self.input_size = input_size

    def resize(self, images: torch.Tensor) -> torch.Tensor:
        return F.interpolate(images, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        fake, real = self.pyramid(self.resize(pred)), self.pyramid(self.resize(target))
        total = pred.new_zeros(pred.shape[0])
        for scale in self.pyramid.scales:
            with torch.no_grad():
                real_features = self.vgg(real[scale])
            for weight, a, b in zip(self.layer_weights, self.vgg(fake[scale]), real_features):
                total = total + weight * (a - b).abs().flatten(1).mean(dim=1)
        return total / sum(self.layer_weights)


def generator_gan_loss(fake_maps: dict) -> torch.Tensor:
    """Least squares, generator side: mean (1 - D(fake))^2 per image, summed over scales. (N,)"""
    return sum((1 - pred).pow(2).flatten(1).mean(dim=1) for _, pred in fake_maps.values())


def feature_matching_loss(real_maps: dict, fake_maps: dict, weights: tuple[float, ...]) -> torch.Tensor:
    """Sum over scales and blocks of weight x mean |D_feat(real) - D_feat(fake)| per image. (N,)"""
    total = 0
    for scale, (fake_features, _) in fake_maps.items():
        real_features = real_maps[scale][0]
        for weight, a, b in zip(weights, real_features, fake_features):
            total = total + weight * (a.detach() - b).abs().flatten(1).mean(dim=1)
    return total


def discriminator_loss(real_maps: dict, fake_maps: dict) -> torch.Tensor:
    """Least squares, discriminator side: mean (1 - D(real))^2 + D(fake)^2 per image, summed over scales. (N,)"""
    return sum(((1 - real_maps[s][1]).pow(2) + fake_maps[s][1].pow(2)).flatten(1).mean(dim=1) for s in real_maps)


def crop_mouths(images: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 3, H, W) and int boxes (N, 4) x1,y1,x2,y2 -> (N, 3, size, size) bilinear-resized mouth regions."""
    crops = [F.interpolate(img[None, :, y1:y2, x1:x2], size=(size, size), mode="bilinear", align_corners=False)
             for img, (x1, y1, x2, y2) in zip(images, boxes.tolist())]
    return torch.cat(crops)


class GanLosses(nn.Module):
    """A multi-scale patch discriminator with its pyramid: generator-side and discriminator-side losses.
    Images are resized to ``size`` x ``size`` first (official: 224)."""

    def __init__(self, discriminator: MultiScaleDiscriminator, size: int = 224) -> None:
        super().__init__()
        self.discriminator = discriminator
        self.image_pyramid = ImagePyramid(discriminator.scales)
        self.size = size

    def pyramid(self, images: torch.Tensor) -> dict[float, torch.Tensor]:
        if images.shape[-1] != self.size or images.shape[-2] != self.size:
            images = F.interpolate(images, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return self.image_pyramid(images)

    def generator(self, pred: torch.Tensor, target: torch.Tensor, fm_weights: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """(adversarial (N,), feature matching (N,)) with the discriminator's weights frozen."""
        self.discriminator.requires_grad_(False)
        fake = self.discriminator(self.pyramid(pred))
        with torch.no_grad():
            real = self.discriminator(self.pyramid(target))
        self.discriminator.requires_grad_(True)
        return generator_gan_loss(fake), feature_matching_loss(real, fake, fm_weights)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Discriminator loss (N,) on detached predictions."""
        return discriminator_loss(self.discriminator(self.pyramid(target)), self.discriminator(self.pyramid(pred.detach())))


def sync_frames(images: torch.Tensor, batch: int) -> torch.Tensor:
    """(B x 16, 3, 256, 256) -> (B, 48, 128, 256): lower halves, frames stacked on channels (SyncNet input)."""
    lower = images[:, :, images.shape[2] // 2 :, :]
    return lower.reshape(batch, -1, *lower.shape[2:])


def sync_loss(syncnet: LatentSyncNet, audio_embed: torch.Tensor, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(-log of the clamped cosine similarity (B,), similarity (B,)) of audio embeddings and stacked frames."""
    similarity = (audio_embed * syncnet.embed_frames(frames)).sum(dim=1)
    return -torch.log(similarity.clamp(1e-7, 1.0)), similarity


def adapted_weight(similarity: torch.Tensor, mode: str, low: float = 0.05, high: float = 0.65) -> torch.Tensor:
    """Per-sample loss weight (B,) from the ground-truth audio-visual similarity (B,): 1 inside [low, high];
    outside, 0 ("cut_off") or the similarity itself ("linear"); all ones for "off"."""
    ones = torch.ones_like(similarity)
    if mode == "off":
        return ones
    outside = (similarity < low) | (similarity > high)
    if mode == "cut_off":
        return torch.where(outside, torch.zeros_like(similarity), ones)
    if mode == "linear":
        return torch.where(outside, similarity, ones)
    raise ValueError(f"adapted_weight.mode must be off, cut_off or linear, got {mode!r}")


def sync_weight_at(step: int, weight: float, start_step: int = 0, ramp_steps: int = 0) -> float:
    """Sync-loss weight at optimizer ``step``: 0 before ``start_step``, then a linear ramp over
    ``ramp_steps`` up to ``weight`` (immediately ``weight`` when ``ramp_steps`` is 0)."""
    if step < start_step:
        return 0.0
    if ramp_steps <= 0:
        return float(weight)
    return float(weight) * min(1.0, (step - start_step + 1) / ramp_steps)


def masked_mouth_error(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean absolute error over the masked (lower) half, in [0, 255] pixel units."""
    h = pred.shape[2] // 2
    return float((pred[:, :, h:] - target[:, :, h:]).abs().mean() * 127.5)


