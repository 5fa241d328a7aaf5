"""Offline text-to-speech: text in, float32 mono 16 kHz speech out, sentence by sentence (Piper voices).

    from musetalk.speech import Synthesizer, MAX_TEXT_CHARS
    synth = Synthesizer()                 # the bundled en_US-joe-medium voice, or Synthesizer("voice.onnx")
    for samples in synth.sentences(text): ...
    samples = synth.synthesize(text)

Importing this package loads neither torch nor Piper (Piper loads when a Synthesizer is made).
"""
from .synth import MAX_TEXT_CHARS, SAMPLE_RATE, SpeechError, Synthesizer, check_text

__all__ = ["MAX_TEXT_CHARS", "SAMPLE_RATE", "SpeechError", "Synthesizer", "check_text"]
