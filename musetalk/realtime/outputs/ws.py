"""The WebSocket protocol of ``/ws/{avatar}`` (registered on the app by :func:`register`).

Query: ``lookahead=<seconds>`` (this session's audio look-ahead), ``live=1`` (a live session),
``bargein=1`` (live: a new utterance while one plays interrupts it), ``frame_header=1`` (each JPEG message
starts with the frame header below).

Client -> server: binary PCM s16le 16 kHz mono chunks of any size, then text ``{"type": "end"}``; or
``{"type": "say", "text": "..."}`` (an utterance synthesised sentence by sentence that ends by itself);
live sessions also ``{"type": "interrupt"}`` and ``{"type": "close"}``.

Server -> client: one binary JPEG per frame in index order; ``{"type": "skip", "index": i, "skipped":
total}`` in place of a frame that missed its deadline; the speech of a ``say`` as ``{"type": "audio",
"frame": i, "time": t, "sample_rate": 16000, "pcm16": "<base64 s16le>"}`` to play from media time t (seconds
on the session's media clock; frame i is the frame playing then). Without
live=1 then ``{"type": "done", "frames": N, "skipped": K}`` and a normal close; live sessions stream from
the start (the avatar at rest between utterances), with ``{"type": "state", "state": "rest"|"speaking"}``
on every change and ``{"type": "utterance_done", "frames": N}`` after each utterance, until ``close``.

Every refusal is ``{"type": "error", "message": "<one line>"}`` then a close with the same reason and
code 1013 (server full), 1008 (protocol misuse, unknown avatar, bad parameter, text too long) or 1011
(the engine or the speech synthesis failed this session).

Frame header (``frame_header=1``): 16 bytes before the JPEG, little-endian: the magic ``b"MTF1"`` (its last
byte the header's version), u32 frame index, f64 media time in seconds (frame i's time on the session's
media clock, ``i / fps`` from frame 0; audio sample n of an utterance plays at its start time plus n /
16000), then the JPEG bytes (:func:`frame_header`, :func:`parse_frame`). A client reads a frame's index and
time from the message itself instead of counting messages. It is opt-in so that clients written before it
(which hand every binary message to a JPEG decoder) keep working unchanged; a later layout gets a new magic.
"""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import struct

import numpy as np
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

from ...audio.load import SAMPLE_RATE
from ...errors import MuseTalkError
from ..engine.admission import ServerFull
from ..engine.engine import Engine
from ..engine.outbox import Event, Frame, Skip
from ..engine.session import Session, SessionError

log = logging.getLogger(__name__)

POLICY_VIOLATION = 1008
INTERNAL_ERROR = 1011
TRY_AGAIN_LATER = 1013
MAX_LOOKAHEAD_S = 2.0
FRAME_MAGIC = b"MTF1"
_HEADER = struct.Struct("<4sId")
_REASON_BYTES = 123  # the WebSocket limit of a close reason


class ProtocolError(MuseTalkError):
    """A WebSocket client sent something the protocol does not allow."""


class Voice:
    """The speech synthesizer of ``say`` messages (a :class:`musetalk.speech.Synthesizer`), made on first use."""

    def __init__(self, synthesizer=None) -> None:
        self._synth = synthesizer
        self._lock = asyncio.Lock()

    async def get(self):
        async with self._lock:
            if self._synth is None:
                from ...speech import Synthesizer

                self._synth = await asyncio.to_thread(Synthesizer)
            return self._synth


def register(app: FastAPI, store, engine: Engine, synthesizer=None) -> None:
    """Serve ``store``'s avatars through ``engine`` on ``/ws/{name}``; ``say`` messages are spoken by
    ``synthesizer`` (default: a :class:`musetalk.speech.Synthesizer` with the bundled voice, made on first use)."""
    voice = Voice(synthesizer)

    @app.websocket("/ws/{name}")
    async def stream(ws: WebSocket, name: str) -> None:
        await ws.accept()
        try:
            lookahead = _lookahead(ws.query_params.get("lookahead"))
            live, bargein, header = _flag(ws, "live"), _flag(ws, "bargein"), _flag(ws, "frame_header")
            avatar = await asyncio.to_thread(store.load, name)
            session = engine.open(avatar, loop=asyncio.get_running_loop(), lookahead_s=lookahead, live=live)
        except ServerFull as exc:
            await refuse(ws, str(exc), TRY_AGAIN_LATER)
            return
        except MuseTalkError as exc:
            await refuse(ws, str(exc), POLICY_VIOLATION)
            return
        try:
            await _serve_session(ws, _Connection(session, bargein, voice), header)
        finally:
            session.close()


