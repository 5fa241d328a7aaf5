"""HTTP + WebSocket server for real-time avatars (FastAPI; run with uvicorn, see ``musetalk serve``).

- ``GET /``: the browser page (static/index.html); ``GET /static/...``: its scripts.
- ``GET /health``: 200 ``{"status": "ok", "version", "device", "sessions", "avatars"}``.
- ``GET /avatars``: list of ``{"name", "fps", "width", "height", "num_frames", "faces", "source_name", "created"}``.
- ``GET /avatars/{name}/poster.jpg``: the avatar's first source frame (JPEG), for the page to show at once.
- ``POST /avatars`` (multipart: ``file`` video or photo, ``name``, optional ``max_frames``, ``replace``): the
  body is limited to ``--max-upload-mb`` (413 beyond, from Content-Length or while receiving) and spooled to
  disk; an existing avatar, or one being prepared, is replaced only with ``replace=true`` (409 otherwise); a
  malformed form, name or extension gets 400. Refusals are JSON ``{"type": "error", "message"}``. Accepted
  uploads are prepared in the background, one at a time (the store's lock); the reply streams the progress
  as NDJSON lines ``{"type": "progress", "stage", "done", "total"}``, then ``{"type": "done", "avatar": {...}}``
  or ``{"type": "error", "message"}`` (a failed replacement leaves the old avatar as it was). The
  preparation goes on if the client leaves.
- ``GET /avatars/{name}/status``: ``{"name", "state": "preparing" | "ready" | "failed"}`` plus the last
  ``stage``/``done``/``total``, the ``avatar`` or the ``message``; 404 for a name never uploaded nor prepared.
- Access (:mod:`musetalk.realtime.access`): with a token, everything but ``/``, ``/static/*`` and ``/health``
  needs ``?token=`` or ``Authorization: Bearer`` (401, or the ``error`` message and close 1008 on a
  WebSocket); WebSockets and POSTs from a foreign ``Origin`` get 403 / 1008.
- ``WS /ws/{avatar}``: client -> binary PCM s16le 16 kHz mono chunks of any size, then text
  ``{"type": "end"}``; server -> one binary JPEG per frame in order, then text ``{"type": "done", "frames": N}``.
  An unknown avatar or a malformed message gets text ``{"type": "error", "message"}`` and a close.
"""
from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from ..errors import MuseTalkError
from .access import AccessGuard, AccessPolicy
from .avatar import AvatarStore
from .avatar_routes import DEFAULT_MAX_UPLOAD_MB, avatar_router
from .engine import Engine, Session

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
POLICY_VIOLATION = 1008


class ProtocolError(MuseTalkError):
    """A WebSocket client sent something the protocol does not allow."""


def create_app(store: AvatarStore, engine: Engine, access: AccessPolicy = AccessPolicy(),
               max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB) -> FastAPI:
    """The application serving ``store``'s avatars through ``engine`` (which must encode JPEG), guarded by
    ``access`` (token, origins), taking uploads up to ``max_upload_mb``."""
    if not engine.jpeg_quality:
        raise MuseTalkError("the server sends JPEG frames: create the Engine with a jpeg_quality")
    app = FastAPI(title="MuseTalk real-time avatars")
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(AccessGuard, policy=access)
    app.include_router(avatar_router(store, max_upload_mb))

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "version": engine.mt.version, "device": str(engine.mt.device),
                "sessions": engine.sessions, "avatars": len(store.names())}

    @app.websocket("/ws/{name}")
    async def stream(ws: WebSocket, name: str) -> None:
        await ws.accept()
        try:
            avatar = await asyncio.to_thread(store.load, name)
            session = engine.open(avatar, loop=asyncio.get_running_loop())
        except MuseTalkError as exc:
            await _send_error(ws, str(exc))
            return
        try:
            await _serve_session(ws, session)
        finally:
            session.close()

    return app


async def _serve_session(ws: WebSocket, session: Session) -> None:
    """Run the receiver and the sender until the last frame went out, the client left, or it erred."""
    receiver = asyncio.create_task(_receive_audio(ws, session))
    sender = asyncio.create_task(_send_frames(ws, session))
    try:
        done, _ = await asyncio.wait({receiver, sender}, return_when=asyncio.FIRST_COMPLETED)
        if sender in done:
            sender.result()
            await ws.close()
        else:
            receiver.result()  # the receiver only ends by raising: the client left or broke the protocol
    except (ProtocolError, MuseTalkError) as exc:
        await _send_error(ws, str(exc))
    except (WebSocketDisconnect, RuntimeError) as exc:
        log.info("session %d: client gone (%s)", session.id, exc.__class__.__name__)
    finally:
        for task in (receiver, sender):
            task.cancel()


async def _receive_audio(ws: WebSocket, session: Session) -> None:
    """Feed PCM chunks to the session until ``{"type": "end"}``; then watch for the client leaving."""
    carry = b""
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        if message.get("bytes") is not None:
            if session.stream.finished:
                raise ProtocolError("audio received after {\"type\": \"end\"}")
            data = carry + message["bytes"]
            carry = data[len(data) // 2 * 2 :]
            if len(data) >= 2:
                session.feed_pcm16(data[: len(data) // 2 * 2])
        elif message.get("text") is not None:
            _control(message["text"], session)


def _control(text: str, session: Session) -> None:
    """Apply a text message: only ``{"type": "end"}`` (once) is allowed."""
    try:
        msg = json.loads(text)
    except ValueError:
        raise ProtocolError(f"text messages must be JSON, got {text[:40]!r}") from None
    if not isinstance(msg, dict) or msg.get("type") != "end":
        raise ProtocolError(f"unknown message {text[:60]!r}: send PCM as binary and {{\"type\": \"end\"}} last")
    if session.stream.finished:
        raise ProtocolError("{\"type\": \"end\"} sent twice")
    session.end()


async def _send_frames(ws: WebSocket, session: Session) -> None:
    """Each frame as one binary JPEG message, in order, then ``{"type": "done", "frames": N}``."""
    count = 0
    while (frame := await session.next_frame()) is not None:
        await ws.send_bytes(frame.jpeg)
        count += 1
    await ws.send_text(json.dumps({"type": "done", "frames": count}))


async def _send_error(ws: WebSocket, message: str) -> None:
    """Tell the client what went wrong and close (if it is still there)."""
    try:
        await ws.send_text(json.dumps({"type": "error", "message": message}))
        await ws.close(code=POLICY_VIOLATION)
    except (WebSocketDisconnect, RuntimeError):
        log.debug("client gone before the error %r", message)
