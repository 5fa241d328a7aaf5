"""WebRTC sessions on aiortc with WHEP signalling (RFC 9725), registered on the app by :func:`register`.

- ``POST /whep/{avatar}`` with ``Content-Type: application/sdp`` and the client's offer: ``201 Created``,
  the answer SDP as the body, ``Location: /whep/{avatar}/{id}``. Query as the WebSocket's (``lookahead``,
  ``bargein``; ``live`` is 1, the default: a WebRTC session plays on its clock from the start). Token and
  Origin are checked by :mod:`musetalk.realtime.web.access` (``Authorization: Bearer`` or ``token=``).
- ``DELETE /whep/{avatar}/{id}``: ends the session (200; 404 for an unknown one).
- ``GET /ice``: ``{"iceServers": [...]}``, the ICE servers the page should use (:mod:`.ice`).

The peer connection carries a video track (the session's frames at the avatar's fps: H.264 constrained
baseline, packetization-mode 1, preferred; VP8 accepted), an audio track (Opus 48 kHz: the speech, or
silence), the client's microphone when it sends one (decoded, resampled to 16 kHz, fed as its speech),
and a data channel ``control`` speaking the protocol of :mod:`.control` both ways (text JSON, binary PCM).

One clock: both tracks are fed by one playout loop (:func:`musetalk.realtime.media.paced_frames`): frame
i's picture leaves at its playout point (its due time plus the latency budget), and each 20 ms packet of
its slot's audio at its own media time plus the budget; aiortc's sender reports pair RTP timestamps with
those send times, so the receiver lip-syncs what left together. Video pts come from the frame index,
audio from the sample count.

Refusals answer ``{"type": "error", "message": "<one line>"}``: 400 (malformed offer, bad parameter, no
video receiver), 415 (not ``application/sdp``, or no video codec the server sends), 404 (unknown avatar or
session), 503 with ``Retry-After`` (server full). A data channel message the protocol refuses gets the
``error`` message on the channel, then the peer connection is closed. A connection that does not connect
within the timeout is closed and its session released.
"""
from __future__ import annotations

import asyncio
import json
import logging
import uuid

import numpy as np
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.codecs import h264, vpx
from aiortc.exceptions import OperationError
from aiortc.mediastreams import MediaStreamError
from aiortc.sdp import SessionDescription
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from ...errors import MuseTalkError
from ..engine.admission import ServerFull
from ..engine.engine import Engine
from ..engine.outbox import Event
from ..engine.session import Session, SessionError
from ..media import (OPUS_FRAME, VIDEO_TIME_BASE, AudioChunks, AudioOut, MediaFrame, frame_pts, paced_frames,
                     video_frame)
from .control import Control, ProtocolError, Voice, session_params
from .ice import WebRTCSettings
from .microphone import MicrophoneFeed
from .paced_track import PacedTrack
from .rest_stream import RestStreams

log = logging.getLogger(__name__)

SENT_VIDEO = ("H264", "VP8")  # in order of preference
CONSTRAINED_BASELINE = "42e01f"
OPUS_RATE = 48000
RETRY_AFTER_S = 10
VIDEO_QUEUE = 6  # pictures (240 ms at 25 fps) waiting for a stalled encoder before the oldest is dropped
AUDIO_QUEUE = 12  # 20 ms packets likewise
DEFAULT_PLAYOUT_BUDGET_S = 0.2  # the playout delay after a frame's due time when the engine has no budget


