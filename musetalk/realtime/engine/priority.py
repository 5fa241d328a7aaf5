"""Live sessions first: background work on the engine's device (an avatar preparation) yields to them.

The engine marks its :class:`BackgroundLane` busy while it has frames to compute or any session speaks
(a speaking session has frames due every 1/fps), and free while every session is at rest (rest frames
cost no model call) or none is open. Background work calls :meth:`BackgroundLane.wait_turn` before each
small step (one frame, one model call over a batch of faces, one mask): a live session then waits for
at most the one step already running when it starts to speak.
"""
from __future__ import annotations

import threading
import time


class BackgroundLane:
    """The turn of background work: :meth:`wait_turn` returns at once while the engine is free, and
    otherwise when it becomes free (or is closed). ``waited_s``: total seconds background work waited."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._busy = False
        self._closed = False
        self.waited_s = 0.0

    @property
    def busy(self) -> bool:
        return self._busy

    def set_busy(self, busy: bool) -> None:
        """The engine: whether live sessions have frames due now."""
        with self._cond:
            if busy != self._busy:
                self._busy = busy
                self._cond.notify_all()

    def close(self) -> None:
        """The engine is shut down: background work never waits again."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def wait_turn(self) -> None:
        """Block while the engine is busy (background work calls this before each step)."""
        with self._cond:
            if not self._busy or self._closed:
                return
            start = time.perf_counter()
            self._cond.wait_for(lambda: not self._busy or self._closed)
            self.waited_s += time.perf_counter() - start
