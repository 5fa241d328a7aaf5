"""A literal re-statement of the official computation (spec sections 2-3), step by step and frame by
frame, used as the parity target. Deliberately naive: per-frame loops, OpenCV BGR round trips, float64
normalisation, integer fps, as the official scripts do."""
from __future__ import annotations

import math

import cv2
import numpy as np
import torch


def official_audio_prompts(encoder, extractor, samples: np.ndarray, fps: int) -> np.ndarray:
    """(T, 50, 384) as the official get_audio_feature + get_whisper_chunk compute them (fps truncated)."""
    segments = [samples[i : i + 480000] for i in range(0, len(samples), 480000)]
    feats = []
    with torch.no_grad():
        for segment in segments:
            mel = extractor(segment, return_tensors="pt", sampling_rate=16000).input_features
            hidden = encoder(mel, output_hidden_states=True).hidden_states
            feats.append(torch.stack(hidden, dim=2))
    whisper_feature = torch.cat(feats, dim=1)
    fps = int(fps)
    multiplier = 50 / fps
    num_frames = math.floor((len(samples) / 16000) * fps)
    whisper_feature = whisper_feature[:, : math.floor((len(samples) / 16000) * 50)]
    pad = math.ceil(multiplier)
    whisper_feature = torch.cat(
        [torch.zeros_like(whisper_feature[:, : pad * 2]), whisper_feature, torch.zeros_like(whisper_feature[:, : pad * 3 * 2])], 1
    )
    prompts = []
    for i in range(num_frames):
        start = math.floor(i * multiplier)
        clip = whisper_feature[:, start : start + 10]
        assert clip.shape[1] == 10
        prompts.append(clip)
    prompts = torch.cat(prompts, dim=0)
    return prompts.reshape(prompts.shape[0], 50, prompts.shape[-1]).numpy()


class _PositionalEncoding(torch.nn.Module):
    def __init__(self, d_model: int = 384, max_len: int = 5000):
        super().__init__()
        pe = torch.zeros(max_len, d_model)
        position = torch.arange(0, max_len, dtype=torch.float).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term)
        self.register_buffer("pe", pe.unsqueeze(0))

    def forward(self, x):
        return x + self.pe[:, : x.size(1), :]


def _preprocess(bgr: np.ndarray, half_mask: bool) -> torch.Tensor:
    img = cv2.resize(bgr, (256, 256), interpolation=cv2.INTER_LANCZOS4)
    rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    x = torch.FloatTensor(np.transpose(np.asarray([rgb]) / 255.0, (3, 0, 1, 2))).squeeze()
    if half_mask:
        mask = torch.zeros(256, 256)
        mask[:128, :] = 1
        x = x * (mask > 0.5)
    return ((x - 0.5) / 0.5).unsqueeze(0)


def official_generate(unet, vae, crops_rgb: np.ndarray, prompts: np.ndarray) -> np.ndarray:
    """Frame by frame as scripts/inference.py does, with the latent mean instead of a sample. RGB out."""
    pe = _PositionalEncoding()
    out = []
    with torch.no_grad():
        for crop, prompt in zip(crops_rgb, prompts):
            bgr = cv2.cvtColor(crop, cv2.COLOR_RGB2BGR)
            masked = 0.18215 * vae.encode(_preprocess(bgr, True)).latent_dist.mean
            ref = 0.18215 * vae.encode(_preprocess(bgr, False)).latent_dist.mean
            latent = torch.cat([masked, ref], dim=1)
            audio = pe(torch.from_numpy(prompt)[None])
            pred = unet(latent, torch.tensor([0]), encoder_hidden_states=audio).sample
            image = vae.decode(pred / 0.18215).sample
            image = (image / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float().numpy()
            bgr_out = (image * 255).round().astype("uint8")[..., ::-1]
            out.append(bgr_out[0][..., ::-1])
    return np.stack(out)
