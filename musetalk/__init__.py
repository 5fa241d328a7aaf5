"""MuseTalk: real-time, high-quality lip synchronisation by one-step latent-space inpainting."""
from .errors import MuseTalkError
from .pipeline.lipsync import MuseTalk

__all__ = ["MuseTalk", "MuseTalkError"]
__version__ = "0.1.0"
