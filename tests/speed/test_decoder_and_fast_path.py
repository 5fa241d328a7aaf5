"""The tiny decoder (TAESD) and the fast-path options (static batches, channels_last, compile, pinned
host ring, device busy time), all on CPU with tiny random weights."""
from __future__ import annotations

import shutil
import time

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, AutoencoderTiny

from musetalk import MuseTalk, MuseTalkError
from musetalk.models.decoder import images_to_uint8
from musetalk.pipeline.acceleration import Acceleration, resolve_dtype
from musetalk.pipeline.timing import DeviceBusy


@pytest.fixture(scope="module")
def inputs(tiny_musetalk):
    """UNet input (5, 8, 32, 32) from random crops and random prompts float32 (5, 50, 384)."""
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (5, 256, 256, 3), dtype=np.uint8)
    return tiny_musetalk.unet_input(crops, crops), rng.standard_normal((5, 50, 384)).astype(np.float32)


@pytest.fixture(scope="module")
def tiny_decoder_model(tiny_models):
    return MuseTalk.from_pretrained(tiny_models, decoder="tiny")


def unet_output(mt: MuseTalk, latents: torch.Tensor, prompts: np.ndarray) -> torch.Tensor:
    """What the UNet predicts (the scaled latent space), computed outside MuseTalk."""
    from musetalk.models.positional import add_positional_encoding

    with torch.inference_mode():
        encoded = add_positional_encoding(torch.from_numpy(prompts))
        return mt.unet(latents, torch.zeros((), dtype=torch.long), encoder_hidden_states=encoded).sample


def test_tiny_decoder_loads_from_the_hub_layout(tiny_models, tiny_decoder_model, inputs):
    assert sorted(p.name for p in (tiny_models / "taesd").iterdir()) == ["config.json",
                                                                      "diffusion_pytorch_model.safetensors"]
    assert isinstance(tiny_decoder_model.decoder.network, AutoencoderTiny)
    assert tiny_decoder_model.decoder.name == "tiny"
    assert isinstance(tiny_decoder_model.vae, AutoencoderKL)  # the encoder stays the full VAE
    faces = tiny_decoder_model.generate_latents(*inputs)
    assert faces.shape == (5, 256, 256, 3) and faces.dtype == np.uint8


def test_tiny_decoder_takes_the_scaled_latents_as_they_are(tiny_decoder_model, inputs):
    latents, prompts = inputs
    predicted = unet_output(tiny_decoder_model, latents, prompts)
    taesd = tiny_decoder_model.decoder.network
    with torch.inference_mode():
        ours = tiny_decoder_model.decoder.to_images(predicted)
        right = taesd.decode(predicted).sample
        wrong = taesd.decode(predicted / 0.18215).sample  # what the VAE path feeds its decoder
    torch.testing.assert_close(ours, right, rtol=0, atol=0)
    assert (ours - wrong).abs().mean() > 0.005  # random weights still tell the two scales apart
    np.testing.assert_array_equal(tiny_decoder_model.generate_latents(latents, prompts),
                                  images_to_uint8(right).numpy())


def test_vae_decoder_unscales_by_its_factor(tiny_musetalk, inputs):
    latents, prompts = inputs
    predicted = unet_output(tiny_musetalk, latents, prompts)
    with torch.inference_mode():
        right = images_to_uint8(tiny_musetalk.vae.decode(predicted / 0.18215).sample).numpy()
    assert tiny_musetalk.decoder.scale == pytest.approx(0.18215)
    np.testing.assert_array_equal(tiny_musetalk.generate_latents(latents, prompts), right)


