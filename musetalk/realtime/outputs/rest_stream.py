"""An avatar's rest loop encoded once and shared by every WebRTC viewer at rest.

At rest a session shows the avatar's source frames unaltered: output frame i is source frame
``order[i % len(order)]`` for every session of that avatar. So the loop is encoded once per avatar,
codec and bit rate (:class:`RestStreams`, in a background thread on first demand) as a cycle of
``cycle`` pictures (a whole number of loops, :func:`cycle_length`) with a keyframe every
``KEY_INTERVAL`` positions, and a viewer at rest sends the packet of its frame's position, stamped with
its own frame's time, instead of encoding the picture itself: one encoder for all idle viewers.

A viewer joins the shared stream on a keyframe position and leaves it for its own encoder (which then
starts with a keyframe) on the first frame that is not an unaltered rest frame. H.264 packets are Annex
B with the parameter sets before each keyframe, as aiortc's own encoder sends them (constrained
baseline, level 3.1); VP8 packets are frames as libvpx makes them.
"""
from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

log = logging.getLogger(__name__)

KEY_INTERVAL = 50  # positions between keyframes (2 s at 25 fps): a viewer at rest joins the shared stream
# within this, and a lost packet heals by then; longer halves a still picture's bit rate again
MAX_CYCLE = 1500  # pictures: a longer rest loop is not shared (each viewer encodes its own)
KEPT = 8  # encodings kept (least recently used dropped)
ENCODERS = {"H264": "libx264", "VP8": "libvpx"}
NICE = 10  # the encoding thread's niceness: it yields the CPU to live sessions


def cycle_length(loop: int) -> int:
    """Pictures in the shared cycle of a rest loop of ``loop`` frames: whole loops; whole key intervals too
    when the loop is shorter than one (a photo's loop of 2 gives KEY_INTERVAL: no keyframes side by side)."""
    return math.lcm(loop, KEY_INTERVAL) if loop < KEY_INTERVAL else loop


@dataclass(frozen=True)
class RestStream:
    """``packets[p]``: the encoded picture of cycle position p (bytes; a keyframe where p % KEY_INTERVAL
    is 0); ``seconds``: CPU seconds the encoding took."""

    codec: str
    packets: tuple[bytes, ...]
    seconds: float

    @property
    def cycle(self) -> int:
        return len(self.packets)

    def joinable(self, index: int) -> bool:
        """Whether output frame ``index`` is a keyframe of the cycle (a viewer may start there)."""
        return index % self.cycle % KEY_INTERVAL == 0

    def packet(self, index: int, pts: int, time_base: Fraction) -> av.Packet:
        """The picture of output frame ``index`` as an ``av.Packet`` with the viewer's ``pts``."""
        packet = av.Packet(self.packets[index % self.cycle])
        packet.pts, packet.time_base = pts, time_base
        return packet


def encode_rest_loop(avatar, codec: str, kbps: int) -> RestStream:
    """Encode ``avatar``'s rest loop (see the module docstring) with ``codec`` ("H264" or "VP8") at
    ``kbps``; raises ValueError when the encoder does not give one packet per picture."""
    started = time.thread_time()
    height, width = avatar.frames.shape[1:3]
    encoder = av.CodecContext.create(ENCODERS[codec], "w")
    encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
    encoder.bit_rate = kbps * 1000
    encoder.framerate = Fraction(avatar.fps).limit_denominator(1001)
    encoder.time_base = 1 / encoder.framerate
    if codec == "H264":
        encoder.profile = "Baseline"
        encoder.options = {"level": "31", "tune": "zerolatency", "forced-idr": "1",
                           "x264-params": f"keyint={KEY_INTERVAL}:min-keyint={KEY_INTERVAL}:scenecut=0"}
    else:
        encoder.options = {"deadline": "realtime", "cpu-used": "4", "lag-in-frames": "0", "auto-alt-ref": "0",
                           "kf-max-dist": str(KEY_INTERVAL)}
    packets = []
    for position in range(cycle_length(len(avatar.order))):
        picture = np.asarray(avatar.frames[avatar.source_index(position)])
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(picture), format="rgb24").reformat(format="yuv420p")
        frame.pts = position
        key = position % KEY_INTERVAL == 0
        frame.pict_type = av.video.frame.PictureType.I if key else av.video.frame.PictureType.NONE
        out = encoder.encode(frame)
        if len(out) != 1 or out[0].is_keyframe != key:
            raise ValueError(f"{ENCODERS[codec]} gave {len(out)} packets for rest picture {position} "
                             f"(keyframe expected: {key})")
        packets.append(bytes(out[0]))
    return RestStream(codec, tuple(packets), time.thread_time() - started)


def _lower_this_threads_priority() -> None:
    """Nice the calling thread (Linux schedules threads one by one); elsewhere it runs as it is."""
    if hasattr(os, "setpriority") and sys.platform.startswith("linux"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
        except OSError as exc:  # a container that forbids it: the encoding runs at normal priority
            log.debug("the rest encoding keeps its priority: %s", exc)


class RestStreams:
    """The shared rest encodings of one server at ``kbps``: :meth:`get` answers at once, with the encoding
    once it is made (in a background thread, the first time it is asked for)."""

    def __init__(self, kbps: int) -> None:
        self.kbps = kbps
        self._ready: OrderedDict[tuple, RestStream | None] = OrderedDict()  # None: cannot be shared
        self._pending: set[tuple] = set()
        self._lock = threading.Lock()
        self.encodings = 0  # encodings made (one per avatar, codec)

    def get(self, avatar, codec: str) -> RestStream | None:
        """``avatar``'s shared rest stream in ``codec``, or None (not made yet, or not shareable)."""
        if codec not in ENCODERS:
            return None
        key = (avatar.name, avatar.meta.get("fingerprint"), codec)
        with self._lock:
            if key in self._ready:
                self._ready.move_to_end(key)
                return self._ready[key]
            if key not in self._pending:
                self._pending.add(key)
                threading.Thread(target=self._encode, args=(key, avatar, codec), daemon=True,
                                 name=f"musetalk-rest-{avatar.name}").start()
        return None

    def _encode(self, key: tuple, avatar, codec: str) -> None:
        _lower_this_threads_priority()  # live sessions' compositing and encoding go first
        stream = None
        loop = len(avatar.order)
        height, width = avatar.frames.shape[1:3]
        if cycle_length(loop) > MAX_CYCLE or width % 2 or height % 2:
            log.info("avatar %s: rest loop of %d frames (%dx%d) not shared: each viewer encodes its own",
                     avatar.name, loop, width, height)
        else:
            try:
                stream = encode_rest_loop(avatar, codec, self.kbps)
                log.info("avatar %s: rest loop encoded once for idle viewers (%s, %d pictures, %.1f CPU s)",
                         avatar.name, codec, stream.cycle, stream.seconds)
            except (ValueError, av.FFmpegError) as exc:
                log.warning("avatar %s: the shared rest stream failed (%s): each viewer encodes its own",
                            avatar.name, exc)
        with self._lock:
            self._pending.discard(key)
            self._ready[key] = stream
            self.encodings += stream is not None
            while len(self._ready) > KEPT:
                self._ready.popitem(last=False)
