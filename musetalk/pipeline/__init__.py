"""Pipelines: the one-step generator (:class:`MuseTalk`) and the jobs built on it."""
from .lipsync import MuseTalk

__all__ = ["MuseTalk"]
