"""Video and image I/O in-process with PyAV: frames in RGB uint8 (H, W, 3), exact frame rates as Fractions."""
from .io import VideoInfo, VideoWriter, atomic_output, is_image, probe, read_frames, read_image

__all__ = ["VideoInfo", "VideoWriter", "atomic_output", "is_image", "probe", "read_frames", "read_image"]
