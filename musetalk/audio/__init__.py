"""Audio: loading any file to 16 kHz mono, and whisper features windowed per video frame."""
from .load import SAMPLE_RATE, load_audio
from .features import frame_count, frame_windows, whisper_hidden_states

__all__ = ["SAMPLE_RATE", "load_audio", "frame_count", "frame_windows", "whisper_hidden_states"]
