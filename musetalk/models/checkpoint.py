"""Reading state dicts from ``.pth``/``.bin``/``.safetensors`` and loading them with clear errors."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file on CPU. Accepts a plain state dict or one wrapped in ``state_dict``."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint not found: {path}") from None
    except Exception as exc:  # corrupt or foreign files raise many types; name the file
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.__class__.__name__}: {exc}".splitlines()[0]) from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"checkpoint {path} is not a state dict of tensors")
    return state


def fill_batch_counters(module: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Add the BatchNorm ``num_batches_tracked`` counters that checkpoints saved by old PyTorch (< 0.4.1)
    lack; they only matter for training with momentum=None, never for inference."""
    missing = [k for k in module.state_dict() if k.endswith("num_batches_tracked") and k not in state]
    return {**state, **{k: torch.zeros((), dtype=torch.long) for k in missing}} if missing else state


def check_state_dict(module: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Raise :class:`CheckpointError` naming ``path`` when keys or shapes differ from ``module``."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (first: {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (first: {unexpected[0]})")
        raise CheckpointError(f"checkpoint {path} does not fit the model config: {'; '.join(parts)}")
    for key, shape in expected.items():
        if tuple(state[key].shape) != shape:
            raise CheckpointError(
                f"checkpoint {path} does not fit the model config: {key} has shape "
                f"{tuple(state[key].shape)}, the config expects {shape}"
            )


def load_checked(module: nn.Module, path: Path, dtype: torch.dtype | None = None) -> nn.Module:
    """Load ``path`` into ``module`` (which may live on the meta device) after checking it fits;
    floating-point tensors are cast to ``dtype`` when given."""
    state = fill_batch_counters(module, read_state_dict(path))
    check_state_dict(module, state, path)
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    module.load_state_dict(state, strict=True, assign=True)
    return module