def register(app: FastAPI, store, engine: Engine, settings: WebRTCSettings, voice: Voice) -> None:
    """Serve ``store``'s avatars through ``engine`` over WebRTC (WHEP on ``/whep/{name}``, ``/ice``)."""
    _cap_video_bitrate(settings.video_kbps * 1000)
    peers: dict[str, Peer] = {}
    config = RTCConfiguration(iceServers=[RTCIceServer(list(s.urls), s.username, s.credential)
                                          for s in settings.ice_servers])
    budget = engine.latency_budget_s or DEFAULT_PLAYOUT_BUDGET_S
    rest_streams = RestStreams(settings.video_kbps)

    @app.get("/ice")
    async def ice() -> dict:
        return {"iceServers": [s.as_json() for s in settings.ice_servers]}

    @app.post("/whep/{name}")
    async def offer(name: str, request: Request) -> Response:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/sdp":
            return _error(415, f"a WHEP offer is Content-Type: application/sdp, got {kind or 'none'!r}")
        try:
            params = session_params(request.query_params)
            if request.query_params.get("live", "1") != "1":
                raise ProtocolError("WebRTC sessions are live: leave out live=0 (use the WebSocket for a plain one)")
            sdp = _check_offer((await request.body()).decode("utf-8", errors="replace"))
            avatar = await asyncio.to_thread(store.load, name)
        except _Unsendable as exc:
            return _error(415, str(exc))
        except ProtocolError as exc:
            return _error(400, str(exc))
        except MuseTalkError as exc:
            return _error(404, str(exc))
        try:
            session = engine.open(avatar, loop=asyncio.get_running_loop(), lookahead_s=params.lookahead_s,
                                  live=True, images=True)
        except ServerFull as exc:
            return _error(503, str(exc), {"Retry-After": str(RETRY_AFTER_S)})
        except MuseTalkError as exc:
            return _error(503, str(exc))
        peer = Peer(uuid.uuid4().hex, name, session, RTCPeerConnection(config), budget,
                    lambda p: peers.pop(p.id, None), rest_streams)
        peer.control = Control(session, params.bargein, voice, audio_messages=False, on_interrupt=peer.drop_speech_before)
        try:
            answer = await peer.answer(sdp)
        except _Unsendable as exc:
            await peer.close()
            return _error(415, str(exc))
        except Exception as exc:  # noqa: BLE001 - aiortc refuses an offer it cannot answer with ValueError & co.
            await peer.close()
            return _error(400, f"cannot answer the offer: {' '.join(str(exc).split())[:160]}")
        peers[peer.id] = peer
        peer.start(settings.connect_timeout_s)
        log.info("WebRTC session %s (engine session %d) on avatar %s", peer.id, session.id, name)
        return Response(answer, 201, {"Location": f"/whep/{name}/{peer.id}"}, media_type="application/sdp")

    @app.delete("/whep/{name}/{pid}")
    async def end(name: str, pid: str) -> Response:
        peer = peers.get(pid)
        if peer is None or peer.avatar != name:
            return _error(404, f"no WebRTC session {pid[:40]!r} on avatar {name[:40]!r}")
        await peer.close()
        return Response(status_code=200)

    async def close_all() -> None:
        for peer in list(peers.values()):
            await peer.close()

    app.router.on_shutdown.append(close_all)
    app.state.webrtc_peers = peers
    app.state.rest_streams = rest_streams


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    line = " ".join(message.split())
    log.info("WHEP refused (%d): %s", status, line)
    return JSONResponse({"type": "error", "message": line}, status, headers)


def _cap_video_bitrate(bps: int) -> None:
    """aiortc's H.264 and VP8 encoders start at ``bps`` and never exceed it (the receiver's estimate moves
    them below; their floors are lowered to ``bps`` when it is under them). Module constants: one value
    per process, as ``musetalk serve`` has."""
    for codec in (h264, vpx):
        codec.DEFAULT_BITRATE = codec.MAX_BITRATE = bps
        codec.MIN_BITRATE = min(codec.MIN_BITRATE, bps)


class _Unsendable(MuseTalkError):
    """The offer's video codecs include none the server sends."""


