"""The WebSocket protocol of ``/ws/{avatar}`` (registered on the app by :func:`register`).

Query: ``lookahead=<seconds>`` (this session's audio look-ahead), ``live=1`` (a live session),
``bargein=1`` (live: a new utterance while one plays interrupts it). Client -> server: binary PCM s16le
16 kHz mono chunks of any size, then text ``{"type": "end"}``; live sessions also ``{"type": "interrupt"}``
and ``{"type": "close"}``. Server -> client: one binary JPEG per frame in index order,
``{"type": "skip", "index": i, "skipped": total}`` in place of a frame that missed its deadline; without
live=1 then ``{"type": "done", "frames": N, "skipped": K}`` and a normal close; live sessions stream from
the start (the avatar at rest between utterances), with ``{"type": "state", "state": "rest"|"speaking"}``
on every change and ``{"type": "utterance_done", "frames": N}`` after each utterance, until ``close``.

Every refusal is ``{"type": "error", "message": "<one line>"}`` then a close with the same reason and
code 1013 (server full), 1008 (protocol misuse, unknown avatar, bad parameter) or 1011 (the engine
failed this session).
"""
from __future__ import annotations

import asyncio
import json
import logging
import math

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

from ..errors import MuseTalkError
from .admission import ServerFull
from .engine import Engine
from .outbox import Event, Frame, Skip
from .session import Session, SessionError

log = logging.getLogger(__name__)

POLICY_VIOLATION = 1008
INTERNAL_ERROR = 1011
TRY_AGAIN_LATER = 1013
MAX_LOOKAHEAD_S = 2.0
_REASON_BYTES = 123  # the WebSocket limit of a close reason


class ProtocolError(MuseTalkError):
    """A WebSocket client sent something the protocol does not allow."""


def register(app: FastAPI, store, engine: Engine) -> None:
    """Serve ``store``'s avatars through ``engine`` on ``/ws/{name}``."""

    @app.websocket("/ws/{name}")
    async def stream(ws: WebSocket, name: str) -> None:
        await ws.accept()
        try:
            lookahead = _lookahead(ws.query_params.get("lookahead"))
            live, bargein = _flag(ws, "live"), _flag(ws, "bargein")
            avatar = await asyncio.to_thread(store.load, name)
            session = engine.open(avatar, loop=asyncio.get_running_loop(), lookahead_s=lookahead, live=live)
        except ServerFull as exc:
            await refuse(ws, str(exc), TRY_AGAIN_LATER)
            return
        except MuseTalkError as exc:
            await refuse(ws, str(exc), POLICY_VIOLATION)
            return
        try:
            await _serve_session(ws, session, bargein)
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


async def _serve_session(ws: WebSocket, session: Session, bargein: bool) -> None:
    """Run the receiver and the sender until the last frame went out, the client left, or it erred."""
    receiver = asyncio.create_task(_receive_audio(ws, session, bargein))
    sender = asyncio.create_task(_send_frames(ws, session))
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
        for task in (receiver, sender):
            task.cancel()


async def _receive_audio(ws: WebSocket, session: Session, bargein: bool) -> None:
    """Feed PCM chunks and apply control messages; ends only by raising (the client left or erred)."""
    carry = b""
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        try:
            if message.get("bytes") is not None:
                data = carry + message["bytes"]
                carry = data[len(data) // 2 * 2 :]
                if len(data) >= 2:
                    _feed(session, data[: len(data) // 2 * 2], bargein)
            elif message.get("text") is not None:
                _control(message["text"], session, carry)
        except SessionError as exc:
            if session.active:  # the client misused the session (a failed one is reported by the sender)
                raise ProtocolError(str(exc)) from None
            raise


def _feed(session: Session, pcm: bytes, bargein: bool) -> None:
    """Audio: continues the current utterance or (live) starts the next one, interrupting the one still
    playing when the client asked for barge-in."""
    if not session.live and session.frame_total is not None:
        raise ProtocolError("audio received after {\"type\": \"end\"}")
    if bargein and session.speaking and not session.utterance_open:
        session.interrupt()
    session.feed_pcm16(pcm)


def parse_message(text: str) -> dict:
    """A text message as a JSON object with a ``type``; :class:`ProtocolError` otherwise."""
    try:
        msg = json.loads(text)
    except ValueError:
        raise ProtocolError(f"text messages must be JSON, got {text[:40]!r}") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise ProtocolError(f"unknown message {text[:60]!r}: send PCM as binary and {{\"type\": \"end\"}} last")
    return msg


def _control(text: str, session: Session, carry: bytes) -> None:
    """Apply a text message: ``end`` (after whole samples); live sessions also ``interrupt`` and ``close``."""
    msg = parse_message(text)
    kind = msg["type"]
    if kind == "end":
        if carry:
            raise ProtocolError("the PCM ended inside a sample: s16le audio needs an even number of bytes")
        session.end()
    elif kind == "interrupt" and session.live:
        session.interrupt()
    elif kind == "close" and session.live:
        session.finish()
    else:
        allowed = "end, interrupt, close" if session.live else "end"
        raise ProtocolError(f"unknown message {text[:60]!r}: the text messages here are {allowed}")


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
