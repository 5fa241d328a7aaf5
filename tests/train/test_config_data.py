"""Config loading and overrides, audio prompt windows, the resumable sampler, prepared shards of sun.mp4."""
import json

import numpy as np
import pytest
import torch

from musetalk.audio.features import frame_windows
from musetalk.train.config import ConfigError, load_config
from musetalk.train.dataset import EpochBatchSampler, FrameWindows, prompt_window
from musetalk.train.prepare import retime_indices, runs
from musetalk.train.shards import open_shards


def test_official_numbers_and_overrides(tmp_path):
    s1, s2 = load_config(1), load_config(2)
    assert (s1.solver.learning_rate, s1.data.batch_size, s1.loss.vgg, s1.loss.gan, s1.loss.sync) == (2e-5, 32, 0.01, 0, 0)
    assert (s2.solver.learning_rate, s2.data.n_sample_frames, s2.solver.gradient_accumulation_steps) == (5e-6, 16, 8)
    assert (s2.loss.gan, s2.loss.mouth_gan, s2.loss.sync, s2.loss.gan_start_step) == (0.01, 0.01, 0.05, 1000)
    assert s2.data.top_k_ratio == 0.51 and s2.solver.betas == [0.5, 0.999]
    user = tmp_path / "mine.yaml"
    user.write_text("solver:\n  learning_rate: 1e-4\nadapted_weight: {mode: linear}\n")
    cfg = load_config(2, user, ["loss.sync=0.1", "loss.sync_schedule.ramp_steps=100", "data.batch_size=4"])
    assert (cfg.solver.learning_rate, cfg.adapted_weight.mode, cfg.loss.sync) == (1e-4, "linear", 0.1)
    assert (cfg.loss.sync_schedule["ramp_steps"], cfg.data.batch_size, cfg.solver.max_train_steps) == (100, 4, 250000)
    for bad in (["solver.learnig_rate=1"], ["nonsense"], ["data.batch_size.x=1"]):
        with pytest.raises(ConfigError):
            load_config(1, overrides=bad)
    with pytest.raises(ConfigError, match="stage 1"):
        load_config(2, overrides=["stage=1"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(1, tmp_path / "missing.yaml")


def test_prompt_window_matches_inference_windows():
    rng = np.random.default_rng(0)
    states = rng.standard_normal((150, 5, 384)).astype(np.float32)  # 3 s of whisper frames
    windows = frame_windows(states, 3 * 16000, 25.0)
    for frame in (0, 1, 2, 40, len(windows) - 1):
        np.testing.assert_array_equal(prompt_window(states, frame), windows[frame])


def test_sampler_resumes_at_the_same_batches():
    full = EpochBatchSampler(10, 3, seed=1)
    batches = [b for _, b in zip(range(7), iter(full))]
    assert full.batches_per_epoch() == 3 and [k[1] for k in batches[4]] == [4, 4, 4]
    resumed = EpochBatchSampler(10, 3, seed=1)
    resumed.epoch, resumed.batch = resumed.position(4)
    assert [b for _, b in zip(range(3), iter(resumed))] == batches[4:7]
    ranks = [next(iter(EpochBatchSampler(10, 2, seed=1, rank=r, world=2))) for r in (0, 1)]
    assert not {k[2] for k in ranks[0]} & {k[2] for k in ranks[1]}


def test_retiming_and_runs():
    assert retime_indices(6, 30.0, 25.0).tolist() == [0, 1, 2, 3, 4]
    assert retime_indices(4, 20.0, 25.0).tolist() == [0, 0, 1, 2, 3]
    assert runs([True, True, False, True]) == [(0, 2), (3, 4)]


def test_prepared_sun_shards(sun_data):
    (shard,) = open_shards(sun_data)
    meta = shard.meta
    assert meta["fps"] == 25 and meta["num_frames"] == 550 and meta["kept"] > 500
    assert shard.crops.shape == (meta["kept"], 256, 256, 3) and shard.landmarks.shape == (meta["kept"], 68, 2)
    assert shard.whisper.shape[1:] == (5, 384) and shard.whisper.dtype == np.float16
    assert shard.mel.shape[0] == 80 and len(shard.audio) == pytest.approx(22.49 * 16000, rel=1e-3)
    assert json.loads((sun_data / "skipped.json").read_text()) == meta["skipped"] == []
    data = FrameWindows([shard], n_frames=16, holdout_fraction=0.1, image_size=128, seed=3)
    item = data[(0, 0, 5)]
    assert item["target"].shape == item["reference"].shape == (16, 3, 128, 128)
    assert item["prompts"].shape == (16, 50, 384) and item["mel"].shape == (1, 80, 52)
    assert (item["mouth_box"][:, 1] > 64).all()  # mouths are in the lower half of the crop
    assert torch.equal(data[(0, 0, 5)]["reference"], item["reference"])  # seeded per (epoch, item)
    assert data.holdout(0)["target"].shape[0] == round(0.1 * meta["kept"])