def _flag(ws: WebSocket, name: str) -> bool:
    """A 0/1 query parameter."""
    value = ws.query_params.get(name, "0")
    if value not in ("0", "1"):
        raise ProtocolError(f"{name} must be 0 or 1, got {value!r}")
    return value == "1"


def _lookahead(text: str | None) -> float | None:
    """The ``lookahead`` query parameter in seconds (None: the server's default)."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value <= MAX_LOOKAHEAD_S:
        raise ProtocolError(f"lookahead must be seconds in [0, {MAX_LOOKAHEAD_S:g}], got {text!r}")
    return value


class _Connection:
    """One WebSocket's session and what its receiver tracks: barge-in, the odd byte of the last chunk, the
    ``say`` being spoken."""

    def __init__(self, session: Session, bargein: bool, voice: Voice) -> None:
        self.session = session
        self.bargein = bargein
        self.voice = voice
        self.carry = b""
        self.saying: asyncio.Task | None = None

    @property
    def busy_saying(self) -> bool:
        return self.saying is not None and not self.saying.done()

    def receive(self, message: dict) -> None:
        """Apply one client message (binary PCM or a text control message)."""
        try:
            if message.get("bytes") is not None:
                self.audio(message["bytes"])
            elif message.get("text") is not None:
                self.control(parse_message(message["text"]), message["text"])
        except SessionError as exc:
            if self.session.active:  # the client misused the session (a failed one is reported by the sender)
                raise ProtocolError(str(exc)) from None
            raise

    def audio(self, chunk: bytes) -> None:
        """PCM: continues the current utterance or (live) starts the next one, interrupting the one still
        playing when the client asked for barge-in."""
        session = self.session
        if not session.live and session.frame_total is not None:
            raise ProtocolError("audio received after {\"type\": \"end\"}")
        if self.busy_saying:
            raise ProtocolError("audio received while a say message is spoken: wait for it, or interrupt it")
        data = self.carry + chunk
        self.carry = data[len(data) // 2 * 2 :]
        if len(data) < 2:
            return
        if self.bargein and session.speaking and not session.utterance_open:
            session.interrupt()
        session.feed_pcm16(data[: len(data) // 2 * 2])

    def control(self, msg: dict, text: str) -> None:
        """``end`` (after whole samples) and ``say``; live sessions also ``interrupt`` and ``close``."""
        kind, session = msg["type"], self.session
        if kind == "end":
            if self.carry:
                raise ProtocolError("the PCM ended inside a sample: s16le audio needs an even number of bytes")
            if self.busy_saying:
                raise ProtocolError("a say message ends by itself: send no end for it")
            session.end()
        elif kind == "say":
            self.say(msg.get("text"))
        elif kind == "interrupt" and session.live:
            if self.busy_saying:
                self.saying.cancel()
            session.interrupt()
        elif kind == "close" and session.live:
            session.finish()
        else:
            allowed = "end, say, interrupt, close" if session.live else "end, say"
            raise ProtocolError(f"unknown message {text[:60]!r}: the text messages here are {allowed}")

    def say(self, text) -> None:
        """Start speaking ``text`` as one utterance (synthesised sentence by sentence)."""
        from ...speech import check_text

        if not isinstance(text, str):
            raise ProtocolError('a say message needs "text": a string')
        try:
            text = check_text(text)
        except MuseTalkError as exc:
            raise ProtocolError(str(exc)) from None
        session = self.session
        if self.busy_saying or session.utterance_open:
            raise ProtocolError("say while an utterance is open: end it (or interrupt it) first")
        if not session.live and session.frame_total is not None:
            raise ProtocolError("say received after the end of the session's audio")
        if self.bargein and session.speaking:
            session.interrupt()
        self.saying = asyncio.create_task(_speak(session, text, self.voice))


async def _speak(session: Session, text: str, voice: Voice) -> None:
    """Feed the speech of ``text`` sentence by sentence, with an ``audio`` message for the client to play
    each at its frame's time; then end the utterance. A synthesis fault fails the session."""
    try:
        synth = await voice.get()
        sentences = synth.sentences(text)
        start, fed = None, 0  # the utterance's first frame, samples fed so far
        while (samples := await asyncio.to_thread(next, sentences, None)) is not None:
            frame = session.feed(samples)
            start = frame if start is None else start
            pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
            when = start / session.avatar.fps + fed / SAMPLE_RATE
            session.notify({"type": "audio", "frame": frame, "time": when, "sample_rate": SAMPLE_RATE,
                            "pcm16": base64.b64encode(pcm).decode()})
            fed += len(samples)
        session.end()
    except SessionError:
        if session.active:
            raise
    except Exception as exc:  # noqa: BLE001 - reported to the client as this session's failure
        log.exception("speech synthesis failed")
        session.fail(f"speech synthesis failed: {exc}")