def _check_offer(text: str) -> str:
    """The offer's SDP when it asks for video the server can send; :class:`ProtocolError` (400) or
    :class:`_Unsendable` (415) naming what is wrong."""
    if not text.lstrip().startswith("v=0"):
        raise ProtocolError(f"malformed SDP offer: it must start with v=0, got {text[:30]!r}")
    try:
        description = SessionDescription.parse(text)
    except Exception as exc:  # noqa: BLE001 - the SDP parser raises whatever a malformed line makes it raise
        raise ProtocolError(f"malformed SDP offer: {' '.join(str(exc).split())[:120] or type(exc).__name__}") from None
    video = [m for m in description.media if m.kind == "video" and m.direction in ("recvonly", "sendrecv")]
    if not video:
        raise ProtocolError("the offer has no video receiver: add a recvonly video transceiver")
    offered = [c for c in video[0].rtp.codecs if c.mimeType.split("/")[-1].lower() not in ("rtx", "red", "ulpfec")]
    if not any(_sendable(c) for c in offered):
        names = ", ".join(dict.fromkeys(_codec_name(c) for c in offered)) or "none"
        raise _Unsendable(f"the offer's video codecs ({names}) include none the server sends: "
                          "H264 (packetization-mode=1) or VP8")
    return text


def _sendable(codec) -> bool:
    name = codec.mimeType.split("/")[-1].upper()
    return name == "VP8" or (name == "H264" and str(codec.parameters.get("packetization-mode", "0")) == "1")


def _codec_name(codec) -> str:
    name = codec.mimeType.split("/")[-1]
    mode = codec.parameters.get("packetization-mode")
    return f"{name} packetization-mode={mode}" if name.upper() == "H264" and mode is not None else name


def _video_preferences() -> list:
    """The server's video codecs in preference order: H.264 constrained baseline, H.264 baseline, VP8, RTX."""
    codecs = RTCRtpSender.getCapabilities("video").codecs

    def rank(c) -> int:
        name = c.mimeType.split("/")[-1].upper()
        if name == "H264":
            return 0 if str(c.parameters.get("profile-level-id", "")).lower() == CONSTRAINED_BASELINE else 1
        return {"VP8": 2, "RTX": 3}.get(name, 4)

    return sorted((c for c in codecs if rank(c) < 4), key=rank)


def _audio_preferences() -> list:
    return [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType.lower() == "audio/opus"]


def _request_keyframe(sender: RTCRtpSender) -> None:
    """The next picture ``sender`` encodes is a keyframe: what it does on a receiver's PLI. aiortc has no
    public call for it; this one (its PLI handler's, aiortc 1.x as pyproject.toml pins) is tested by the
    switch from the shared rest stream to speech in tests/realtime/test_webrtc.py."""
    sender._send_keyframe()


