"""Channels beside the browser sessions (``musetalk serve --publish NAME=AVATAR,URL``): started and stopped
with the application, driven through an inbox, counted in ``/metrics``.

- ``POST /channels/{name}/say``: JSON ``{"text": "..."}`` queued for the voice -> ``{"queued": position}``;
- ``POST /channels/{name}/audio``: the body is an audio file (wav, mp3, flac, ...) queued as it is;
- ``POST /channels/{name}/interrupt``: drop the item being spoken;
- ``GET /channels/{name}``: state, queue, uptime, frames, skips, reconnects (:meth:`Channel.status`);
  ``GET /channels``: all of them.

A bad request gets 400 with ``{"type": "error", "message"}`` and never stops the channel; an unknown
channel 404; an audio body over the limit 413. Token and Origin rules are the server's (its middleware).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import tempfile

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ....errors import MuseTalkError
from . import ChannelSpec, open_channel, run_channel
from .channel import Channel
from .targets import PublishError, parse_target

log = logging.getLogger(__name__)

MAX_AUDIO_MB = 50.0
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def parse_publish(value: str) -> tuple[str, str, str]:
    """A ``--publish`` value ``NAME=AVATAR,URL`` -> (name, avatar, url); :class:`PublishError` otherwise."""
    name, eq, rest = value.partition("=")
    avatar, comma, url = rest.partition(",")
    if not (eq and comma and _NAME.match(name) and avatar and url):
        raise PublishError(f"--publish must be NAME=AVATAR,URL (e.g. main=anna,rtmp://host/live/key; NAME of letters, "
                           f"digits, '_', '-', '.'), got {value!r}")
    parse_target(url)
    return name, avatar, url


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"type": "error", "message": message}, status)


def register_channels(app: FastAPI, store, engine, specs: list[ChannelSpec], voice) -> dict[str, Channel]:
    """Run a channel per spec while ``app`` runs (started in its lifespan, stopped at its end) and serve
    their inbox; ``voice``: awaitable giving the synthesizer. Returns the channels by name (filled at start)."""
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        twice = ", ".join(sorted(n for n in set(names) if names.count(n) > 1))
        raise PublishError(f"--publish names must differ: {twice} given twice")
    channels: dict[str, Channel] = {}
    tasks: list[asyncio.Task] = []
    previous = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(application):
        async with previous(application) as state:
            for spec in specs:
                avatar = await asyncio.to_thread(store.load, spec.avatar)
                channels[spec.name] = channel = open_channel(engine, avatar, spec, voice)
                tasks.append(asyncio.create_task(_keep(channel), name=f"channel-{spec.name}"))
            try:
                yield state
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    app.router.lifespan_context = lifespan

    def find(name: str) -> Channel | JSONResponse:
        channel = channels.get(name)
        return channel if channel is not None else _error(404, f"no channel named {name[:64]!r}: the channels "
                                                               f"are {', '.join(sorted(channels)) or 'none'}")

    @app.get("/channels")
    async def list_channels() -> list[dict]:
        return [channel.status() for channel in channels.values()]

    @app.get("/channels/{name}")
    async def channel_status(name: str):
        channel = find(name)
        return channel if isinstance(channel, JSONResponse) else channel.status()

    @app.post("/channels/{name}/say")
    async def say(name: str, request: Request):
        channel = find(name)
        if isinstance(channel, JSONResponse):
            return channel
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(400, 'the body must be JSON: {"text": "..."}')
        if not isinstance(body, dict) or not isinstance(body.get("text"), str):
            return _error(400, 'the body must be JSON with "text": a string, e.g. {"text": "Hello"}')
        try:
            return {"queued": channel.say(body["text"])}
        except MuseTalkError as exc:
            return _error(400, str(exc))

    @app.post("/channels/{name}/audio")
    async def audio(name: str, request: Request):
        channel = find(name)
        if isinstance(channel, JSONResponse):
            return channel
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > MAX_AUDIO_MB * 1e6:
                return _error(413, f"audio over {MAX_AUDIO_MB:g} MB: send a shorter file")
        if not data:
            return _error(400, "no audio: send the file as the request body (e.g. curl --data-binary @speech.wav)")
        try:
            samples = await asyncio.to_thread(_decode, bytes(data))
            return {"queued": channel.play(samples, f"upload of {len(data)} bytes")}
        except MuseTalkError as exc:
            return _error(400, str(exc))

    @app.post("/channels/{name}/interrupt")
    async def interrupt(name: str):
        channel = find(name)
        if isinstance(channel, JSONResponse):
            return channel
        channel.interrupt()
        return {"interrupted": True}

    return channels


def _decode(data: bytes):
    """An uploaded audio file -> float32 mono 16 kHz (:class:`~musetalk.errors.AudioError` when it is not audio)."""
    from ....audio.load import load_audio
    from ....errors import AudioError

    with tempfile.NamedTemporaryFile(suffix=".upload") as f:
        f.write(data)
        f.flush()
        try:
            return load_audio(f.name)
        except AudioError as exc:
            raise AudioError(str(exc).replace(f.name, "the uploaded file")) from None


async def _keep(channel: Channel) -> None:
    """Run a channel; one that ends on its own (its session failed) is logged, the server goes on."""
    try:
        await run_channel(channel)
        log.warning("channel %s ended", channel.name)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - a channel's end never stops the server
        channel.error = str(exc)
        log.error("channel %s stopped: %s", channel.name, exc)