async def _serve_session(ws: WebSocket, conn: _Connection, header: bool) -> None:
    """Run the receiver and the sender until the last frame went out, the client left, or it erred;
    ``header``: each JPEG goes with its frame header."""
    session = conn.session
    receiver = asyncio.create_task(_receive(ws, conn))
    sender = asyncio.create_task(_send_frames(ws, session, header))
    try:
        done, _ = await asyncio.wait({receiver, sender}, return_when=asyncio.FIRST_COMPLETED)
        if sender in done:
            sender.result()
            await ws.close()
        else:
            receiver.result()  # the receiver only ends by raising: the client left or broke the protocol
    except ProtocolError as exc:
        await refuse(ws, str(exc), POLICY_VIOLATION)
    except SessionError as exc:
        await refuse(ws, str(exc), INTERNAL_ERROR)
    except (WebSocketDisconnect, RuntimeError) as exc:
        log.info("session %d: client gone (%s)", session.id, exc.__class__.__name__)
    finally:
        for task in (receiver, sender, conn.saying):
            if task is not None:
                task.cancel()


async def _receive(ws: WebSocket, conn: _Connection) -> None:
    """Apply the client's messages; ends only by raising (the client left or broke the protocol)."""
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        conn.receive(message)


def parse_message(text: str) -> dict:
    """A text message as a JSON object with a ``type``; :class:`ProtocolError` otherwise."""
    try:
        msg = json.loads(text)
    except ValueError:
        raise ProtocolError(f"text messages must be JSON, got {text[:40]!r}") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise ProtocolError(f"unknown message {text[:60]!r}: send PCM as binary and {{\"type\": \"end\"}} last")
    return msg


async def _send_frames(ws: WebSocket, session: Session, header: bool) -> None:
    """Frames as binary JPEG messages (``header``: each after its frame header), skips and events as text,
    in index order; then (not live) ``done``."""
    fps = session.avatar.fps
    while (item := await session.next_item()) is not None:
        await send_item(ws, item, fps if header else None)
    if not session.live:
        await ws.send_text(json.dumps({"type": "done", "frames": session.sent + session.skipped,
                                       "skipped": session.skipped}))


async def send_item(ws: WebSocket, item: Frame | Skip | Event, header_fps: float | None = None) -> None:
    """One outbox item: a frame as its JPEG (after its frame header at ``header_fps`` frames a second, when
    given), anything else as a JSON text message."""
    if isinstance(item, Frame):
        prefix = b"" if header_fps is None else frame_header(item.index, item.index / header_fps)
        await ws.send_bytes(prefix + item.jpeg)
    else:
        await ws.send_text(json.dumps(item.message()))


def frame_header(index: int, media_s: float) -> bytes:
    """The 16-byte frame header of frame ``index`` at ``media_s`` seconds of media time (module docstring)."""
    return _HEADER.pack(FRAME_MAGIC, index, media_s)


def parse_frame(data: bytes) -> tuple[int, float, bytes]:
    """(index, media seconds, JPEG bytes) of a binary frame message sent with ``frame_header=1``."""
    if len(data) < _HEADER.size or data[:4] != FRAME_MAGIC:
        raise ValueError(f"not a frame message: it starts {data[:4]!r}, not the header magic {FRAME_MAGIC!r}")
    _, index, media_s = _HEADER.unpack_from(data)
    return index, media_s, data[_HEADER.size :]


async def refuse(ws: WebSocket, message: str, code: int) -> None:
    """Tell the client what went wrong, then close with ``code`` and the same reason (if it is still there)."""
    line = " ".join(message.split())
    try:
        await ws.send_text(json.dumps({"type": "error", "message": line}))
        await ws.close(code=code, reason=line.encode()[:_REASON_BYTES].decode(errors="ignore"))
    except (WebSocketDisconnect, RuntimeError):
        log.debug("client gone before the error %r", line)