class Peer:
    """One WebRTC session: its engine ``session``, its ``control`` of it (set before :meth:`answer`), the
    peer connection ``pc`` and the tasks that feed the tracks, watch the connection and read the
    microphone. ``forget`` is called once it is closed."""

    def __init__(self, pid: str, avatar: str, session: Session, pc: RTCPeerConnection, budget_s: float,
                 forget, rest_streams: RestStreams) -> None:
        self.id = pid
        self.avatar = avatar
        self.session = session
        self.control: Control | None = None
        self.pc = pc
        self._stale_before = 0  # speech frames before this index were interrupted: played as rest
        self.budget_s = budget_s
        self.video = PacedTrack("video", VIDEO_QUEUE)
        self.audio = PacedTrack("audio", AUDIO_QUEUE)
        self.repeated = 0
        self.rest_streams = rest_streams
        self.shared_frames = 0  # rest frames sent from the avatar's shared rest stream
        self.switches: list[tuple[int, bool]] = []  # (frame index, joined): where the shared stream began, ended
        self._sharing = False  # the video track carries the shared rest stream now
        self._video_sender: RTCRtpSender | None = None
        self._codec: str | None = None
        self._forget = forget
        self._channel = None
        self._unsent: list[str] = []  # messages before the data channel opened
        self._connected = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._closing: asyncio.Task | None = None

    async def answer(self, offer_sdp: str) -> str:
        """Negotiate: our tracks on transceivers whose codec preferences put H.264 first, the client's
        offer, and the answer (ICE candidates gathered into it)."""
        pc = self.pc
        video = pc.addTransceiver(self.video, direction="sendonly")
        video.setCodecPreferences(_video_preferences())
        self._video_sender = video.sender
        audio = pc.addTransceiver(self.audio, direction="sendrecv")
        audio.setCodecPreferences(_audio_preferences())
        pc.on("datachannel", self._on_datachannel)
        pc.on("track", self._on_track)
        pc.on("connectionstatechange", self._on_connection_state)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
        except OperationError as exc:  # no codec in common
            raise _Unsendable(f"{exc}: the server sends H264 (packetization-mode=1) or VP8 video, Opus audio") from None
        await pc.setLocalDescription(await pc.createAnswer())
        self._codec = self.codec
        return pc.localDescription.sdp

    def start(self, connect_timeout_s: float) -> None:
        """Play the session out on the tracks; close it unless it connects within ``connect_timeout_s``."""
        self._tasks += [asyncio.create_task(self._play()), asyncio.create_task(self._watch(connect_timeout_s))]

    @property
    def codec(self) -> str | None:
        """The negotiated video codec's name (``H264``, ``VP8``): the first of the answer's video m-line."""
        if self.pc.localDescription is None:
            return None
        media = [m for m in SessionDescription.parse(self.pc.localDescription.sdp).media if m.kind == "video"]
        return media[0].rtp.codecs[0].mimeType.split("/")[-1] if media and media[0].rtp.codecs else None

    async def _play(self) -> None:
        """The playout loop: frame i's picture and its slot's audio to the senders at its playout point,
        events to the data channel; the session's end or failure closes the connection."""
        session = self.session
        clock = session.clock
        reason = None
        try:
            audio, packets = AudioOut(clock, OPUS_RATE), AudioChunks(OPUS_FRAME)
            async for item in paced_frames(session, self.budget_s):
                if isinstance(item, Event):
                    self.send(item.message())
                    continue
                self._play_frame(item, clock, audio, packets)
        except SessionError as exc:
            reason = str(exc)
        except Exception as exc:  # noqa: BLE001 - this session fails, loudly; the others go on
            log.exception("WebRTC session %s: the playout failed", self.id)
            reason = f"the playout failed: {exc}"
        if reason is not None:
            self.send({"type": "error", "message": " ".join(reason.split())})
        await self._flush_channel()
        self.close_soon()

    def _play_frame(self, frame: MediaFrame, clock, audio: AudioOut, packets: AudioChunks) -> None:
        image, sound = frame.image, frame.audio
        if frame.speech and frame.index < self._stale_before:  # interrupted after it left the session
            avatar = self.session.avatar
            image, sound = np.asarray(avatar.frames[avatar.source_index(frame.index)]), np.zeros_like(sound)
        elif frame.repeated and frame.speech:
            self.repeated += 1
            self.send({"type": "skip", "index": frame.index, "skipped": self.repeated})
        self._put_picture(frame, image, clock)
        for packet in packets.cut(audio.frame(sound)):  # each 20 ms packet leaves at its own media time, on the same clock
            self.audio.put(packet, at=clock.wall(float(packet.pts * packet.time_base)) + self.budget_s)

    @property
    def sharing(self) -> bool:
        """Whether the video track carries the avatar's shared rest stream now."""
        return self._sharing

    def _put_picture(self, frame: MediaFrame, image: np.ndarray, clock) -> None:
        """Frame ``frame``'s picture to the video track: from the avatar's shared rest stream while it is
        an unaltered rest frame (joining on a keyframe), else for the sender to encode (leaving the shared
        stream, that picture is a keyframe)."""
        stream = self.rest_streams.get(self.session.avatar, self._codec) if frame.rest else None
        if stream is not None and (self._sharing or stream.joinable(frame.index)):
            if not self._sharing:
                self._sharing = True
                self.switches.append((frame.index, True))
            self.shared_frames += 1
            self.video.put(stream.packet(frame.index, frame_pts(frame.index, clock), VIDEO_TIME_BASE))
            return
        if self._sharing:
            self._sharing = False
            self.switches.append((frame.index, False))
            _request_keyframe(self._video_sender)
        self.video.put(video_frame(image, frame.index, clock))

    def drop_speech_before(self, frame: int) -> None:
        """The session was interrupted: the speech frames before ``frame`` that still wait for their
        playout point play as rest (picture and silence), so speech stops now, not a budget later."""
        self._stale_before = max(self._stale_before, frame)

    async def _watch(self, timeout_s: float) -> None:
        try:
            await asyncio.wait_for(self._connected.wait(), timeout_s)
        except asyncio.TimeoutError:
            log.info("WebRTC session %s: not connected after %g s, released", self.id, timeout_s)
            self.close_soon()

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        log.debug("WebRTC session %s: %s", self.id, state)
        if state == "connected":
            self._connected.set()
        elif state in ("failed", "closed"):
            self.close_soon()

    # -- data channel --------------------------------------------------------------------------------
    def _on_datachannel(self, channel) -> None:
        if channel.label != "control":
            log.info("WebRTC session %s: data channel %r ignored (the protocol's is 'control')", self.id,
                     channel.label[:40])
            return
        self._channel = channel
        channel.on("message", self._on_message)
        if channel.readyState == "open":
            self._send_unsent()
        else:
            channel.on("open", self._send_unsent)

    def _send_unsent(self) -> None:
        for text in self._unsent:
            self._channel.send(text)
        self._unsent.clear()

    def send(self, message: dict) -> None:
        """A control message to the client (held until the data channel is open)."""
        text = json.dumps(message)
        if self._channel is not None and self._channel.readyState == "open":
            self._channel.send(text)
        elif len(self._unsent) < 100:
            self._unsent.append(text)

    def _on_message(self, message) -> None:
        try:
            if isinstance(message, str):
                self.control.receive_text(message)
            else:
                self.control.receive_bytes(bytes(message))
        except (ProtocolError, SessionError) as exc:
            self.refuse(str(exc))

    def refuse(self, reason: str) -> None:
        """Tell the client what it did wrong (``error`` on the channel), then close the connection."""
        line = " ".join(reason.split())
        log.info("WebRTC session %s refused: %s", self.id, line)
        self.send({"type": "error", "message": line})
        self.close_soon(flush=True)

    async def _flush_channel(self) -> None:
        """Wait (at most 2 s) until the data channel has handed its messages to the transport."""
        channel = self._channel
        if channel is None or channel.readyState != "open" or channel.bufferedAmount == 0:
            return
        drained = asyncio.Event()
        channel.bufferedAmountLowThreshold = 0
        channel.once("bufferedamountlow", drained.set)
        try:
            await asyncio.wait_for(drained.wait(), 2.0)
        except asyncio.TimeoutError:
            log.info("WebRTC session %s: the data channel did not drain before closing", self.id)

    # -- microphone ----------------------------------------------------------------------------------
    def _on_track(self, track) -> None:
        if track.kind == "audio":
            self._tasks.append(asyncio.create_task(self._listen(track)))

    async def _listen(self, track) -> None:
        """The client's microphone as the session's speech (:class:`~.microphone.MicrophoneFeed`)."""
        microphone = MicrophoneFeed(self.control)
        try:
            while True:
                microphone.feed(await track.recv())
        except MediaStreamError:
            return
        except (ProtocolError, SessionError) as exc:
            self.refuse(str(exc))
        finally:
            if microphone.dropped:
                log.info("WebRTC session %s: %d microphone frames after an end dropped", self.id, microphone.dropped)

    # -- the end -------------------------------------------------------------------------------------
    def close_soon(self, flush: bool = False) -> asyncio.Task:
        """Close in the background (from callbacks and the tasks themselves); the closing task."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close(flush))
        return self._closing

    async def close(self) -> None:
        """End the session, free its capacity, close the connection (idempotent)."""
        await asyncio.shield(self.close_soon())

    async def _close(self, flush: bool) -> None:
        if flush:
            await self._flush_channel()
        self._forget(self)
        self.control.stop_saying()
        self.session.close()
        for task in self._tasks:
            task.cancel()
        self.video.put(None)
        self.audio.put(None)
        await self.pc.close()
        log.info("WebRTC session %s closed", self.id)
