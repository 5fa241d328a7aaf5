"""The default torch device of every command and API: CUDA when torch sees a GPU, else the CPU."""
from __future__ import annotations


def default_device() -> str:
    """"cuda" when torch sees a GPU, else "cpu" (imports torch: call it when the work starts)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
