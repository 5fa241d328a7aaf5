"""What a session sends its client, in order: frames, skips and control events, through a bounded outbox.

A frame of a client that does not read fast enough is turned into a :class:`Skip` once ``max_frames``
frames wait (memory stays bounded, indices stay exact); a client that reads nothing at all while
``max_items`` messages pile up is failed by its session.
"""
from __future__ import annotations

import asyncio
import threading
from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass
class Frame:
    """One output frame. ``jpeg``: its JPEG bytes (None when the engine does not encode); ``image``: uint8
    (H, W, 3) RGB, kept only when the engine does not encode; ``ready_at``: ``time.perf_counter()`` when the
    audio its prompt needs (look-ahead included) had arrived; ``due_at``: its time on the session's media
    clock (never before ``ready_at``); ``done_at``: when it was composited; ``speech``: generated from speech
(False: the avatar at rest)."""

    index: int
    jpeg: bytes | None
    image: np.ndarray | None
    ready_at: float
    due_at: float
    done_at: float
    speech: bool = False

    @property
    def latency(self) -> float:
        """Seconds from its due time to composited (audio arriving ahead of the clock does not count)."""
        return self.done_at - self.due_at


@dataclass(frozen=True)
class Skip:
    """Frame ``index`` was skipped (late, or its client too slow); ``skipped``: the session's total so far;
    ``speech``: an utterance covered it."""

    index: int
    skipped: int
    speech: bool = False

    def message(self) -> dict:
        return {"type": "skip", "index": self.index, "skipped": self.skipped}


@dataclass(frozen=True)
class Event:
    """A control message for the client, in order with the frames (``state``, ``utterance_done``, ``audio``)."""

    payload: dict

    def message(self) -> dict:
        return self.payload


class End:
    """The last item of a session's outbox."""


END = End()


class OutboxFull(Exception):
    """The client has not read ``max_items`` messages: it is gone or stuck."""


class Outbox:
    """A bounded FIFO filled from any thread, read by one thread (:meth:`get`) or one asyncio task on ``loop``
    (:meth:`get_async`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None, max_frames: int, max_items: int) -> None:
        self.loop = loop
        self.max_frames = max_frames
        self.max_items = max_items
        self._items: deque = deque()
        self._frames = 0
        self._cond = threading.Condition()
        self._ready = asyncio.Event() if loop is not None else None

    def has_room_for_frame(self) -> bool:
        with self._cond:
            return self._frames < self.max_frames

    @property
    def depth(self) -> int:
        """Messages waiting."""
        with self._cond:
            return len(self._items)

    def put(self, item) -> None:
        """Append ``item`` (a Frame, Skip, Event, END or an Exception); raises :class:`OutboxFull`."""
        with self._cond:
            if len(self._items) >= self.max_items and item is not END and not isinstance(item, Exception):
                raise OutboxFull(f"the client has not read its last {self.max_items} messages")
            self._items.append(item)
            self._frames += isinstance(item, Frame)
            self._cond.notify()
        if self._ready is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._ready.set)

    def clear(self) -> None:
        """Drop everything waiting (the session is closed)."""
        with self._cond:
            self._items.clear()
            self._frames = 0

    def get(self, timeout: float | None = None):
        """The next item (blocking); raises ``TimeoutError`` after ``timeout`` seconds."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._items, timeout):
                raise TimeoutError(f"no frame within {timeout} s")
            return self._pop()

    async def get_async(self):
        """The next item (on ``loop``)."""
        while True:
            self._ready.clear()
            with self._cond:
                if self._items:
                    return self._pop()
            await self._ready.wait()

    def _pop(self):
        item = self._items.popleft()
        self._frames -= isinstance(item, Frame)
        return item