def test_missing_taesd_gives_the_download_line(tiny_models, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(tiny_models, models, ignore=shutil.ignore_patterns("taesd"))
    with pytest.raises(MuseTalkError) as err:
        MuseTalk.from_pretrained(models, decoder="tiny")
    assert str(err.value) == (f"tiny decoder files missing in {models}/taesd/: config.json, "
                              f"diffusion_pytorch_model.safetensors; run `musetalk download --models {models}` "
                              f"(fetches taesd/) or use --decoder vae")
    with pytest.raises(MuseTalkError, match="unknown decoder 'small': choose one of vae, tiny"):
        MuseTalk.from_pretrained(tiny_models, decoder="small")


def test_static_batch_and_channels_last_match_eager(tiny_models, tiny_musetalk, inputs):
    expected = tiny_musetalk.generate_latents(*inputs)
    padded = MuseTalk.from_pretrained(tiny_models, accel=Acceleration(channels_last=True, static_batch=8))
    assert padded.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    got = padded.generate_latents(*inputs)
    assert got.shape == (5, 256, 256, 3)
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    with pytest.raises(MuseTalkError, match="a batch of 9 frames exceeds the static batch size 8"):
        padded.generate_latents(torch.cat([inputs[0]] * 2)[:9], np.concatenate([inputs[1]] * 2)[:9])


def test_two_batches_in_flight_keep_their_own_results(tiny_musetalk, inputs):
    latents, prompts = inputs
    one = tiny_musetalk.generate_latents(latents[:2], prompts[:2])
    two = tiny_musetalk.generate_latents(latents[2:], prompts[2:])
    first, second = tiny_musetalk.launch(latents[:2], prompts[:2]), tiny_musetalk.launch(latents[2:], prompts[2:])
    np.testing.assert_array_equal(second.result(), two)
    np.testing.assert_array_equal(first.result(), one)


@pytest.mark.parametrize("mode,torch_mode", [("compile", "default"), ("cudagraphs", "reduce-overhead")])
def test_compile_modes_wrap_the_whole_step(tiny_models, monkeypatch, mode, torch_mode):
    calls = []

    def record(fn, mode, dynamic):
        calls.append((fn.__name__, mode, dynamic))
        return fn

    monkeypatch.setattr(torch, "compile", record)
    MuseTalk.from_pretrained(tiny_models, accel=Acceleration(static_batch=4, compile=mode))
    assert calls == [("_render", torch_mode, False)]


@pytest.mark.slow
def test_compiled_step_matches_eager(tiny_models, tiny_musetalk, inputs, monkeypatch):
    """Traced by dynamo at a static batch of 8 (AOT eager backend: inductor's C++ build takes minutes on CPU)."""
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, mode, dynamic: real_compile(fn, backend="aot_eager",
                                                                                 dynamic=dynamic))
    expected = tiny_musetalk.generate_latents(*inputs)
    compiled = MuseTalk.from_pretrained(tiny_models, accel=Acceleration(static_batch=8, compile="cudagraphs"))
    got = compiled.generate_latents(*inputs)
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    np.testing.assert_array_equal(compiled.generate_latents(inputs[0][:3], inputs[1][:3]), got[:3])


def test_acceleration_settings():
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("auto", "cuda") == torch.float16
    assert resolve_dtype("bfloat16", "cuda") == torch.bfloat16
    assert not Acceleration().uses_channels_last(torch.device("cpu"))
    assert Acceleration().uses_channels_last(torch.device("cuda"))
    with pytest.raises(MuseTalkError, match="compile mode 'compile' needs a static batch size"):
        Acceleration(compile="compile")
    with pytest.raises(MuseTalkError, match="unknown compile mode 'fast': choose one of off, compile, cudagraphs"):
        Acceleration(compile="fast", static_batch=4)
    with pytest.raises(MuseTalkError, match="unknown dtype 'half': choose one of auto, float32, float16, bfloat16"):
        resolve_dtype("half", "cpu")


def test_device_busy_counts_work_not_waits():
    busy = DeviceBusy(torch.device("cpu"))
    for _ in range(2):
        with busy():
            time.sleep(0.2)
        time.sleep(0.2)
    busy.mark_done()
    assert busy.busy_seconds() == pytest.approx(0.4, abs=0.15)
    assert busy.idle_fraction() == pytest.approx(0.5, abs=0.15)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("compile_mode", ["off", "cudagraphs"])
def test_cuda_fast_path_close_to_cpu(tiny_models, tiny_musetalk, inputs, compile_mode):
    expected = tiny_musetalk.generate_latents(*inputs)
    gpu = MuseTalk.from_pretrained(tiny_models, device="cuda", decoder="vae",
                                   accel=Acceleration(static_batch=8, compile=compile_mode))
    assert gpu.dtype == torch.float16 and gpu.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert gpu._ring.next(8).faces.is_pinned()
    got = gpu.generate_latents(*inputs)
    assert np.abs(got.astype(int) - expected.astype(int)).mean() <= 12
    assert 0.0 < gpu.busy.busy_seconds()


def test_download_fetches_taesd_as_an_optional_group():
    from musetalk.models.download import files_for

    taesd = [(f.repo, f.filename, f.target, f.required) for f in files_for(("v1.5",), face_parsing=False)
             if f.target.startswith("taesd/")]
    assert taesd == [("madebyollin/taesd", "config.json", "taesd/config.json", False),
                     ("madebyollin/taesd", "diffusion_pytorch_model.safetensors",
                      "taesd/diffusion_pytorch_model.safetensors", False)]
