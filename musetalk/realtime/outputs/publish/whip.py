"""WHIP publishing (RFC 9725): the channel's frames sent over WebRTC with aiortc as the client.

A :class:`WhipSink` is one connection: it POSTs an SDP offer (``Content-Type: application/sdp``) to the
endpoint, takes the 201 answer (and its ``Location``, DELETEd at the end), and feeds the units' frames to
one video and one audio track on its own event loop thread. aiortc encodes them itself (VP8 or H.264 as
negotiated, Opus), paced by the channel: a slot's picture leaves when the channel writes it, each 20 ms
packet of its sound at its own media time after that (:class:`~..paced_track.PacedTrack`), so the
sender reports (RTCP) pair both with one clock and the sound arrives evenly spaced, not a slot's packets
in one burst (a receiver's jitter buffer would wait for that). Frames written before aiortc's senders
start (the connection is not up yet) are not sent. aiortc sets its own bit rates (moved by the receiver's
REMB): ``--video-kbps`` does not apply here. aiortc is imported only here, when a WHIP target is used.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from ...media import OPUS_FRAME, AudioChunks
from .encode import AVUnit, EncodeSettings
from .targets import Target

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 15.0
# pictures the video track may hold for aiortc's sender before the oldest goes (the sound: twice as many packets)
TRACK_FRAMES = 100


def _post_offer(url: str, sdp: str) -> tuple[str, str | None]:
    """POST the offer; (answer SDP, resource URL). Raises OSError (the link retries) on refusal."""
    request = urllib.request.Request(url, data=sdp.encode(), method="POST",
                                     headers={"Content-Type": "application/sdp"})
    try:
        with urllib.request.urlopen(request, timeout=CONNECT_TIMEOUT_S) as reply:
            if reply.status != 201:
                raise ConnectionRefusedError(f"WHIP endpoint answered {reply.status}, not 201 Created")
            location = reply.headers.get("Location")
            return reply.read().decode(), urllib.parse.urljoin(url, location) if location else None
    except urllib.error.HTTPError as exc:
        raise ConnectionRefusedError(f"WHIP endpoint answered {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        raise reason if isinstance(reason, OSError) else ConnectionRefusedError(str(reason)) from None


def _delete(url: str) -> None:
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="DELETE"), timeout=5).close()
    except (OSError, ValueError) as exc:
        log.debug("WHIP DELETE %s: %s", url, exc)


class WhipSink:
    """One WHIP session to ``target`` (see the module docstring); :meth:`write` raises
    ``ConnectionResetError`` once the peer connection failed or closed."""

    def __init__(self, target: Target, settings: EncodeSettings) -> None:
        self.target, self.settings = target, settings
        self.bytes_out = 0
        self._failed: str | None = None
        self._resource: str | None = None
        self._packets = AudioChunks(OPUS_FRAME)  # the 20 ms frames aiortc sends one RTP packet each
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="musetalk-whip", daemon=True)
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._connect(), self._loop).result(CONNECT_TIMEOUT_S * 2)
        except BaseException:
            self._stop_loop()
            raise

    async def _connect(self) -> None:
        from aiortc import RTCPeerConnection, RTCSessionDescription

        from ..paced_track import PacedTrack

        self._video, self._audio = PacedTrack("video", TRACK_FRAMES), PacedTrack("audio", 2 * TRACK_FRAMES)
        self._pc = pc = RTCPeerConnection()
        pc.addTrack(self._video)
        pc.addTrack(self._audio)

        @pc.on("connectionstatechange")
        def _state() -> None:
            if pc.connectionState in ("failed", "closed"):
                self._failed = f"WebRTC connection {pc.connectionState}"

        await pc.setLocalDescription(await pc.createOffer())
        answer, self._resource = await asyncio.to_thread(_post_offer, self.target.url, pc.localDescription.sdp)
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))

    def write(self, unit: AVUnit) -> None:
        if self._failed:
            raise ConnectionResetError(104, self._failed)
        frame = unit.video.reformat(width=self.settings.width, height=self.settings.height, format="yuv420p")
        frame.pts, frame.time_base = unit.video.pts, unit.video.time_base
        now = time.perf_counter()
        self._loop.call_soon_threadsafe(self._video.put, frame, now)
        slot_s = unit.video.pts * unit.video.time_base
        for sound in self._packets.cut(unit.audio):  # (a packet begun in the slot before leaves now)
            after_s = max(0.0, float(sound.pts * sound.time_base - slot_s))
            self._loop.call_soon_threadsafe(self._audio.put, sound, now + after_s)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._pc.close(), self._loop).result(10)
        if self._resource:
            _delete(self._resource)
        self._stop_loop()

    def abort(self) -> None:
        try:
            self.close()
        except (OSError, RuntimeError, TimeoutError) as exc:
            log.debug("closing a failed WHIP session: %s", exc)
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
