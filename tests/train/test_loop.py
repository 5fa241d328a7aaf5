"""The training loop: exact resume, stage 2 with every loss, export to the official layout, and
training prompts encoded exactly as at inference."""
import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from musetalk import MuseTalk
from musetalk.cli.main import main
from musetalk.models.checkpoint import read_state_dict
from musetalk.train.config import load_config
from musetalk.train.loop import Trainer

from .conftest import TINY_SYNCNET, tiny_overrides


def test_resume_equals_uninterrupted(tiny_models, synthetic_data, tmp_path):
    # Bit-exact only with one CPU thread (the autouse fixture `one_thread` in conftest.py).
    extra = ("data.batch_size=1", "solver.gradient_accumulation_steps=2", "solver.lr_scheduler=linear",
             "solver.lr_warmup_steps=1", "solver.max_train_steps=3", "solver.learning_rate=1e-3")
    straight = load_config(1, overrides=tiny_overrides(tiny_models, synthetic_data, tmp_path / "a", *extra))
    Trainer(straight, progress=False).train()
    split = load_config(1, overrides=tiny_overrides(tiny_models, synthetic_data, tmp_path / "b", *extra))
    Trainer(split, progress=False).train(stop_after=2)
    assert [p.name for p in Trainer(split, progress=False).checkpoints()] == ["checkpoint-2"]
    Trainer(split, progress=False).train()
    a = read_state_dict(tmp_path / "a" / "models" / "musetalkV15" / "unet.pth")
    b = read_state_dict(tmp_path / "b" / "models" / "musetalkV15" / "unet.pth")
    first = read_state_dict(tmp_path / "b" / "checkpoints" / "checkpoint-2" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], first[k]) for k in a)  # the last two steps did change the weights


def test_stage2_every_loss_and_logging(tiny_models, synthetic_data, tmp_path):
    cfg = load_config(2, overrides=tiny_overrides(
        tiny_models, synthetic_data, tmp_path / "run", "data.batch_size=1", "loss.gan_start_step=0",
        "adapted_weight.mode=linear", "syncnet.weights=null", TINY_SYNCNET, "discriminator.block_expansion=8",
        "discriminator.max_features=32", "loss.sync_schedule={start_step: 0, ramp_steps: 2}", "solver.max_train_steps=2",
        "solver.gradient_accumulation_steps=1"))
    out = Trainer(cfg, progress=False).train()
    events = EventAccumulator(str(next((tmp_path / "run" / "tensorboard").rglob("events.out.*")).parent))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for tag in ("loss/l1", "loss/vgg", "loss/gan", "loss/fm", "loss/mouth_gan", "loss/mouth_fm", "loss/sync",
                "loss/D_gan", "loss/D_mouth_gan", "tradeoff/image", "tradeoff/sync", "weight/sync", "weight/adapted",
                "val/mouth_l1"):
        assert tag in tags, tag
    assert [e.value for e in events.Scalars("weight/sync")] == pytest.approx([0.025, 0.05])
    assert all(np.isfinite(e.value) for e in events.Scalars("loss/total"))
    assert (tmp_path / "run" / "validation" / "step_0000002.mp4").stat().st_size > 0
    assert (out / "musetalkV15" / "unet.pth").is_file()


def test_cli_stage1_exports_a_loadable_checkpoint(tiny_models, synthetic_data, tmp_path):
    overrides = tiny_overrides(tiny_models, synthetic_data, tmp_path / "run", "data.batch_size=2",
                               "solver.max_train_steps=1", "loss.vgg=0")
    assert main(["-q", "train", "stage1", *overrides]) == 0
    mt = MuseTalk.from_pretrained(tmp_path / "run" / "models", version="v1.5")
    exported = read_state_dict(tmp_path / "run" / "models" / "musetalkV15" / "unet.pth")
    assert all(torch.equal(v, exported[k]) for k, v in mt.unet.state_dict().items())
    crops = np.zeros((1, 256, 256, 3), np.uint8)
    assert mt.generate(crops, np.zeros((1, 50, 384), np.float32)).shape == (1, 256, 256, 3)


def test_training_forward_matches_inference(tiny_models, synthetic_data, tmp_path):
    """Same UNet, crops, references and prompts: the training forward (with the positional encoding
    on the prompts) renders what MuseTalk.generate renders."""
    cfg = load_config(1, overrides=tiny_overrides(tiny_models, synthetic_data, tmp_path / "run", "data.image_size=256",
                                                  f"init_unet={tiny_models / 'musetalkV15'}", "loss.vgg=0"))
    trainer = Trainer(cfg, progress=False)
    sample = trainer.dataset[(0, 0, 3)]
    prompts = sample["prompts"] * 3  # make the audio matter
    with torch.no_grad():
        pred = trainer.predict(sample["target"], sample["reference"], prompts)
    trained = ((pred.clamp(-1, 1) / 2 + 0.5).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    to_u8 = lambda x: ((x.permute(0, 2, 3, 1).numpy() + 1) * 127.5).round().astype(np.uint8)  # noqa: E731
    mt = MuseTalk.from_pretrained(tiny_models, version="v1.5")
    inferred = mt.generate(to_u8(sample["target"]), prompts.numpy(), references=to_u8(sample["reference"]))
    assert np.abs(trained.astype(int) - inferred.astype(int)).max() <= 2
    without_pe = mt.generate_latents(mt.unet_input(to_u8(sample["target"]), to_u8(sample["reference"])),
                                     prompts.numpy() - 1e3)  # a different prompt must change the output
    assert np.abs(without_pe.astype(int) - inferred.astype(int)).max() > 2
