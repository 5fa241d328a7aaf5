"""The frozen auxiliary networks of training: found in the models folder (timm's VGG19 layout), refused when
missing unless --allow-random-aux; validation at step 0 and on every clip."""
from __future__ import annotations

import re

import pytest
import torch
from safetensors.torch import save_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from musetalk.cli.main import main
from musetalk.models.vgg19 import VGG19
from musetalk.train.config import ConfigError, load_config
from musetalk.train.loop import Trainer

from .conftest import tiny_overrides


def _without_random_aux(overrides: list[str]) -> list[str]:
    return [o for o in overrides if o != "allow_random_aux=true"]


def test_missing_vgg_is_refused_in_one_line_unless_allowed(tiny_models, synthetic_data, tmp_path, capsys):
    overrides = _without_random_aux(tiny_overrides(tiny_models, synthetic_data, tmp_path / "run",
                                                   "solver.max_train_steps=1", "data.batch_size=2"))
    assert main(["train", "stage1", *overrides]) == 1
    err = capsys.readouterr().err
    assert err == (f"musetalk: error: the perceptual loss (VGG-19) needs its weights: {tiny_models}/vgg/"
                   f"vgg19.tv_in1k.safetensors not found; run `musetalk download --train --models {tiny_models}`, set "
                   "loss.vgg_weights, or pass --allow-random-aux for a smoke run\n")
    assert not (tmp_path / "run").exists()
    assert main(["-q", "train", "stage1", "--allow-random-aux", *overrides]) == 0


def test_missing_syncnet_is_refused_for_stage2(tiny_models, synthetic_data, tmp_path):
    overrides = _without_random_aux(tiny_overrides(tiny_models, synthetic_data, tmp_path / "run", "loss.vgg=0"))
    cfg = load_config(2, overrides=overrides)
    expected = f"the sync loss (SyncNet) needs its weights: {tiny_models}/syncnet/latentsync_syncnet.pt not found"
    with pytest.raises(ConfigError, match=re.escape(expected)):
        Trainer(cfg, progress=False)


def test_timm_vgg19_in_the_models_folder_is_found_and_loaded(tiny_models, synthetic_data, tmp_path):
    """``musetalk download --train`` stores timm/vgg19.tv_in1k's model.safetensors (features.N.*, then
    pre_logits.fc1/fc2 and head.fc, which the perceptual loss does not use)."""
    models = tmp_path / "models"
    models.mkdir()
    for item in tiny_models.iterdir():
        (models / item.name).symlink_to(item)
    torch.manual_seed(3)
    narrow = VGG19(width_divisor=8)
    state = {k: v.clone() for k, v in narrow.state_dict().items()}
    state |= {"features.32.weight": torch.zeros(64, 64, 3, 3), "pre_logits.fc1.weight": torch.zeros(8, 64, 7, 7),
              "pre_logits.fc2.weight": torch.zeros(8, 8, 1, 1), "head.fc.weight": torch.zeros(10, 8)}
    (models / "vgg").mkdir()
    save_file(state, models / "vgg" / "vgg19.tv_in1k.safetensors")
    cfg = load_config(1, overrides=_without_random_aux(tiny_overrides(models, synthetic_data, tmp_path / "run")))
    loaded = Trainer(cfg, progress=False).vgg_loss.vgg.state_dict()
    assert loaded.keys() == narrow.state_dict().keys()
    assert all(torch.equal(loaded[k], narrow.state_dict()[k]) for k in loaded)


def test_validation_at_step_0_and_on_every_clip(tiny_models, synthetic_data, tmp_path):
    cfg = load_config(1, overrides=tiny_overrides(tiny_models, synthetic_data, tmp_path / "run", "data.batch_size=2",
                                                  "loss.vgg=0", "solver.max_train_steps=2", "validation_steps=2"))
    trainer = Trainer(cfg, progress=False)
    names = [c.shard.name for c in trainer.dataset.clips]
    assert len(names) == 2
    start = trainer.clip_errors(4)
    trainer.train()
    events = EventAccumulator(str(next((tmp_path / "run" / "tensorboard").rglob("events.out.*")).parent))
    events.Reload()
    assert [e.step for e in events.Scalars("val/mouth_l1")] == [0, 2]
    for name, error in zip(names, start):
        logged = events.Scalars(f"val/mouth_l1/{name}")
        assert [e.step for e in logged] == [0, 2]
        assert abs(logged[0].value - error) < 1e-3  # step 0 is the untrained UNet, before any update
    assert sorted(p.name for p in (tmp_path / "run" / "validation").iterdir()) == ["step_0000000.mp4", "step_0000002.mp4"]
