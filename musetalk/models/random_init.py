"""Randomly initialised models written in the official folder layout.

Used by the tests (tiny models, every loading path without a hub) and by the benchmarks (full-size
models with random weights time exactly like the real ones).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DConditionModel
from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

UNET_FULL = dict(
    sample_size=64,
    in_channels=8,
    out_channels=4,
    center_input_sample=False,
    flip_sin_to_cos=True,
    freq_shift=0,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    mid_block_type="UNetMidBlock2DCrossAttn",
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    only_cross_attention=False,
    block_out_channels=[320, 640, 1280, 1280],
    layers_per_block=2,
    downsample_padding=1,
    mid_block_scale_factor=1,
    act_fn="silu",
    norm_num_groups=32,
    norm_eps=1e-5,
    cross_attention_dim=384,
    attention_head_dim=8,
)
# The tiny UNet keeps every kind of block but attends only at 16x16 and 8x8 (at 32x32 its attention cost
# 3/4 of a forward pass on CPU, which the test suite paid in every generated frame).
UNET_TINY = {**UNET_FULL, "block_out_channels": [32, 32, 64, 64], "layers_per_block": 1, "norm_num_groups": 8,
             "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
             "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"]}

VAE_FULL = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[128, 256, 512, 512],
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    sample_size=256,
    scaling_factor=0.18215,
)
VAE_TINY = {**VAE_FULL, "block_out_channels": [16, 16, 32, 32], "layers_per_block": 1, "norm_num_groups": 8}

TAESD_FULL = dict(  # madebyollin/taesd
    encoder_block_out_channels=[64, 64, 64, 64], decoder_block_out_channels=[64, 64, 64, 64],
    num_encoder_blocks=[1, 3, 3, 3], num_decoder_blocks=[3, 3, 3, 1], latent_channels=4, scaling_factor=1.0,
)
TAESD_TINY = {**TAESD_FULL, "encoder_block_out_channels": [16, 16, 16, 16],
              "decoder_block_out_channels": [16, 16, 16, 16], "num_encoder_blocks": [1, 1, 1, 1],
              "num_decoder_blocks": [1, 1, 1, 1]}

WHISPER_FULL = dict(d_model=384, encoder_layers=4, encoder_attention_heads=6, encoder_ffn_dim=1536,
                    decoder_layers=4, decoder_attention_heads=6, decoder_ffn_dim=1536, num_mel_bins=80)
WHISPER_TINY = {**WHISPER_FULL, "decoder_layers": 1, "decoder_ffn_dim": 64, "vocab_size": 64,
                "max_target_positions": 32, "decoder_start_token_id": 1, "pad_token_id": 0, "eos_token_id": 2,
                "bos_token_id": 1, "suppress_tokens": [], "begin_suppress_tokens": []}

UNET_FILES = {"v1.5": ("musetalkV15", "unet"), "v1.0": ("musetalk", "pytorch_model")}


def write_unet(root: Path, version: str, size: str = "tiny", weights_format: str = "pth", seed: int = 0) -> Path:
    """Write ``musetalk.json`` and random weights for ``version`` in its official folder; returns the weights path."""
    config = UNET_TINY if size == "tiny" else UNET_FULL
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**config)
    folder, stem = UNET_FILES[version]
    out = root / folder
    out.mkdir(parents=True, exist_ok=True)
    (out / "musetalk.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel", **config}, indent=2))
    state = {k: v.contiguous() for k, v in unet.state_dict().items()}
    if weights_format == "safetensors":
        from safetensors.torch import save_file

        path = out / f"{stem}.safetensors"
        save_file(state, str(path))
    else:
        path = out / f"{stem}.{'bin' if version == 'v1.0' else 'pth'}"
        torch.save(state, path)
    return path


def write_vae(root: Path, size: str = "tiny", seed: int = 0, safe_serialization: bool = False) -> None:
    torch.manual_seed(seed)
    vae = AutoencoderKL(**(VAE_TINY if size == "tiny" else VAE_FULL))
    vae.save_pretrained(root / "sd-vae", safe_serialization=safe_serialization)


def write_taesd(root: Path, size: str = "tiny", seed: int = 0) -> Path:
    """Random TAESD weights as on the hub: ``taesd/config.json`` + ``diffusion_pytorch_model.safetensors``."""
    torch.manual_seed(seed)
    folder = Path(root) / "taesd"
    AutoencoderTiny(**(TAESD_TINY if size == "tiny" else TAESD_FULL)).save_pretrained(folder, safe_serialization=True)
    return folder


def write_whisper(root: Path, size: str = "tiny", seed: int = 0) -> None:
    torch.manual_seed(seed)
    model = WhisperModel(WhisperConfig(**(WHISPER_TINY if size == "tiny" else WHISPER_FULL)))
    folder = root / "whisper"
    folder.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)


def write_face_parser(root: Path, seed: int = 0) -> Path:
    """Random BiSeNet weights (with plausible batch-norm statistics) at the official parsing path."""
    from .bisenet import BiSeNet

    torch.manual_seed(seed)
    net = BiSeNet()
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    path = Path(root) / "face-parse-bisent" / "79999_iter.pth"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return path


def write_random_models(root: str | Path, size: str = "tiny", versions=("v1.5", "v1.0"),
                        weights_format: str = "pth", seed: int = 0, face_parser: bool = True) -> Path:
    """A complete models folder with random weights: both UNet versions, sd-vae, taesd, whisper and (unless
    ``face_parser`` is False) the BiSeNet face parser, which has one size only (53 MB). Returns ``root``."""
    root = Path(root)
    for i, version in enumerate(versions):
        write_unet(root, version, size, weights_format, seed + i)
    write_vae(root, size, seed, safe_serialization=weights_format == "safetensors")
    write_taesd(root, size, seed)
    write_whisper(root, size, seed)
    if face_parser:
        write_face_parser(root, seed)
    return root
