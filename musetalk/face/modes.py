"""Blend-mask modes (which region of the face is replaced) and the default of each MuseTalk version."""
from __future__ import annotations

MODES = ("jaw", "raw", "neck")
# The official blending of each release: v1.5 grows the jaw line a little, v1.0 replaces the raw face region.
DEFAULT_BLEND_MODES = {"v1.5": "jaw", "v1.0": "raw"}
DEFAULT_BLEND_MODE = DEFAULT_BLEND_MODES["v1.5"]


def default_blend_mode(version: str) -> str:
    """The blend mode of MuseTalk ``version`` ("v1.5": "jaw", "v1.0": "raw")."""
    return DEFAULT_BLEND_MODES[version]
