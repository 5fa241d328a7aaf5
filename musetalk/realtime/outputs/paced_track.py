"""An aiortc track that a playout loop feeds, each frame to leave at its own time: what both WebRTC
outputs send through (WHEP sessions, :mod:`.webrtc`; WHIP publishing, :mod:`.publish.whip`)."""
from __future__ import annotations

import asyncio
import time
from collections import deque

from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError


class PacedTrack(MediaStreamTrack):
    """A track whose frames the playout loop puts in (at their playout point) and the sender takes out,
    each not before the perf_counter time it was put with (a 20 ms audio packet at its own media time).
    Before the sender first asks (not connected yet) frames are dropped; then at most ``most`` wait (the
    oldest is dropped: an encoder stalled that long).

    The two tracks are paced apart, each by its own frames' times on the one clock: a sound packet never
    waits for its picture's encoder. (Holding each one until the picture it plays with had been encoded
    put the picture's encode time into the sound's spacing, and headless Chromium buffered the sound
    twice as long for that jitter: docs/webrtc.md, One clock.)"""

    def __init__(self, kind: str, most: int) -> None:
        super().__init__()
        self.kind = kind
        self._most = most
        self._frames: deque = deque()
        self._ready = asyncio.Event()
        self._started = False
        self.first_pts: int | None = None  # of the first frame the sender took
        self.dropped = 0  # after the sender started

    def put(self, frame, at: float = 0.0) -> None:
        """Hand ``frame`` (an ``av`` frame; None: the end) to the sender, to leave at perf_counter ``at``
        (or now, if that has passed)."""
        if frame is not None and not self._started:
            return
        if len(self._frames) >= self._most:
            self._frames.popleft()
            self.dropped += 1
        self._frames.append((at, frame))
        self._ready.set()

    async def recv(self):
        self._started = True
        while not self._frames:
            if self.readyState != "live":
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        at, frame = self._frames.popleft()
        if frame is None:
            self.stop()
            raise MediaStreamError
        if (wait := at - time.perf_counter()) > 0:
            await asyncio.sleep(wait)
        if self.first_pts is None:
            self.first_pts = frame.pts
        return frame
