"""Audio: loading any file to 16 kHz mono, and whisper features windowed per video frame."""
from .load import SAMPLE_RATE, decode_audio, load_audio, to_mono_16k
from .features import frame_count, frame_windows, whisper_hidden_states

__all__ = ["SAMPLE_RATE", "decode_audio", "load_audio", "to_mono_16k", "frame_count", "frame_windows", "whisper_hidden_states"]
