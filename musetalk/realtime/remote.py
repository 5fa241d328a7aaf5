"""A live session on a remote ``musetalk serve``: the client side of ``/ws/{avatar}?live=1`` (:mod:`.outputs.ws`).

    session = await RemoteSession.connect("http://gpu-box:8000", "anna", token="...")
    session.feed(samples_16k); ...; await session.end()        # one utterance
    async for item in session.items(): ...                       # MediaFrame (with its audio) or Event

The server sends JPEG frames and JSON events in index order, each frame at its due time on the session's
media clock; this client gives them back as :class:`~.media.MediaFrame` s carrying the speech this client
sent for them (utterance sample n plays in utterance frame floor(n x fps / 16000), as on the server), so
the audio is delayed exactly as the pictures. A refusal (server full, unknown avatar, bad token) raises
:class:`RemoteError` with the server's one-line message.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from dataclasses import dataclass
from typing import AsyncIterator

import numpy as np

from ..audio.pcm import to_pcm16
from ..errors import MuseTalkError
from ..speech.synth import SAMPLE_RATE
from ..video.jpeg import decode_jpeg
from .engine.clock import frame_sample, frame_span
from .engine.outbox import Event
from .media import MediaFrame

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
MAX_AHEAD_S = 20.0  # speech sent but not played yet, at most (under the server's --max-audio-ahead-s, 30 s)


class RemoteError(MuseTalkError):
    """The remote server refused, could not be reached, or went away."""


@dataclass(frozen=True)
class RemoteAvatar:
    """What ``GET /avatars`` says of one avatar: ``fps``, picture ``width`` x ``height``."""

    name: str
    fps: float
    width: int
    height: int


def _http_get(url: str, token: str | None) -> object:
    """GET ``url`` (with the bearer ``token``) as JSON; :class:`RemoteError` in one line otherwise."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=CONNECT_TIMEOUT_S) as reply:
            return json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        raise RemoteError(f"the musetalk server refused {url} ({exc.code}): {_reason(exc.read())}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RemoteError(f"cannot reach the musetalk server at {url}: {reason}; is `musetalk serve` running "
                          f"there?") from None


def _reason(body: bytes) -> str:
    """The ``message`` of a JSON refusal, else the body's first 200 characters."""
    try:
        return str(json.loads(body)["message"])
    except (ValueError, KeyError, TypeError):
        return body.decode(errors="replace")[:200]


def find_avatar(server: str, name: str, token: str | None) -> RemoteAvatar:
    """The avatar ``name`` of ``server`` (blocking HTTP); :class:`RemoteError` when it has none by that name."""
    listing = _http_get(f"{server.rstrip('/')}/avatars", token)
    for info in listing:
        if info.get("name") == name:
            return RemoteAvatar(name, float(info["fps"]), int(info["width"]), int(info["height"]))
    names = ", ".join(sorted(i.get("name", "?") for i in listing)) or "none"
    raise RemoteError(f"the musetalk server {server} has no avatar {name!r} (it has: {names}); prepare it there "
                      f"with `musetalk avatar prepare` or upload it")


def ws_url(server: str, name: str, token: str | None) -> str:
    """The live-session WebSocket URL of avatar ``name`` on ``server`` (http(s)://host:port)."""
    parts = urllib.parse.urlsplit(server.rstrip("/"))
    if parts.scheme not in ("http", "https"):
        raise RemoteError(f"server must be an http:// or https:// URL, got {server!r}")
    query = {"live": "1", **({"token": token} if token else {})}
    return urllib.parse.urlunsplit(("wss" if parts.scheme == "https" else "ws", parts.netloc,
                                    f"{parts.path}/ws/{urllib.parse.quote(name)}", urllib.parse.urlencode(query), ""))


class _Buffer:
    """One utterance's 16 kHz samples as they are sent (it may play while it grows)."""

    def __init__(self) -> None:
        self._flat = np.zeros(0, np.float32)
        self._parts: list[np.ndarray] = []

    def extend(self, samples: np.ndarray) -> None:
        self._parts.append(samples)

    @property
    def total(self) -> int:
        return self._flat.size + sum(p.size for p in self._parts)

    def span(self, start: int, stop: int) -> np.ndarray:
        """float32 (stop - start,): samples [start, stop), zeros beyond what was sent."""
        if stop > self._flat.size and self._parts:
            self._flat = np.concatenate([self._flat, *self._parts])
            self._parts.clear()
        out = np.zeros(stop - start, np.float32)
        chunk = self._flat[start:stop]
        out[: chunk.size] = chunk
        return out


