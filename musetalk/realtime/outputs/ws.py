"""The WebSocket transport of ``/ws/{avatar}`` (registered on the app by :func:`register`): the control
protocol of :mod:`.control` (query parameters, client messages, events) framed as WebSocket messages.

Client -> server: binary messages are PCM chunks, text messages the JSON control messages.

Server -> client: one binary JPEG per frame in index order; ``{"type": "skip", "index": i, "skipped":
total}`` in place of a frame that missed its deadline; the speech of a ``say`` as ``audio`` messages
(:mod:`.control`). Without live=1 then ``{"type": "done", "frames": N, "skipped": K}`` and a normal
close; live sessions stream from the start (the avatar at rest between utterances), with ``{"type":
"state", "state": "rest"|"speaking"}`` on every change and ``{"type": "utterance_done", "frames": N}``
after each utterance, until ``close``.

Every refusal is ``{"type": "error", "message": "<one line>"}`` then a close with the same reason and
code 1013 (server full), 1008 (protocol misuse, unknown avatar, bad parameter, text too long) or 1011
(the engine or the speech synthesis failed this session).
"""
from __future__ import annotations

import asyncio
import json
import logging

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

from ...errors import MuseTalkError
from ..engine.admission import ServerFull
from ..engine.engine import Engine
from ..engine.outbox import Event, Frame, Skip
from ..engine.session import Session, SessionError
from .control import Control, ProtocolError, Voice, session_params

log = logging.getLogger(__name__)

POLICY_VIOLATION = 1008
INTERNAL_ERROR = 1011
TRY_AGAIN_LATER = 1013
_REASON_BYTES = 123  # the WebSocket limit of a close reason


def register(app: FastAPI, store, engine: Engine, voice: Voice) -> None:
    """Serve ``store``'s avatars through ``engine`` on ``/ws/{name}``; ``say`` messages are spoken by ``voice``."""

    @app.websocket("/ws/{name}")
    async def stream(ws: WebSocket, name: str) -> None:
        await ws.accept()
        try:
            params = session_params(ws.query_params)
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
            await _serve_session(ws, Control(session, params.bargein, voice))
        finally:
            session.close()


async def _serve_session(ws: WebSocket, conn: Control) -> None:
    """Run the receiver and the sender until the last frame went out, the client left, or it erred."""
    session = conn.session
    receiver = asyncio.create_task(_receive(ws, conn))
    sender = asyncio.create_task(_send_frames(ws, session))

    def stop() -> None:  # before a refusal too: no frame slips in between the error and the close
        receiver.cancel()
        sender.cancel()
        conn.stop_saying()

    try:
        done, _ = await asyncio.wait({receiver, sender}, return_when=asyncio.FIRST_COMPLETED)
        if sender in done:
            sender.result()
            await ws.close()
        else:
            receiver.result()  # the receiver only ends by raising: the client left or broke the protocol
    except ProtocolError as exc:
        stop()
        await refuse(ws, str(exc), POLICY_VIOLATION)
    except SessionError as exc:
        stop()
        await refuse(ws, str(exc), INTERNAL_ERROR)
    except (WebSocketDisconnect, RuntimeError) as exc:
        log.info("session %d: client gone (%s)", session.id, exc.__class__.__name__)
    finally:
        stop()


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


async def _send_frames(ws: WebSocket, session: Session) -> None:
    """Frames as binary JPEG messages, skips and events as text, in index order; then (not live) ``done``."""
    while (item := await session.next_item()) is not None:
        await send_item(ws, item)
    if not session.live:
        await ws.send_text(json.dumps({"type": "done", "frames": session.sent + session.skipped,
                                       "skipped": session.skipped}))


async def send_item(ws: WebSocket, item: Frame | Skip | Event) -> None:
    if isinstance(item, Frame):
        await ws.send_bytes(item.jpeg)
    else:
        await ws.send_text(json.dumps(item.message()))


async def refuse(ws: WebSocket, message: str, code: int) -> None:
    """Tell the client what went wrong, then close with ``code`` and the same reason (if it is still there)."""
    line = " ".join(message.split())
    try:
        await ws.send_text(json.dumps({"type": "error", "message": line}))
        await ws.close(code=code, reason=line.encode()[:_REASON_BYTES].decode(errors="ignore"))
    except (WebSocketDisconnect, RuntimeError):
        log.debug("client gone before the error %r", line)
