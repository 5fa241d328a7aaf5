"""Model files: official layout, both versions and formats, clear errors, offline download."""
from __future__ import annotations

import shutil

import pytest
import torch

from musetalk import MuseTalk
from musetalk.cli.main import main
from musetalk.errors import CheckpointError, ModelFilesError
from musetalk.models import download as download_module
from musetalk.models.layout import model_paths
from musetalk.models.random_init import write_random_models, write_unet


@pytest.mark.parametrize("version", ["v1.5", "v1.0"])
def test_loads_both_versions(tiny_models, version):
    mt = MuseTalk.from_pretrained(tiny_models, version=version)
    assert mt.version == version
    assert mt.unet.config.in_channels == 8 and mt.unet.config.cross_attention_dim == 384
    assert not any(p.requires_grad for p in mt.unet.parameters())


def test_safetensors_weights_equal_pth(tmp_path, tiny_models):
    root = write_random_models(tmp_path / "st", weights_format="safetensors")
    assert (root / "musetalkV15" / "unet.safetensors").is_file()
    assert (root / "sd-vae" / "diffusion_pytorch_model.safetensors").is_file()
    a = MuseTalk.from_pretrained(root).unet.state_dict()
    b = MuseTalk.from_pretrained(tiny_models).unet.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_env_var_sets_models_dir(monkeypatch, tiny_models):
    monkeypatch.setenv("MUSETALK_MODELS", str(tiny_models))
    assert MuseTalk.from_pretrained().version == "v1.5"


def test_missing_files_message_names_files_layout_and_command(tmp_path):
    with pytest.raises(ModelFilesError) as err:
        MuseTalk.from_pretrained(tmp_path / "empty")
    message = str(err.value)
    assert "\n" not in message
    for part in ("musetalkV15/unet.pth", "sd-vae/config.json", "whisper/pytorch_model.bin",
                 "musetalk download --models", "MUSETALK_MODELS"):
        assert part in message


def test_unknown_version(tiny_models):
    with pytest.raises(ModelFilesError, match="unknown model version 'v2': choose one of v1.5, v1.0"):
        MuseTalk.from_pretrained(tiny_models, version="v2")


def _copy(tiny_models, tmp_path):
    return shutil.copytree(tiny_models, tmp_path / "models")


def test_wrong_key_names_the_file(tmp_path, tiny_models):
    root = _copy(tiny_models, tmp_path)
    path = root / "musetalkV15" / "unet.pth"
    state = torch.load(path)
    state["module.extra"] = state.pop("conv_in.weight")
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=rf"checkpoint {path} does not fit .*1 missing keys \(first: conv_in.weight\); 1 unexpected keys \(first: module.extra\)"):
        MuseTalk.from_pretrained(root)


def test_wrong_shape_names_file_and_key(tmp_path, tiny_models):
    root = _copy(tiny_models, tmp_path)
    write_unet(root, "v1.0", size="tiny")
    config = (root / "musetalk" / "musetalk.json")
    config.write_text(config.read_text().replace('"in_channels": 8', '"in_channels": 9'))
    with pytest.raises(CheckpointError, match=r"pytorch_model.bin does not fit the model config: conv_in.weight has shape \(32, 8, 3, 3\), the config expects \(32, 9, 3, 3\)"):
        MuseTalk.from_pretrained(root, version="v1.0")


def test_corrupt_checkpoint(tmp_path, tiny_models):
    root = _copy(tiny_models, tmp_path)
    (root / "musetalkV15" / "unet.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint .*unet.pth"):
        MuseTalk.from_pretrained(root)


def test_download_offline_fails_fast_with_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(download_module, "hub_reachable", lambda timeout=5.0: False)
    assert main(["download", "--models", str(tmp_path / "m")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("musetalk: error: cannot download 9 model files into")
    assert "musetalkV15/unet.pth" in err and "musetalk download --models" in err
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").rglob("*.*"))


def test_download_if_missing_is_a_no_op_when_present(tiny_models, monkeypatch):
    monkeypatch.setattr(download_module, "hub_reachable", lambda timeout=5.0: pytest.fail("must not touch the hub"))
    assert main(["download", "--models", str(tiny_models), "--if-missing"]) == 0


def test_model_paths_missing_lists_nothing_for_complete_folder(tiny_models):
    assert model_paths(tiny_models, "v1.0").missing() == []


def test_one_masking_and_encode_for_training_and_inference(tiny_musetalk):
    """The inference crops and the training tensors go through the same masking and the same VAE encode."""
    import numpy as np

    from musetalk.models.vae import crops_to_tensor, encode, mask_lower_half
    from musetalk.train import loop

    crops = np.random.default_rng(0).integers(0, 256, (2, 256, 256, 3), dtype=np.uint8)
    plain, masked = crops_to_tensor(crops, masked=False), crops_to_tensor(crops, masked=True)
    assert torch.equal(masked, mask_lower_half(plain))
    assert (masked[:, :, 128:] == -1).all() and torch.equal(masked[:, :, :128], plain[:, :, :128])
    assert loop.encode is encode and loop.mask_lower_half is mask_lower_half
    latents = encode(tiny_musetalk.vae, masked)
    assert latents.shape == (2, 4, 32, 32) and not latents.is_inference()