class _SentSpeech:
    """The speech this client sent, one buffer per utterance, matched to the server's utterances in order
    (each starts at a ``speaking`` state event and ends at its ``utterance_done``)."""

    def __init__(self, fps: float) -> None:
        self.fps = fps
        self.waiting: deque[_Buffer] = deque()  # sent, not started on the server yet
        self.feeding: _Buffer | None = None  # the utterance being sent (waiting or playing)
        self.playing: _Buffer | None = None
        self.first: int | None = None  # the session frame the playing utterance started at
        self.ended = False  # the playing utterance's frames are out: only its tail is left
        self.played = 0  # samples of the playing utterance out so far

    def feed(self, samples: np.ndarray) -> None:
        if self.feeding is None:
            self.feeding = _Buffer()
            self.waiting.append(self.feeding)
        self.feeding.extend(samples)

    def end(self) -> None:
        self.feeding = None

    def started(self) -> None:
        """The server started its next utterance."""
        self.playing = self.waiting.popleft() if self.waiting else _Buffer()
        self.first = None
        self.ended = False
        self.played = 0

    def done(self) -> None:
        """The server's utterance has all its frames out; what is left of its audio (less than a frame)
        plays in the next frame's slot, as on the server's timeline."""
        self.ended = True

    def drop(self) -> None:
        """An interruption: nothing sent so far plays any more."""
        self.waiting.clear()
        self.feeding = self.playing = None
        self.ended = False

    def frame_audio(self, index: int) -> np.ndarray:
        """float32 (n,) 16 kHz: the samples of frame ``index``'s slot on the session's timeline (zeros at
        rest); the playing utterance's sample 0 lies at the start of its first frame."""
        start, stop = frame_span(index, self.fps, SAMPLE_RATE)
        if self.playing is None:
            return np.zeros(stop - start, np.float32)
        if self.first is None:
            self.first = index
        origin = frame_sample(self.first, self.fps, SAMPLE_RATE)
        audio = self.playing.span(start - origin, stop - origin)
        self.played = stop - origin
        if self.ended:
            self.playing, self.ended = None, False
        return audio

    @property
    def speaking(self) -> bool:
        return self.playing is not None and not self.ended

    def unplayed_s(self) -> float:
        """Seconds of speech sent whose frames have not come back yet."""
        playing = max(0, self.playing.total - self.played) if self.playing is not None else 0
        return (playing + sum(b.total for b in self.waiting)) / SAMPLE_RATE


class RemoteSession:
    """One live session on a remote server (use :meth:`connect`). Feed, end and interrupt from the event
    loop that reads :meth:`items`."""

    def __init__(self, ws, avatar: RemoteAvatar, server: str) -> None:
        self._ws = ws
        self.avatar = avatar
        self.server = server
        self._speech = _SentSpeech(avatar.fps)
        self._pcm: deque[bytes] = deque()
        self._index = 0
        self._image: np.ndarray | None = None
        self._closed = False

    @property
    def fps(self) -> float:
        return self.avatar.fps

    @classmethod
    async def connect(cls, server: str, name: str, token: str | None = None) -> "RemoteSession":
        """Open a live session on avatar ``name`` of ``server``; :class:`RemoteError` in one line on refusal."""
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidHandshake, InvalidURI

        avatar = await asyncio.to_thread(find_avatar, server, name, token)
        url = ws_url(server, name, token)
        try:
            ws = await asyncio.wait_for(connect(url, max_size=None), CONNECT_TIMEOUT_S)
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
            raise RemoteError(f"cannot open a live session on {server} for avatar {name!r}: {exc}") from None
        log.info("live session on %s, avatar %s (%g fps)", server, name, avatar.fps)
        return cls(ws, avatar, server)

    async def feed(self, samples: np.ndarray) -> None:
        """float32 (N,) mono 16 kHz in [-1, 1]: the current utterance goes on (or the next one starts). Waits
        while more than ``MAX_AHEAD_S`` of speech would be ahead of the frames received (the server refuses
        audio too far ahead of its clock; a TTS runs faster than real time)."""
        if (excess := self._speech.unplayed_s() + len(samples) / SAMPLE_RATE - MAX_AHEAD_S) > 0:
            await asyncio.sleep(excess)
        self._speech.feed(samples)
        pcm = to_pcm16(samples).tobytes()
        await self._send(pcm)

    async def end(self) -> None:
        """The current utterance is complete."""
        self._speech.end()
        await self._send(json.dumps({"type": "end"}))

    async def interrupt(self) -> None:
        """Drop the rest of the speech (its audio at once; the server returns to rest)."""
        self._speech.drop()
        await self._send(json.dumps({"type": "interrupt"}))

    async def close(self) -> None:
        """End the session (``close``), then the connection."""
        if self._closed:
            return
        self._closed = True
        from websockets.exceptions import ConnectionClosed

        try:
            await self._ws.send(json.dumps({"type": "close"}))
        except ConnectionClosed:
            pass  # already gone: nothing to end
        await self._ws.close()

    async def _send(self, message: bytes | str) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            await self._ws.send(message)
        except ConnectionClosed as exc:
            raise RemoteError(f"the musetalk server {self.server} closed the session: {exc}") from None

    async def items(self) -> AsyncIterator[MediaFrame | Event]:
        """The session's frames (with their audio) and events, in order, as they arrive; ends when the
        server closes normally; raises :class:`RemoteError` on a refusal or a lost connection."""
        from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

        try:
            async for message in self._ws:
                if isinstance(message, bytes):
                    yield self._frame(decode_jpeg(message), repeated=False)
                    continue
                payload = json.loads(message)
                kind = payload.get("type")
                if kind == "skip" and self._image is not None:
                    yield self._frame(self._image, repeated=True)
                elif kind == "error":
                    raise RemoteError(f"the musetalk server {self.server} refused: {payload.get('message')}")
                else:
                    if kind == "state" and payload.get("state") == "speaking":
                        self._speech.started()
                    elif kind == "utterance_done":
                        self._speech.done()
                    yield Event(payload)
        except ConnectionClosedOK:
            return
        except ConnectionClosed as exc:
            if self._closed:
                return
            raise RemoteError(f"lost the musetalk server {self.server}: {exc}") from None

    def _frame(self, image: np.ndarray, repeated: bool) -> MediaFrame:
        self._image = image
        speech = self._speech.speaking
        frame = MediaFrame(index=self._index, image=image, audio=self._speech.frame_audio(self._index), speech=speech,
                           repeated=repeated, playout_at=time.perf_counter())
        self._index += 1
        return frame
