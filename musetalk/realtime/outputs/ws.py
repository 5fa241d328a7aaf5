"""The WebSocket transport of ``/ws/{avatar}`` (registered on the app by :func:`register`): the control
protocol of :mod:`.control` (query parameters, client messages, events) framed as WebSocket messages.

Query: the session parameters of :mod:`.control`, and ``frame_header=1``: each JPEG message starts with the
frame header below.

Client -> server: binary messages are PCM chunks, text messages the JSON control messages.

Server -> client: one binary JPEG per frame in index order; ``{"type": "skip", "index": i, "skipped":
total}`` in place of a frame that missed its deadline; the speech of a ``say`` as ``audio`` messages
(:mod:`.control`). Without live=1 then ``{"type": "done", "frames": N, "skipped": K}`` and a normal
close; live sessions stream from the start (the avatar at rest between utterances), with ``{"type":
"state", "state": "rest"|"speaking"}`` on every change and ``{"type": "utterance_done", "frames": N}``
after each utterance, until ``close``.

Audio is accepted only so far ahead of the session's clock (``--max-audio-ahead-s``, default 30 s): send
it in real time; a chunk beyond is refused (1008); a ``say`` is fed as its clock plays it.

Every refusal is ``{"type": "error", "message": "<one line>"}`` then a close with the same reason and
code 1013 (server full), 1008 (protocol misuse, unknown avatar, bad parameter, text too long) or 1011
(the engine or the speech synthesis failed this session).

Frame header (``frame_header=1``): 16 bytes before the JPEG, little-endian: the magic ``b"MTF1"`` (its last
byte the header's version), u32 frame index, f64 media time in seconds (frame i's time on the session's
media clock, ``i / fps`` from frame 0, the clock the ``audio`` messages' frames are on), then the JPEG
bytes (:func:`frame_header`, :func:`parse_frame`). A client reads a frame's index and time from the message
itself instead of counting messages. It is opt-in so that clients written before it (which hand every
binary message to a JPEG decoder) keep working unchanged; a later layout gets a new magic.
"""
from __future__ import annotations

import asyncio
import json
import logging
import struct

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

from ...errors import MuseTalkError
from ..engine.admission import ServerFull
from ..engine.engine import Engine
from ..engine.outbox import Event, Frame, Skip
from ..engine.session import Session, SessionError
from .control import Control, ProtocolError, Voice, _flag, session_params

log = logging.getLogger(__name__)

POLICY_VIOLATION = 1008
INTERNAL_ERROR = 1011
TRY_AGAIN_LATER = 1013
_REASON_BYTES = 123  # the WebSocket limit of a close reason
FRAME_MAGIC = b"MTF1"
_HEADER = struct.Struct("<4sId")


def register(app: FastAPI, store, engine: Engine, voice: Voice) -> None:
    """Serve ``store``'s avatars through ``engine`` on ``/ws/{name}``; ``say`` messages are spoken by ``voice``."""

    @app.websocket("/ws/{name}")
    async def stream(ws: WebSocket, name: str) -> None:
        await ws.accept()
        try:
            params = session_params(ws.query_params)
            header = _flag(ws.query_params, "frame_header")
            avatar = await asyncio.to_thread(store.load, name)
            session = engine.open(avatar, loop=asyncio.get_running_loop(), lookahead_s=params.lookahead_s,
                                  live=params.live)
        except ServerFull as exc:
            await refuse(ws, str(exc), TRY_AGAIN_LATER)
            return
        except MuseTalkError as exc:
            await refuse(ws, str(exc), POLICY_VIOLATION)
            return
        try:
            await _serve_session(ws, Control(session, params.bargein, voice), header)
        finally:
            session.close()


async def _serve_session(ws: WebSocket, conn: Control, header: bool) -> None:
    """Run the receiver and the sender until the last frame went out, the client left, or it erred;
    ``header``: each JPEG goes with its frame header."""
    session = conn.session
    receiver = asyncio.create_task(_receive(ws, conn))
    sender = asyncio.create_task(_send_frames(ws, session, header))
    refusal: tuple[str, int] | None = None
    try:
        done, _ = await asyncio.wait({receiver, sender}, return_when=asyncio.FIRST_COMPLETED)
        if sender in done:
            sender.result()
        else:
            receiver.result()  # the receiver only ends by raising: the client left or broke the protocol
    except ProtocolError as exc:
        refusal = str(exc), POLICY_VIOLATION
    except SessionError as exc:
        refusal = str(exc), INTERNAL_ERROR
    except (WebSocketDisconnect, RuntimeError) as exc:
        log.info("session %d: client gone (%s)", session.id, exc.__class__.__name__)
        return
    finally:
        receiver.cancel()
        sender.cancel()
        conn.stop_saying()
    if refusal is None:
        try:
            await ws.close()
        except (WebSocketDisconnect, RuntimeError):
            log.info("session %d: client gone before the close", session.id)
    else:
        await refuse(ws, *refusal)  # after the sender stopped: nothing follows the error but the close


async def _receive(ws: WebSocket, conn: Control) -> None:
    """Apply the client's messages; ends only by raising (the client left or broke the protocol)."""
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        if message.get("bytes") is not None:
            conn.receive_bytes(message["bytes"])
        elif message.get("text") is not None:
            conn.receive_text(message["text"])


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
