"""A client's microphone track as its session's speech: decoded audio frames resampled to s16 mono
16 kHz and fed through the session's :class:`~.control.Control`.

The client ends a microphone utterance on its control channel (``end``), which is not the path its audio
takes: the last packets of the track can arrive after the ``end``. Those belong to the utterance that
ended; fed, they would open a new one that nobody ends. So after the utterance it fed is ended (or
interrupted), the track's frames are dropped until it pauses for ``MIC_PAUSE_S`` (a client stops sending
when it detaches its microphone): the next burst is the next utterance.
"""
from __future__ import annotations

import time
from typing import Callable

import av

from ...audio.load import SAMPLE_RATE
from .control import Control

MIC_PAUSE_S = 0.3  # no frame for this long: the microphone was detached, what follows is a new utterance


class MicrophoneFeed:
    """Feeds the frames of one microphone track (:meth:`feed`, in arrival order) to ``control``'s session
    (not while a ``say`` is spoken); ``dropped`` counts the frames of an ended utterance's tail."""

    def __init__(self, control: Control, clock: Callable[[], float] = time.monotonic) -> None:
        self.control = control
        self.clock = clock
        self.dropped = 0
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        self._last_at = -float("inf")
        self._fed = False  # this burst fed the utterance that is open now
        self._tail = False  # that utterance ended: drop until the track pauses

    def feed(self, frame: av.AudioFrame) -> None:
        """One decoded frame of the track; raises the control's ProtocolError / SessionError."""
        now = self.clock()
        paused, self._last_at = now - self._last_at >= MIC_PAUSE_S, now
        if self._fed and not self.control.session.utterance_open:
            self._fed, self._tail = False, True
        if self._tail and not paused:
            self.dropped += 1
            return
        self._tail = False
        for out in self._resampler.resample(frame):
            if not self.control.busy_saying:
                self.control.receive_bytes(out.to_ndarray().astype("<i2").tobytes())
                self._fed = True
