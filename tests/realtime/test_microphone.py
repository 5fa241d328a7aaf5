"""The microphone track's tail: frames that arrive after the client ended the utterance are not a new one."""
from __future__ import annotations

import av
import numpy as np

from musetalk.realtime.outputs.microphone import MIC_PAUSE_S, MicrophoneFeed


class FakeControl:
    """What MicrophoneFeed uses of a Control: its session's open utterance, busy_saying, receive_bytes."""

    def __init__(self) -> None:
        self.session = self
        self.utterance_open = False
        self.busy_saying = False
        self.utterances: list[int] = []  # bytes fed per utterance

    def receive_bytes(self, chunk: bytes) -> None:
        if not self.utterance_open:
            self.utterances.append(0)
            self.utterance_open = True
        self.utterances[-1] += len(chunk)


def opus_frame(pts: int) -> av.AudioFrame:
    """20 ms of 48 kHz stereo s16, as aiortc decodes Opus."""
    frame = av.AudioFrame.from_ndarray(np.full((1, 960 * 2), 1000, np.int16), format="s16", layout="stereo")
    frame.sample_rate, frame.pts, frame.time_base = 48000, pts, av.time_base
    return frame


def test_frames_after_an_end_are_dropped_until_the_track_pauses():
    control, now = FakeControl(), [0.0]
    microphone = MicrophoneFeed(control, clock=lambda: now[0])

    def play(frames: int, start: float) -> None:
        for i in range(frames):
            now[0] = start + 0.02 * i
            microphone.feed(opus_frame(i * 960))

    play(50, 0.0)  # 1 s of speech
    control.utterance_open = False  # the client's end arrived ...
    play(5, 1.0)  # ... before the last 100 ms of the track: its tail
    assert len(control.utterances) == 1 and microphone.dropped == 5
    play(50, 1.1 + MIC_PAUSE_S)  # the microphone again, after a pause: the next utterance
    assert len(control.utterances) == 2 and microphone.dropped == 5
    fed = [round(n / 2 / 16000, 2) for n in control.utterances]  # s16 mono 16 kHz: seconds
    assert fed == [1.0, 1.0], fed


def test_no_audio_while_a_say_is_spoken():
    control = FakeControl()
    control.busy_saying = True
    microphone = MicrophoneFeed(control)
    for i in range(10):
        microphone.feed(opus_frame(i * 960))
    assert control.utterances == [] and microphone.dropped == 0
