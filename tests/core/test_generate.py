"""One-step generation: official parity, determinism, batching, caching, errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from musetalk import MuseTalk, MuseTalkError
from musetalk.video import read_frames

from .official_reference import official_generate


@pytest.fixture(scope="module")
def crops(media):
    """8 real 256x256 RGB crops: the face region of the first frames of sun.mp4."""
    frames = []
    for i, frame in enumerate(read_frames(media / "sun.mp4")):
        if i == 8:
            break
        import cv2

        frames.append(cv2.resize(frame[150:470, 130:450], (256, 256), interpolation=cv2.INTER_LANCZOS4))
    return np.stack(frames)


@pytest.fixture(scope="module")
def feats(tiny_musetalk, media):
    return tiny_musetalk.audio_features(media / "sun.wav", fps=25)[100:108]


def mean_abs_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3) twice -> float (N,): mean absolute difference per frame in grey levels."""
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).mean(axis=(1, 2, 3))


@pytest.mark.parametrize("version", ["v1.5", "v1.0"])
def test_matches_official_pipeline(tiny_models, crops, feats, version):
    mt = MuseTalk.from_pretrained(tiny_models, version=version)
    ours = mt.generate(crops, feats)
    official = official_generate(mt.unet, mt.vae, crops, feats)
    assert ours.shape == (8, 256, 256, 3) and ours.dtype == np.uint8
    assert np.abs(ours.astype(int) - official.astype(int)).max() <= 2


def test_deterministic(tiny_musetalk, crops, feats):
    tiny_musetalk.cache = type(tiny_musetalk.cache)()
    first = tiny_musetalk.generate(crops, feats)
    second = tiny_musetalk.generate(crops, feats)
    np.testing.assert_array_equal(first, second)


def test_batch_1_equals_batch_8(tiny_musetalk, crops, feats):
    one = tiny_musetalk.generate(crops, feats, batch_size=1)
    eight = tiny_musetalk.generate(crops, feats, batch_size=8)
    assert np.abs(one.astype(int) - eight.astype(int)).max() <= 1


def test_references_change_the_output(tiny_musetalk, crops, feats):
    default = tiny_musetalk.generate(crops, feats)
    same = tiny_musetalk.generate(crops, feats, references=crops)
    other = tiny_musetalk.generate(crops, feats, references=crops[::-1].copy())
    np.testing.assert_array_equal(default, same)
    assert (mean_abs_difference(default, other) > 3).all()  # every frame, by several grey levels


def test_audio_drives_the_output(tiny_musetalk, crops, feats):
    silent = tiny_musetalk.generate(crops, np.zeros_like(feats))
    assert (mean_abs_difference(silent, tiny_musetalk.generate(crops, feats)) > 5).all()


def test_reference_latents_are_cached(tiny_musetalk, crops, feats):
    tiny_musetalk.cache = type(tiny_musetalk.cache)()
    tiny_musetalk.generate(crops, feats)
    assert len(tiny_musetalk.cache) == 16  # masked + reference latent per distinct crop
    repeated = np.concatenate([crops, crops])
    tiny_musetalk.generate(repeated, np.concatenate([feats, feats]))
    assert len(tiny_musetalk.cache) == 16


def test_generate_latents_from_cached_input(tiny_musetalk, crops, feats):
    latents = tiny_musetalk.unet_input(crops, crops)
    assert latents.shape == (8, 8, 32, 32)
    np.testing.assert_array_equal(tiny_musetalk.generate_latents(latents, feats), tiny_musetalk.generate(crops, feats))


def test_input_errors(tiny_musetalk, crops, feats):
    with pytest.raises(MuseTalkError, match=r"crops must be uint8 \(N, 256, 256, 3\) RGB, got float32"):
        tiny_musetalk.generate(crops.astype(np.float32), feats)
    with pytest.raises(MuseTalkError, match=r"crops must be uint8 \(N, 256, 256, 3\) RGB, got uint8 \(8, 128, 128, 3\)"):
        tiny_musetalk.generate(crops[:, :128, :128].copy(), feats)
    with pytest.raises(MuseTalkError, match="need one audio prompt and one reference per crop: 8 crops, 8 references, features of shape \\(7, 50, 384\\)"):
        tiny_musetalk.generate(crops, feats[:7])
    with pytest.raises(MuseTalkError, match="batch_size must be at least 1"):
        tiny_musetalk.generate(crops, feats, batch_size=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 2), (torch.float16, 12), (torch.bfloat16, 24)])
def test_cuda_dtypes_close_to_cpu(tiny_models, crops, feats, dtype, tolerance):
    cpu = MuseTalk.from_pretrained(tiny_models).generate(crops, feats)
    gpu = MuseTalk.from_pretrained(tiny_models, device="cuda", dtype=dtype).generate(crops, feats)
    assert np.abs(cpu.astype(int) - gpu.astype(int)).mean() <= tolerance
