"""Losses, adapted weight, sync-weight schedule, and the checkpoint layouts of VGG-19 and the LatentSync SyncNet."""
import pytest
import torch

from musetalk.errors import CheckpointError
from musetalk.models.discriminator import MultiScaleDiscriminator
from musetalk.models.syncnet_latentsync import EncoderConfig, LatentSyncNet, SyncNetConfig, load_latentsync_syncnet
from musetalk.models.vgg19 import VGG19, load_vgg19
from musetalk.train import losses as L


def test_adapted_weight_modes():
    sim = torch.tensor([0.01, 0.05, 0.3, 0.65, 0.9])
    assert L.adapted_weight(sim, "off").tolist() == [1, 1, 1, 1, 1]
    assert L.adapted_weight(sim, "cut_off").tolist() == [0, 1, 1, 1, 0]
    assert torch.allclose(L.adapted_weight(sim, "linear"), torch.tensor([0.01, 1, 1, 1, 0.9]))
    with pytest.raises(ValueError):
        L.adapted_weight(sim, "bogus")


def test_sync_weight_schedule():
    assert L.sync_weight_at(0, 0.05) == 0.05
    assert L.sync_weight_at(9, 0.05, start_step=10) == 0.0
    assert L.sync_weight_at(10, 0.05, start_step=10, ramp_steps=4) == pytest.approx(0.0125)
    assert L.sync_weight_at(100, 0.05, start_step=10, ramp_steps=4) == pytest.approx(0.05)


def test_image_losses_are_per_image_and_zero_on_identity():
    torch.manual_seed(0)
    a, b = torch.rand(4, 3, 64, 64) * 2 - 1, torch.rand(4, 3, 64, 64) * 2 - 1
    perceptual = L.PerceptualLoss(VGG19(width_divisor=8), (1, 0.5), (1, 1, 1, 1, 1), input_size=64)
    assert perceptual(a, a).abs().max() == 0
    assert perceptual(a, b).shape == (4,) and (perceptual(a, b) > 0).all()
    assert L.l1_per_image(a, b).shape == (4,)
    assert L.per_sample(torch.arange(6.0), 2).tolist() == [1.0, 4.0]
    pyramid = L.ImagePyramid((1, 0.5, 0.25, 0.125))(a)
    assert [pyramid[s].shape[-1] for s in (1, 0.5, 0.25, 0.125)] == [64, 32, 16, 8]


def test_gan_losses_and_discriminator_gradients():
    torch.manual_seed(0)
    gan = L.GanLosses(MultiScaleDiscriminator((1, 0.5), block_expansion=8, max_features=32), size=128)
    pred = (torch.rand(2, 3, 64, 64) * 2 - 1).requires_grad_(True)
    target = torch.rand(2, 3, 64, 64) * 2 - 1
    adv, fm = gan.generator(pred, target, (1, 1, 1, 1))
    (adv + fm).sum().backward()
    assert pred.grad is not None and all(p.grad is None for p in gan.parameters())
    d = gan(pred, target)
    d.sum().backward()
    assert d.shape == (2,) and all(p.grad is not None for p in gan.discriminator.parameters() if p.requires_grad)
    boxes = torch.tensor([[10, 30, 50, 60], [0, 0, 64, 64]])
    assert L.crop_mouths(target, boxes, 32).shape == (2, 3, 32, 32)


def test_vgg19_loads_standard_imagenet_layout(tmp_path):
    full = VGG19()
    state = {f"features.{k}": v for k, v in full.features.state_dict().items()}
    state |= {"features.30.weight": torch.zeros(512, 512, 3, 3), "classifier.0.weight": torch.zeros(4096, 25088)}
    torch.save(state, tmp_path / "vgg19.pth")
    loaded = load_vgg19(tmp_path / "vgg19.pth")
    assert torch.equal(loaded.features[28].weight, full.features[28].weight)
    assert not any(p.requires_grad for p in loaded.parameters())
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError):
        load_vgg19(tmp_path / "bad.pth")


def test_latentsync_syncnet_layout_and_sync_loss(tmp_path):
    net = LatentSyncNet()  # the published architecture: embeddings (B, 2048)
    keys = net.state_dict().keys()
    assert "visual_encoder.down_blocks.7.downsample_conv.weight" in keys
    assert "audio_encoder.down_blocks.0.conv_shortcut.weight" not in keys  # 32 -> 32 has no shortcut
    assert net.visual_encoder.conv_in.weight.shape == (64, 48, 3, 3)
    tiny = SyncNetConfig(EncoderConfig(1, (8,) * 7, ((2, 1), 2, 2, 1, 2, 2, (2, 3)), 4),
                         EncoderConfig(48, (8,) * 8, ((1, 2), 2, 2, 2, 2, 2, 2, 2), 4))
    torch.save({"state_dict": LatentSyncNet(tiny).state_dict(), "global_step": 1}, tmp_path / "sync.pt")
    model = load_latentsync_syncnet(tmp_path / "sync.pt", tiny)
    mel, frames = torch.randn(2, 1, 80, 52), torch.rand(2 * 16, 3, 256, 256) * 2 - 1
    stacked = L.sync_frames(frames, 2)
    assert stacked.shape == (2, 48, 128, 256)
    loss, sim = L.sync_loss(model, model.embed_audio(mel), stacked)
    assert loss.shape == sim.shape == (2,) and (sim.abs() <= 1).all()
    with pytest.raises(CheckpointError):
        load_latentsync_syncnet(tmp_path / "sync.pt")  # published architecture vs tiny weights
