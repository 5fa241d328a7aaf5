"""Fixtures of the training tests: prepared data (sun.mp4 through `musetalk train prepare`, synthetic
shards) and fast tiny-run config overrides."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

TINY_SYNCNET = ("syncnet.config={audio: {in_channels: 1, block_out_channels: [8, 8, 8, 8, 8, 8, 8], "
                "downsample_factors: [[2, 1], 2, 2, 1, 2, 2, [2, 3]], norm_num_groups: 4}, "
                "visual: {in_channels: 48, block_out_channels: [8, 8, 8, 8, 8, 8], "
                "downsample_factors: [[1, 2], 2, 2, 2, 2, 2], norm_num_groups: 4}}")


def tiny_overrides(models: Path, data: Path, out: Path, *extra: str) -> list[str]:
    """Overrides for a seconds-long CPU run: 64 px crops, narrow random VGG (and SyncNet), constant lr, no
    warm-up."""
    return [f"models_dir={models}", f"data_dir={data}", f"output_dir={out}", "init_unet=null", "allow_random_aux=true",
            "solver.gradient_checkpointing=false", "solver.lr_warmup_steps=0", "solver.lr_scheduler=constant",
            "data.min_face_size=0", "data.image_size=64", "loss.vgg_width_divisor=8", "loss.resize_to=64",
            "loss.pyramid_scales=[1, 0.5]", "validation_frames=4", "log_steps=1", *extra]


@pytest.fixture(autouse=True)
def one_thread():
    """Training tests run torch on one thread: on a shared 2-core machine two OpenMP threads spin-wait on
    each other (10x slower), and multi-threaded CPU reductions differ run to run in the last bits (1e-10),
    which would hide whether resume is exact."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def sun_videos(media, tmp_path_factory) -> Path:
    """A videos folder with sun.mp4 (no sound) and its sidecar sun.wav."""
    folder = tmp_path_factory.mktemp("videos")
    (folder / "sun.mp4").symlink_to(media / "sun.mp4")
    (folder / "sun.wav").symlink_to(media / "sun.wav")
    return folder


@pytest.fixture(scope="session")
def sun_data(sun_videos, tiny_models, tmp_path_factory) -> Path:
    """sun.mp4 prepared once per session with `musetalk train prepare` (real dlib face analysis)."""
    from musetalk.cli.main import main

    out = tmp_path_factory.mktemp("sun_data")
    assert main(["-q", "train", "prepare", str(sun_videos), "--out", str(out), "--models", str(tiny_models)]) == 0
    return out


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> Path:
    from musetalk.train.synthetic import write_synthetic_data

    return write_synthetic_data(tmp_path_factory.mktemp("synthetic"), clips=2, frames=40)
