"""The sending side of a channel: a thread that encodes and muxes the units it is handed to one target,
through faults.

:meth:`Link.push` never blocks the channel's clock: a unit that finds the queue full (a slow link) or the
link down (waiting to reconnect) is dropped and counted. A fault (refused, reset, unreachable) drops the
connection; the next unit after the backoff (0.25 s, doubling to 8 s, reset by a unit sent) opens a new
one, which starts with a keyframe and goes on with the same timestamps (they come from the units). A file
target, or ``once``, makes the first fault final: :attr:`Link.error` says why and :meth:`close` raises it.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable

from .encode import AVUnit, EncodeSettings, MuxSink, SinkError
from .targets import PublishError, Target

log = logging.getLogger(__name__)

_STOP = object()
QUEUE_SECONDS = 4.0  # frames that may wait for the sender: a busy CPU's hiccups pass ...
QUEUE_BYTES = 256 << 20  # ... and their pictures stay within this memory


def queue_frames_for(fps: float, picture_bytes: int) -> int:
    """Units the send queue holds: ``QUEUE_SECONDS`` of frames, fewer when their pictures would pass
    ``QUEUE_BYTES``."""
    return max(1, min(round(QUEUE_SECONDS * fps), QUEUE_BYTES // max(1, picture_bytes)))


@dataclass(frozen=True)
class Backoff:
    """Seconds to wait before reconnect attempt n (1, 2, ...): first x 2^(n-1), at most ``most``."""

    first: float = 0.25
    most: float = 8.0

    def delay(self, attempt: int) -> float:
        return min(self.most, self.first * 2 ** (attempt - 1))


@dataclass
class LinkStats:
    """frames_pushed: units encoded and muxed; frames_dropped: units not sent (queue full, link down, the
    unit that met a fault); reconnects: connections re-established after a fault; faults: faults met;
    bytes_out: encoded bytes muxed; connected: a connection is up (or being opened); send_cpu_s: CPU
    seconds the sender thread spent encoding and muxing."""

    frames_pushed: int = 0
    frames_dropped: int = 0
    reconnects: int = 0
    faults: int = 0
    bytes_out: int = 0
    connected: bool = False
    send_cpu_s: float = 0.0


def open_sink(target: Target, settings: EncodeSettings):
    """One connection's sink: a :class:`~.whip.WhipSink` for WHIP, else a :class:`~.encode.MuxSink`."""
    if target.kind == "whip":
        from .whip import WhipSink

        return WhipSink(target, settings)
    return MuxSink(target, settings)


def describe(exc: BaseException) -> str:
    """A fault as a few words: "connection refused", "broken pipe", ..."""
    text = getattr(exc, "strerror", None) or str(exc) or exc.__class__.__name__
    return text[0].lower() + text[1:]


class Link:
    """See the module docstring. ``open_sink(target, settings)`` makes one connection's sink (default
    :func:`open_sink`); ``queue_frames``: units that may wait for a slow link or a busy encoder
    (default: ``QUEUE_SECONDS`` of frames, see :func:`queue_frames_for`)."""

    def __init__(self, name: str, target: Target, settings: EncodeSettings, *, once: bool = False,
                 backoff: Backoff = Backoff(), queue_frames: int | None = None,
                 open_sink: Callable[[Target, EncodeSettings], MuxSink] = open_sink,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name, self.target, self.settings = name, target, settings
        self.final = once or not target.reconnects
        self.backoff, self.open_sink, self.clock = backoff, open_sink, clock
        self.stats = LinkStats()
        self.error: str | None = None
        queue_frames = queue_frames or queue_frames_for(float(settings.fps), settings.width * settings.height * 3)
        self._queue: queue.Queue = queue.Queue(maxsize=queue_frames)
        self._sink: MuxSink | None = None
        self._retry_at = 0.0
        self._attempts = 0  # failed attempts since the last unit sent
        self._bytes_before = 0  # bytes of the connections before this one
        self._thread = threading.Thread(target=self._run, name=f"musetalk-publish-{name}", daemon=True)
        self._thread.start()

    def push(self, unit: AVUnit) -> bool:
        """Hand ``unit`` to the sender; False when it was dropped (link down, slow, or failed for good)."""
        if self.error is not None:
            self.stats.frames_dropped += 1
            return False
        try:
            self._queue.put_nowait(unit)
            return True
        except queue.Full:
            self.stats.frames_dropped += 1
            return False

    def close(self, timeout: float = 30.0) -> None:
        """Send what waits, finish the stream; raises :class:`PublishError` when the link failed for good."""
        self._queue.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("channel %s: the push to %s did not finish within %g s", self.name, self.target.url, timeout)
        if self.error is not None:
            raise PublishError(self.error)

    # -- sender thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        while (unit := self._queue.get()) is not _STOP:
            if self.error is None:
                self._send(unit)
            else:
                self.stats.frames_dropped += 1
        if self._sink is not None:
            try:
                self._sink.close()
            except SinkError as exc:
                self._fault(exc)
            self._sink = None

    def _send(self, unit: AVUnit) -> None:
        if self._sink is None and not self._connect():
            self.stats.frames_dropped += 1
            return
        started = time.thread_time()
        try:
            self._sink.write(unit)
        except SinkError as exc:
            self.stats.frames_dropped += 1
            self._fault(exc)
            return
        finally:
            self.stats.send_cpu_s += time.thread_time() - started
        self.stats.bytes_out = self._bytes_before + self._sink.bytes_out
        self.stats.frames_pushed += 1
        if self._attempts:
            self.stats.reconnects += 1
            log.warning("channel %s: reconnected to %s after %d attempts; resuming at frame %d with a keyframe",
                        self.name, self.target.url, self._attempts, unit.index)
            self._attempts = 0

    def _connect(self) -> bool:
        """Open a new sink unless the backoff says wait; False when no sink is up."""
        if self.clock() < self._retry_at:
            return False
        try:
            self._sink = self.open_sink(self.target, self.settings)
        except SinkError as exc:
            self._fault(exc)
            return False
        self._bytes_before = self.stats.bytes_out
        self.stats.connected = True
        return True

    def _fault(self, exc: BaseException) -> None:
        """Drop the connection; retry after the backoff, or (final) fail for good."""
        self.stats.faults += 1
        self.stats.connected = False
        if self._sink is not None:
            self._sink.abort()
            self._sink = None
        cause = describe(exc)
        if self.final:
            self.error = (f"cannot push to {self.target.url}: {cause}; check that the ingest server runs and the URL "
                          f"is right" if self.target.kind != "file" else
                          f"cannot write {self.target.url}: {cause}; check the free space and the folder")
            log.debug("channel %s: %s", self.name, self.error)  # close() raises it: its caller reports it
            return
        self._attempts += 1
        wait = self.backoff.delay(self._attempts)
        self._retry_at = self.clock() + wait
        log.warning("channel %s: push to %s failed (%s); reconnect attempt %d in %.2g s", self.name,
                    self.target.url, cause, self._attempts, wait)
