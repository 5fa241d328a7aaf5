"""MuseTalk: real-time, high-quality lip synchronisation by one-step latent-space inpainting."""
import os

# The pipelines run torch beside decoding, face-analysis and encoding threads. OpenMP worker threads that
# spin while waiting starve those threads (measured 4.5x slower dubbing on 2 cores), so let them sleep.
# Must be set before torch (and its OpenMP runtime) is loaded; an explicit user setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .errors import MuseTalkError  # noqa: E402

__all__ = ["MuseTalk", "MuseTalkError"]


def __getattr__(name: str):
    """``musetalk.MuseTalk`` is imported on first use, so the CLI starts (and ``--help`` answers) without
    loading torch, diffusers and transformers."""
    if name == "MuseTalk":
        from .pipeline.lipsync import MuseTalk

        return MuseTalk
    raise AttributeError(f"module 'musetalk' has no attribute {name!r}")
__version__ = "0.1.0"
